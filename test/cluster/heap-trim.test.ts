import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { delay, httpUpstream, onCleanup, request, startCli, waitFor } from '../support/helpers';

const NEW_SPACE = 'nodejs_heap_space_size_total_bytes{space="new"}';

function newSpaceBytes(metrics: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`${NEW_SPACE} `));
  assert.ok(line, `no ${NEW_SPACE} in /metrics`);
  return Number(line.slice(NEW_SPACE.length + 1));
}

/** Opens `count` keep-alive connections, each with one answered request, and keeps them open. */
async function openIdle(port: number, count: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  onCleanup(() => {
    for (const s of sockets) s.destroy();
  });
  for (let i = 0; i < count; i += 250) {
    await Promise.all(
      Array.from(
        { length: Math.min(250, count - i) },
        () =>
          new Promise<void>((ok, fail) => {
            const s = net.connect(port, '127.0.0.1');
            sockets.push(s);
            s.once('error', fail);
            s.write('GET / HTTP/1.1\r\nHost: t\r\n\r\n');
            s.once('data', () => ok());
          }),
      ),
    );
  }
  return sockets;
}

describe('idle heap trim (the CLI as a real cluster)', function () {
  this.timeout(60_000);

  it('gives back the young generation a burst grew once the worker goes idle, connections still open', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    // Idle connections must outlive the wait: the default keep-alive timeout is 5 s.
    const config = join(mkdtempSync(join(tmpdir(), 'swy-trim-')), 'switchyard.yaml');
    writeFileSync(
      config,
      `upstreams:\n  - url: ${up.url}\nserver:\n  keepAliveTimeout: 120000\nlog:\n  level: debug\n`,
    );
    // V8's own memory reducer may shrink new space first (15–30 s after a burst in the runs
    // measured), and then there is nothing left to trim: switched off, only the trim can.
    const cli = await startCli(['--config', config, '--workers', '1', '--admin', '127.0.0.1:0'], {}, [
      '--no-memory-reducer',
    ]);
    const admin = `http://${String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin)}`;
    const metrics = async (): Promise<string> => (await request(`${admin}/metrics`)).body.toString();
    const atStart = newSpaceBytes(await metrics());

    // A burst of connections whose objects survive scavenges is what makes V8 grow new space.
    const sockets = await openIdle(cli.port, 4000);
    const grown = newSpaceBytes(await metrics());
    assert.ok(grown > 4 * 1024 * 1024, `the burst grew new space past 4 MiB (from ${atStart} to ${grown} bytes)`);

    // Nothing more is sent: the worker goes idle, and within two 5 s looks runs one collection.
    // A deadline inside mocha's, so that a miss says what new space was instead of timing out.
    const line = await Promise.race([
      waitFor(() => cli.logs.find((l) => l.msg === 'idle: young generation trimmed')),
      delay(45_000).then(async () =>
        assert.fail(`no trim within 45 s; new space is now ${newSpaceBytes(await metrics())} bytes`),
      ),
    ]);
    const before = Number(line.newSpaceBefore);
    const after = Number(line.newSpaceAfter);
    assert.ok(before > 4 * 1024 * 1024 && after <= 4 * 1024 * 1024, `new space ${before} -> ${after} bytes`);
    const trimmed = newSpaceBytes(await metrics());
    assert.ok(trimmed <= 4 * 1024 * 1024, `new space stays trimmed while idle (${trimmed} bytes)`);
    // Still serving, on a connection opened before the trim.
    const live = sockets.find((s) => !s.destroyed);
    assert.ok(live, 'connections are still open');
    const answer = await new Promise<string>((ok) => {
      live.once('data', (d: Buffer) => ok(d.toString()));
      live.write('GET /again HTTP/1.1\r\nHost: t\r\n\r\n');
    });
    assert.match(answer, /^HTTP\/1\.1 200 /);
  });
});
