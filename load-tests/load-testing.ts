/**
 * What the load-testing tools cost and how true they are (docs/load-testing.md), in one run:
 *
 *   1. mirroring: the main path's p99 at a constant rate (replay's open model) with every request
 *      mirrored to a shadow that never answers, against the same proxy without mirroring, rounds
 *      interleaved;
 *   2. replay: the rate `switchyard replay --rate N` achieves against the one asked for, on a
 *      recording switchyard made.
 *
 * The third figure, CPU per request with no fault configured against the build before faults
 * existed, is peers.sh's (docs/performance.md gives the command).
 *
 *   npm run build && node dist/load-tests/load-testing.js [--rounds 3] [--duration 10] [--rate 2000]
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { replay } from '../src/replay/replay';
import { forkUpstream, runAutocannon, startProxy } from './procs';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '10' },
      rate: { type: 'string', default: '2000' },
    },
  });
  const rounds = Number(values.rounds);
  const duration = Number(values.duration);
  const rate = Number(values.rate);
  const dir = mkdtempSync(join(tmpdir(), 'swy-load-testing-'));
  const upstream = await forkUpstream();
  const up = `http://127.0.0.1:${upstream.port}`;
  // The shadow: accepts, reads, never answers.
  const held: net.Socket[] = [];
  const blackHole = net.createServer((s) => {
    held.push(s);
    s.resume();
  });
  await new Promise<void>((r) => blackHole.listen(0, '127.0.0.1', r));
  const shadow = `http://127.0.0.1:${(blackHole.address() as net.AddressInfo).port}`;
  // A second upstream process as a shadow that answers: the whole copy path, not only its drops.
  const answering = await forkUpstream();
  const pools = `pools:\n  default: { members: [{ url: ${up} }] }\n  shadow: { members: [{ url: ${shadow} }] }\n  answering: { members: [{ url: http://127.0.0.1:${answering.port} }] }\n`;
  const plain = join(dir, 'plain.yaml');
  const mirrored = join(dir, 'mirrored.yaml');
  const recording = join(dir, 'record.yaml');
  const copied = join(dir, 'copied.yaml');
  writeFileSync(
    copied,
    `${pools}routes:\n  - pool: default\n    mirror: { pool: answering, percent: 100, compare: {} }\naccessLog: { enabled: false }\n`,
  );
  writeFileSync(plain, `${pools}routes:\n  - pool: default\naccessLog: { enabled: false }\n`);
  writeFileSync(
    mirrored,
    `${pools}routes:\n  - pool: default\n    mirror: { pool: shadow, percent: 100 }\naccessLog: { enabled: false }\n`,
  );
  writeFileSync(
    recording,
    `${pools}routes:\n  - name: small\n    pool: default\n    record: { file: ${join(dir, 'traffic.jsonl')} }\naccessLog: { enabled: false }\n`,
  );
  const procs = [upstream.child, answering.child];
  try {
    // A recording switchyard made: 500 /small exchanges, the load of both figures.
    const c = await startProxy(upstream.port, 1, ['--config', recording]);
    procs.push(c.child);
    await runAutocannon(`http://127.0.0.1:${c.port}/small`, { connections: 4, amount: 500 }, 10);
    c.child.kill('SIGTERM');
    await new Promise((r) => c.child.once('exit', r));
    // 1. mirroring to a black hole, against none, under the same open-model load (replay's: sent
    //    on schedule whatever the answers, latency from the intended start).
    const a = await startProxy(upstream.port, 1, ['--config', plain]);
    const b = await startProxy(upstream.port, 1, ['--config', mirrored]);
    const d = await startProxy(upstream.port, 1, ['--config', copied]);
    procs.push(a.child, b.child, d.child);
    const names = ['no mirror', 'mirror 100% to a black hole', 'mirror 100% to a shadow, compared'] as const;
    const p99: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
    const served: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
    for (let i = 0; i < rounds; i++) {
      for (const [name, port] of [
        [names[0], a.port],
        [names[1], b.port],
        [names[2], d.port],
      ] as const) {
        const r = await replay({
          files: [join(dir, 'traffic.1.jsonl')],
          target: `http://127.0.0.1:${port}`,
          rate,
          duration,
          connections: 50,
          timeout: 10,
        });
        if (r.total.errors > 0 || r.total.non2xx > 0)
          throw new Error(`${name}: ${r.total.errors} errors, ${r.total.non2xx} non-2xx`);
        p99[name].push(r.total.p99);
        served[name].push(r.total.rps);
      }
    }
    const base = median(p99[names[0]]);
    console.log(
      `\nmirroring: /small at ${rate} req/s (open model), ${duration} s, median of ${rounds} rounds (one worker)\n`,
    );
    console.log(
      table([
        ['main path', 'req/s', 'p99 ms (each round)', 'p99 ms (median)', 'vs no mirror'],
        ...names.map((name) => [
          name,
          median(served[name]).toFixed(0),
          p99[name].map((x) => x.toFixed(2)).join(', '),
          median(p99[name]).toFixed(2),
          `${(median(p99[name]) / base).toFixed(2)}x`,
        ]),
      ]),
    );

    // 2. replay accuracy.
    const rows: string[][] = [['asked req/s', 'achieved req/s', 'off by', 'p50 ms', 'p99 ms', 'errors']];
    for (const asked of [500, 2000, 5000]) {
      const r = await replay({
        files: [join(dir, 'traffic.1.jsonl')],
        target: `${up}`,
        rate: asked,
        duration,
        connections: 50,
        timeout: 10,
      });
      rows.push([
        String(asked),
        r.achievedRate.toFixed(1),
        `${(((r.achievedRate - asked) / asked) * 100).toFixed(2)}%`,
        r.total.p50.toFixed(2),
        r.total.p99.toFixed(2),
        String(r.total.errors),
      ]);
    }
    console.log(`\nreplay --rate: a recording of ${500} /small exchanges, looped for ${duration} s, 50 connections\n`);
    console.log(table(rows));
  } finally {
    for (const s of held) s.destroy();
    blackHole.close();
    for (const p of procs) p.kill('SIGTERM');
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  },
);
