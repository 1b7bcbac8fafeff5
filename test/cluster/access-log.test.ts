import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessLog } from '../../src/ops/access-log';
import { ProxyServer } from '../../src/proxy/server';
import {
  delay,
  httpUpstream,
  resolveConfig,
  onCleanup,
  rawUpstream,
  request,
  silentLogger,
  startCli,
  waitFor,
} from '../support/helpers';

async function proxyWithLog(config: Record<string, unknown>, format: 'json' | 'common' | 'combined') {
  const file = join(mkdtempSync(join(tmpdir(), 'swy-access-')), 'access.log');
  const accessLog = new AccessLog({ format, file, worker: 7 });
  const server = new ProxyServer(resolveConfig(config), silentLogger, { accessLog });
  const { port } = await server.listen('127.0.0.1', 0);
  onCleanup(() => server.drain(10));
  // Lines reach a file asynchronously: wait until `count` of them are there.
  const lines = async (count = 1): Promise<string[]> => {
    accessLog.flush();
    return waitFor(() => {
      const got = existsSync(file)
        ? readFileSync(file, 'utf8')
            .split('\n')
            .filter((l) => l !== '')
        : [];
      return got.length >= count ? got : null;
    });
  };
  return { url: `http://127.0.0.1:${port}`, lines };
}

describe('access log', () => {
  it('writes one JSON line per request with timing, bytes, upstream and a request id forwarded upstream', async () => {
    const ids: Array<string | undefined> = [];
    const up = await httpUpstream((req, res) => {
      ids.push(req.headers['x-request-id'] as string | undefined);
      req.resume();
      req.on('end', () => res.end('hello'));
    });
    const p = await proxyWithLog({ upstreams: [{ url: up.url }] }, 'json');
    await request(
      `${p.url}/a?b=1`,
      { method: 'POST', headers: { 'x-request-id': 'client-id-42', 'content-length': '3' } },
      'abc',
    );
    await request(`${p.url}/evil`, { headers: { 'x-request-id': 'bad id"\\' } });
    const [first, second] = (await p.lines(2)).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      { ...first, time: 0, durationUs: 0, upstreamUs: 0, remote: '' },
      {
        time: 0,
        worker: 7,
        reqId: 'client-id-42',
        remote: '',
        method: 'POST',
        path: '/a?b=1',
        status: 200,
        bytesIn: 3,
        bytesOut: 5,
        durationUs: 0,
        upstreamUs: 0,
        upstream: up.url,
      },
    );
    assert.ok((first.durationUs as number) >= (first.upstreamUs as number));
    assert.match(String(first.remote), /127\.0\.0\.1/);
    // A request id that could inject into logs or headers is replaced by a generated one.
    assert.match(String(second.reqId), /^[0-9a-f-]{36}$/);
    assert.deepEqual(ids, ['client-id-42', second.reqId]);
  });

  it('logs failures with their code, and a client that left as 499', async () => {
    const up = await rawUpstream((s) => s.once('data', () => s.destroy()));
    const p = await proxyWithLog({ upstreams: [{ url: up.url }] }, 'json');
    assert.equal((await request(p.url)).status, 502);
    const silent = await httpUpstream(() => {
      /* never answers */
    });
    const q = await proxyWithLog({ upstreams: [{ url: silent.url }] }, 'json');
    const req = http.get(q.url, { agent: false });
    req.on('error', () => undefined);
    await waitFor(() => silent.connections.length === 1);
    req.destroy();
    const failed = JSON.parse((await p.lines())[0]) as Record<string, unknown>;
    assert.equal(failed.status, 502);
    assert.equal(failed.error, 'SWY_ERR_UPSTREAM_RESET');
    const left = (await q.lines())[0];
    assert.equal((JSON.parse(left) as Record<string, unknown>).status, 499);
  });

  it("logs an HTTP/2 stream's refusal (400) like an HTTP/1.1 one", async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const p = await proxyWithLog(
      { listen: [{ address: '127.0.0.1:0', h2c: true }], upstreams: [{ url: up.url }] },
      'json',
    );
    const s = http2.connect(p.url);
    s.on('error', () => undefined);
    onCleanup(() => s.destroy());
    const status = await new Promise<number>((ok, fail) => {
      const r = s.request({ ':path': '/mixed', ':authority': 'a.example', host: 'b.example' });
      r.on('response', (h) => ok(Number(h[':status'])));
      r.on('error', fail);
      r.resume();
    });
    assert.equal(status, 400);
    const line = JSON.parse((await p.lines())[0]) as Record<string, unknown>;
    assert.equal(line.status, 400);
    assert.equal(line.error, 'SWY_ERR_BAD_REQUEST');
    assert.equal(line.path, '/mixed');
  });

  it('keeps every line whole across batches, multi-byte text and a line longer than a batch', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'swy-access-')), 'access.log');
    const log = new AccessLog({ format: 'json', file, worker: 3 });
    const entry = {
      reqId: 'r',
      remote: '127.0.0.1',
      method: 'GET',
      httpMinor: 1,
      status: 200,
      bytesIn: 0,
      bytesOut: 2,
      durationUs: 5,
      upstreamUs: 4,
      upstream: 'http://127.0.0.1:1',
      error: undefined,
      referer: undefined,
      userAgent: undefined,
    };
    // Paths arrive as latin1 (one char per byte); 'é' and '"' exercise encoding and escaping.
    const paths: string[] = [];
    for (let i = 0; i < 3000; i++)
      paths.push(i === 1500 ? `/long/${'x'.repeat(100_000)}` : `/p${i}/${'\u00e9'.repeat(i % 97)}/"q"`);
    for (const path of paths) log.log({ ...entry, path });
    await log.close();
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    assert.equal(lines.length, paths.length);
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { path: string }).path),
      paths,
    );
  });

  it('writes exactly what JSON.stringify would, for plain and escaped paths and upstreams that change', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'swy-access-')), 'access.log');
    const log = new AccessLog({ format: 'json', file, worker: 3 });
    // Paths arrive as latin1: control characters, DEL, quotes, backslashes and bytes past ASCII
    // must be escaped or encoded; plain ones go between quotes as they are.
    const paths = [
      '/plain?a=1&b=%20',
      '/q"uote',
      '/back\\slash',
      '/tab\there',
      '/del\x7f',
      '/nul\x00',
      '/\u00e9t\u00e9',
      '/ ~!#$[]{}',
      '',
    ];
    const upstreams = ['http://10.0.0.1:80', 'http://10.0.0.2:80', undefined, 'http://10.0.0.2:80'];
    const expected: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 60; i++) {
      const upstream = upstreams[i % upstreams.length];
      const entry = {
        reqId: `r${i}`,
        remote: i % 5 === 0 ? undefined : '127.0.0.1',
        method: 'GET',
        path: paths[i % paths.length],
        httpMinor: 1,
        status: 200 + (i % 3),
        bytesIn: i,
        bytesOut: 2 * i,
        durationUs: 5 + i,
        upstreamUs: i % 7 === 0 ? undefined : 4,
        upstream,
        error: i % 11 === 0 ? 'SWY_ERR_UPSTREAM_RESET' : undefined,
        referer: undefined,
        userAgent: undefined,
      };
      log.log(entry);
      expected.push({
        worker: 3,
        reqId: entry.reqId,
        remote: entry.remote ?? '',
        method: 'GET',
        path: entry.path,
        status: entry.status,
        bytesIn: entry.bytesIn,
        bytesOut: entry.bytesOut,
        durationUs: entry.durationUs,
        upstreamUs: entry.upstreamUs,
        upstream: entry.upstream,
        error: entry.error,
      });
      // Some lines a few milliseconds apart: a serializer that kept the line's start per millisecond
      // (docs/performance.md) would have to change it between them.
      if (i % 20 === 19) await delay(3);
    }
    await log.close();
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    assert.equal(lines.length, expected.length);
    let lastTime = 0;
    lines.forEach((line, i) => {
      const time = Number(/^\{"time":(\d+),/.exec(line)?.[1]);
      assert.ok(time >= lastTime && Math.abs(time - Date.now()) < 60_000, `line ${i}: time ${time}`);
      lastTime = time;
      assert.equal(line, JSON.stringify({ time, ...expected[i] }), `line ${i}`);
    });
  });

  it('writes the combined format', async () => {
    const up = await httpUpstream((_req, res) => res.end('twelve bytes'));
    const p = await proxyWithLog({ upstreams: [{ url: up.url }] }, 'combined');
    await request(`${p.url}/page`, { headers: { referer: 'https://ref.example/', 'user-agent': 'test "agent"' } });
    assert.match(
      (await p.lines())[0],
      /^\S*127\.0\.0\.1 - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET \/page HTTP\/1\.1" 200 12 "https:\/\/ref\.example\/" "test \\"agent\\""$/,
    );
  });

  it('reopens its file on SIGUSR1 (logrotate), in a real cluster', async function () {
    this.timeout(30_000);
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-rotate-'));
    const file = join(dir, 'access.log');
    const config = join(dir, 'switchyard.yaml');
    writeFileSync(config, `upstreams:\n  - url: ${up.url}\nworkers: 1\naccessLog:\n  file: access.log\n`);
    const cli = await startCli(['--config', config]);
    await request(`http://127.0.0.1:${cli.port}/before-rotation`);
    await waitFor(() => existsSync(file) && readFileSync(file, 'utf8').includes('/before-rotation'));
    renameSync(file, `${file}.1`);
    cli.child.kill('SIGUSR1');
    await delay(300);
    await request(`http://127.0.0.1:${cli.port}/after-rotation`);
    cli.child.kill('SIGTERM');
    await cli.exited;
    assert.match(readFileSync(`${file}.1`, 'utf8'), /\/before-rotation/);
    const fresh = readFileSync(file, 'utf8');
    assert.match(fresh, /\/after-rotation/);
    assert.doesNotMatch(fresh, /before-rotation/);
  });

  it('takes SIGUSR1 in stride when the log goes to stdout: no worker dies', async function () {
    this.timeout(30_000);
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '2']);
    const before = cli.workerPids();
    cli.child.kill('SIGUSR1');
    await delay(300);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/after`)).status, 200);
    assert.deepEqual(cli.workerPids(), before);
    assert.equal(cli.logs.filter((l) => l.event === 'worker-died').length, 0);
  });
});
