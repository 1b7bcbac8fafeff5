/**
 * The operator's first hour (issue 26): stopping, log files that cannot be written, readable log
 * lines, listeners that cannot open, configs that are large, hostile or empty, and readiness
 * during a reload. Each over real processes and sockets.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { ConfigSchema } from '../../src/config/schema';
import { ConfigError } from '../../src/errors';
import {
  CLI,
  ROOT,
  closedPort,
  configFile,
  delay,
  httpUpstream,
  onCleanup,
  rawExchange,
  request,
  startCli,
  startProxy,
  waitFor,
} from '../support/helpers';

function check(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, 'check', ...args], { encoding: 'utf8' });
}

async function freePortTaken(): Promise<{ address: string; close: () => void }> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  return { address: `127.0.0.1:${(s.address() as net.AddressInfo).port}`, close: () => s.close() };
}

describe("the operator's first hour", function () {
  this.timeout(30_000);

  it('Ctrl-C (SIGINT to the whole process group) drains once and every process exits 0', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-sigint-'));
    const cli = await startCli(
      [
        '--upstream',
        up.url,
        '--workers',
        '2',
        '--config',
        configFile(`upstreams: [{ url: "${up.url}" }]\naccessLog:\n  file: ${join(dir, 'access.log')}\n`),
      ],
      {},
      [],
      { detached: true },
    );
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 200);
    process.kill(-cli.child.pid!, 'SIGINT');
    const exit = await cli.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.deepEqual(
      cli.logs.filter((l) => l.level === 'fatal' || l.level === 'error'),
      [],
    );
    const exits = cli.logs.filter((l) => l.msg === 'worker exited');
    assert.equal(exits.length, 2);
    for (const e of exits) assert.equal(e.code, 0);
    assert.equal(cli.logs.filter((l) => l.event === 'draining').length, 2, 'one drain per worker');
  });

  describe('an access log file that cannot be written', () => {
    it('fails `check` and startup with exit 2, naming accessLog.file and the OS error', () => {
      const dir = mkdtempSync(join(tmpdir(), 'swy-log-'));
      writeFileSync(join(dir, 'not-a-dir'), 'x');
      for (const [file, error] of [
        [dir, /EISDIR/],
        [join(dir, 'not-a-dir', 'access.log'), /ENOTDIR/],
      ] as const) {
        const config = configFile(`upstreams: [{ url: "http://127.0.0.1:3000" }]\naccessLog:\n  file: ${file}\n`);
        const r = check('--config', config);
        assert.equal(r.status, 2);
        assert.match(r.stderr, /accessLog\.file: got ".*"; expected a file switchyard can append to/);
        assert.match(r.stderr, error);
        const run = spawnSync(process.execPath, [CLI, '--config', config, '--listen', '127.0.0.1:0'], {
          encoding: 'utf8',
          timeout: 20_000,
        });
        assert.equal(run.status, 2);
        assert.match(run.stderr, /accessLog\.file/);
      }
    });

    it('a write failing while running is counted and logged once, and the worker keeps serving', async function () {
      const up = await httpUpstream((_req, res) => res.end('ok'));
      const cli = await startCli([
        '--config',
        configFile(`upstreams: [{ url: "${up.url}" }]\nworkers: 1\naccessLog:\n  file: /dev/full\n`),
        '--admin',
        '127.0.0.1:0',
      ]);
      const url = `http://127.0.0.1:${cli.port}/`;
      for (let i = 0; i < 20; i++) assert.equal((await request(url)).status, 200);
      const admin = String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin);
      const errors = await waitFor(async () => {
        const m = /switchyard_access_log_errors_total (\d+)/.exec(
          (await request(`http://${admin}/metrics`)).body.toString(),
        );
        return m !== null && Number(m[1]) > 0 ? Number(m[1]) : null;
      });
      assert.ok(errors > 0);
      for (let i = 0; i < 20; i++) assert.equal((await request(url)).status, 200);
      await delay(1200);
      const lines = cli.logs.filter((l) => l.event === 'access-log-error');
      assert.equal(lines.length, 1);
      assert.equal((lines[0].err as { code: string }).code, 'ENOSPC');
      assert.equal(cli.workerPids().length, 1);
      assert.equal(cli.logs.filter((l) => l.event === 'worker-died').length, 0);
    });
  });

  it("a failed request's log line has one msg, and the cause in err (code and message)", async () => {
    const port = await closedPort();
    const cli = await startCli(['--upstream', `http://127.0.0.1:${port}`, '--workers', '1']);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 502);
    const line = await waitFor(() => cli.lines.find((l) => l.includes('"request failed"')));
    assert.equal(line.match(/"msg":/g)!.length, 1, line);
    const parsed = JSON.parse(line) as { err: { code: string; message: string }; msg: string };
    assert.equal(parsed.msg, 'request failed');
    assert.equal(parsed.err.code, 'ECONNREFUSED');
    assert.match(parsed.err.message, /ECONNREFUSED/);
  });

  it('during an outage, failed requests are logged a line a second per upstream, with a count', async () => {
    const port = await closedPort();
    const cli = await startCli(['--upstream', `http://127.0.0.1:${port}`, '--workers', '1']);
    const results = await Promise.all(Array.from({ length: 200 }, () => request(`http://127.0.0.1:${cli.port}/`)));
    assert.ok(results.every((r) => r.status === 502));
    await delay(1100);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 502);
    const lines = await waitFor(() => {
      const l = cli.logs.filter((x) => x.msg === 'request failed');
      return l.length >= 2 ? l : null;
    });
    assert.ok(lines.length < 20, `${lines.length} lines for 201 failures`);
    assert.ok(lines.some((l) => Number(l.alsoSinceLastLine) > 0));
  });

  it('answers to slow clients (408) and broken requests (400) reach the access log', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli([
      '--config',
      configFile(`upstreams: [{ url: "${up.url}" }]\nworkers: 1\nserver:\n  headersTimeout: 200\n`),
    ]);
    const slow = await rawExchange(cli.port, 'GET / HTTP/1.1\r\nHost: a\r\n');
    assert.match(slow, /^HTTP\/1\.1 408 /);
    assert.match(slow, /SWY_ERR_REQUEST_TIMEOUT/);
    assert.match(await rawExchange(cli.port, 'GET /x\r\n'), /^HTTP\/1\.1 400 /);
    await waitFor(() => cli.logs.some((l) => l.status === 408 && l.error === 'SWY_ERR_REQUEST_TIMEOUT'));
    await waitFor(() => cli.logs.some((l) => l.status === 400 && l.error === 'SWY_ERR_BAD_REQUEST'));
  });

  it('a taken admin port: one line naming admin.listen and the address, exit 2', async () => {
    const taken = await freePortTaken();
    try {
      const r = spawnSync(
        process.execPath,
        [CLI, '--upstream', 'http://127.0.0.1:3000', '--listen', '127.0.0.1:0', '--admin', taken.address],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(r.status, 2);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(
        lines[0],
        new RegExp(`^switchyard: admin\\.listen: cannot listen on ${taken.address}: .*EADDRINUSE`),
      );
    } finally {
      taken.close();
    }
  });

  describe('configs that are large, hostile or empty', () => {
    it('loads 20,000 routes, and routes by them', async () => {
      const up = await httpUpstream((req, res) => res.end(String(req.headers['x-forwarded-host'])));
      let text = `pools:\n  app:\n    members: [{ url: "${up.url}" }]\nroutes:\n`;
      for (let i = 0; i < 20_000; i++) text += `  - match: { host: site${i}.example.com }\n    pool: app\n`;
      const config = loadConfig(configFile(text));
      assert.equal(config.routes.length, 20_000);
      const proxy = await startProxy({ pools: config.pools, routes: config.routes });
      assert.equal(
        (await request(proxy.url, { headers: { host: 'site19999.example.com' } })).body.toString(),
        'site19999.example.com',
      );
      assert.equal((await request(proxy.url, { headers: { host: 'nope.example.com' } })).status, 404);
    });

    it('takes 150 routes sharing one anchor, and refuses an alias bomb with a config error', () => {
      let text =
        'pools:\n  app:\n    members: [{ url: "http://127.0.0.1:3000" }]\nx-common: &common { pool: app }\nroutes:\n';
      for (let i = 0; i < 150; i++) text += '  - *common\n';
      // x-common is not a key of the schema: refused as such, after the anchors were expanded.
      assert.throws(() => loadConfig(configFile(text)), /x-common: unknown key/);
      const routes = text
        .replace('x-common: &common { pool: app }\n', '')
        .replace('routes:\n  - *common', 'routes:\n  - &common { pool: app }');
      assert.equal(loadConfig(configFile(routes)).routes.length, 150);
      let bomb = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n';
      for (const [name, prev] of [
        ['b', 'a'],
        ['c', 'b'],
        ['d', 'c'],
        ['e', 'd'],
        ['f', 'e'],
        ['g', 'f'],
        ['h', 'g'],
        ['i', 'h'],
      ]) {
        bomb += `${name}: &${name} [${Array(10).fill(`*${prev}`).join(',')}]\n`;
      }
      const file = configFile(bomb);
      assert.throws(
        () => loadConfig(file),
        (err: unknown) => err instanceof ConfigError && /alias/.test(err.message),
      );
      const r = check('--config', file);
      assert.equal(r.status, 2);
      assert.equal(r.stderr.split('\n').filter((l) => /^\s+at /.test(l)).length, 0, 'no stack trace');
    });

    it('cuts an echoed value to a readable length, and refuses a file over 16 MiB unread', () => {
      const huge = configFile(`listen: "${'x'.repeat(1_000_000)}"\n`);
      const r = check('--config', huge);
      assert.equal(r.status, 2);
      assert.ok(r.stderr.length < 2000, `${r.stderr.length} characters of error`);
      assert.match(r.stderr, /listen: got "x+… \(1000002 characters\)/);
      const dir = mkdtempSync(join(tmpdir(), 'swy-big-'));
      writeFileSync(join(dir, 'big.yaml'), Buffer.alloc(17 * 1024 * 1024, 0x20));
      const big = check('--config', join(dir, 'big.yaml'));
      assert.equal(big.status, 2);
      assert.match(big.stderr, /expected at most 16777216/);
    });

    it('refuses an empty config file, and one without upstreams, instead of serving the demo origin', () => {
      const empty = check('--config', configFile(''));
      assert.equal(empty.status, 2);
      assert.match(empty.stderr, /is empty; expected a mapping of keys/);
      const none = check('--config', configFile('workers: 1\n'));
      assert.equal(none.status, 2);
      assert.match(none.stderr, /upstreams: got nothing/);
      assert.equal(check('--config', configFile('workers: 1\n'), '--upstream', 'http://127.0.0.1:3000').status, 0);
    });

    it('switchyard.example.yaml shows every default as the schema has it', () => {
      const example = loadConfig(join(ROOT, 'switchyard.example.yaml'));
      const defaults = ConfigSchema.parse({}) as unknown as Record<string, unknown>;
      const compare = (got: unknown, want: unknown, path: string): void => {
        if (want !== null && typeof want === 'object' && !Array.isArray(want)) {
          for (const [k, v] of Object.entries(want))
            compare((got as Record<string, unknown>)[k], v, path === '' ? k : `${path}.${k}`);
          return;
        }
        assert.deepEqual(got, want, `switchyard.example.yaml: ${path}`);
      };
      for (const [key, value] of Object.entries(defaults))
        compare((example as unknown as Record<string, unknown>)[key], value, key);
    });
  });

  it('/readyz stays 200 through a reload: every slot has a listening worker, old or new', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const file = configFile(`upstreams: [{ url: "${up.url}" }]\nworkers: 2\n`);
    const cli = await startCli(['--config', file, '--admin', '127.0.0.1:0']);
    const admin = String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin);
    const seen = new Set<number>();
    let done = false;
    const poll = (async () => {
      while (!done) {
        seen.add((await request(`http://${admin}/readyz`)).status);
        await delay(5);
      }
    })();
    cli.child.kill('SIGHUP');
    await waitFor(() => cli.logs.some((l) => l.event === 'reload-complete'));
    done = true;
    await poll;
    assert.deepEqual([...seen], [200]);
  });
});

describe('log lines an operator can read', function () {
  this.timeout(30_000);

  it('log.format pretty: one readable line each, process and access lines in one time format', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const file = configFile(
      `upstreams: [{ url: "${up.url}" }]\nworkers: 1\nlisten: 127.0.0.1:0\nlog:\n  format: pretty\n`,
    );
    const child = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    onCleanup(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const listening = await waitFor(() => /switchyard listening on [^\n]*"listen":"127\.0\.0\.1:(\d+)"/.exec(out));
    const port = Number(listening[1]);
    assert.equal((await request(`http://127.0.0.1:${port}/hello`)).status, 200);
    // Colour codes around the fields; compared without them.
    const ESC = '\u001b';
    const plain = (): string[] => out.replace(new RegExp(`${ESC}\\[[0-9;]*m`, 'g'), '').split('\n');
    assert.match(out, new RegExp(`${ESC}\\[3\\dm`));
    const access = await waitFor(() => plain().find((l) => l.includes('GET /hello')));
    const time = /^\[\d\d:\d\d:\d\d\.\d{3}\] /;
    assert.match(access, time);
    assert.match(access, /INFO: \[worker 1\] GET \/hello → 200 2 B [\d.]+ ms ← http:\/\/127\.0\.0\.1:\d+/);
    const started = plain().find((l) => l.includes('switchyard listening'))!;
    assert.match(started, time);
    assert.match(started, /INFO: \[primary\] switchyard listening/);
    for (const line of out.split('\n').filter((l) => l !== ''))
      assert.ok(!line.startsWith('{'), `a JSON line: ${line}`);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });

  it('JSON: process and access lines carry the same time format (ms since the epoch)', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '1']);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/t`)).status, 200);
    const access = await waitFor(() => cli.logs.find((l) => l.path === '/t'));
    const started = cli.logs.find((l) => l.msg === 'worker started')!;
    for (const line of [access, started]) {
      assert.equal(typeof line.time, 'number');
      assert.ok(Math.abs(Number(line.time) - Date.now()) < 60_000);
    }
  });
});
