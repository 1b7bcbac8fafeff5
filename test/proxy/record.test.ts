import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { RecordedExchange } from '../../src/ops/recording';
import { FIXTURES, httpUpstream, request, startProxy } from '../support/helpers';

const TLS = { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') };

function lines(file: string): RecordedExchange[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as RecordedExchange);
}

describe('recording exchanges', () => {
  it('writes one JSON line per exchange: request, body (base64), status, timing, id; credentials redacted', async () => {
    const up = await httpUpstream((req, res) => {
      req.resume();
      res.setHeader('set-cookie', 'session=abc');
      res.setHeader('x-up', 'yes');
      res.statusCode = req.url === '/missing' ? 404 : 201;
      res.end('done');
    });
    const dir = mkdtempSync(join(tmpdir(), 'swy-record-'));
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [{ name: 'app', pool: 'app', record: { file: join(dir, 'traffic.jsonl'), redact: ['X-Api-Key'] } }],
    });
    const res = await request(
      `${proxy.url}/things?q=1`,
      {
        method: 'POST',
        headers: {
          authorization: 'Bearer t0ken',
          cookie: 'a=b',
          'x-api-key': 'k',
          'x-plain': 'visible',
          'content-type': 'application/json',
        },
      },
      '{"hello":"world"}',
    );
    assert.equal(res.status, 201);
    assert.equal((await request(`${proxy.url}/missing`)).status, 404);
    await proxy.server.drain(10);
    // Worker 1's file: the worker's number before the extension.
    const [post, get] = lines(join(dir, 'traffic.1.jsonl'));
    assert.equal(post.route, 'app');
    assert.equal(post.method, 'POST');
    assert.equal(post.scheme, 'http');
    assert.equal(post.path, '/things?q=1');
    assert.equal(post.status, 201);
    assert.equal(Buffer.from(post.body!, 'base64').toString(), '{"hello":"world"}');
    assert.equal(post.bodyTruncated, undefined);
    assert.match(post.id, /^[0-9a-f-]{36}$/);
    assert.ok(post.durationMs >= 0 && post.upstreamMs! >= 0);
    assert.ok(post.t > Date.now() - 60_000);
    const header = (list: Array<[string, string]>, name: string) => list.find(([n]) => n.toLowerCase() === name)?.[1];
    assert.equal(header(post.headers, 'authorization'), '[redacted]');
    assert.equal(header(post.headers, 'cookie'), '[redacted]');
    assert.equal(header(post.headers, 'x-api-key'), '[redacted]');
    assert.equal(header(post.headers, 'x-plain'), 'visible');
    assert.equal(header(post.responseHeaders, 'set-cookie'), '[redacted]');
    assert.equal(header(post.responseHeaders, 'x-up'), 'yes');
    assert.ok(!JSON.stringify(post).includes('t0ken'));
    assert.equal(get.status, 404);
    assert.equal(get.body, undefined);
  });

  it('keeps the start of a long body, marked as cut; the upstream still gets all of it', async () => {
    let got = 0;
    const up = await httpUpstream((req, res) => {
      req.on('data', (c: Buffer) => (got += c.length));
      req.on('end', () => res.end());
    });
    const dir = mkdtempSync(join(tmpdir(), 'swy-record-'));
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [{ pool: 'app', record: { file: join(dir, 'r.jsonl'), maxBodySize: 100 } }],
    });
    await request(proxy.url, { method: 'PUT' }, Buffer.alloc(10_000, 'q'));
    assert.equal(got, 10_000);
    await proxy.server.drain(10);
    const [line] = lines(join(dir, 'r.1.jsonl'));
    assert.equal(Buffer.from(line.body!, 'base64').toString(), 'q'.repeat(100));
    assert.equal(line.bodyTruncated, true);
    // An unnamed route is known by its index.
    assert.equal(line.route, '0');
  });

  it('rotates a file past maxFileSize, keeping `keep` old ones', async () => {
    const up = await httpUpstream((_req, res) => res.end('x'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-record-'));
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [{ pool: 'app', record: { file: join(dir, 'r.jsonl'), maxFileSize: 4096, keep: 2 } }],
    });
    for (let i = 0; i < 60; i++) await request(`${proxy.url}/${i}`);
    await proxy.server.drain(10);
    const current = lines(join(dir, 'r.1.jsonl'));
    const older = lines(join(dir, 'r.1.jsonl.1'));
    const oldest = lines(join(dir, 'r.1.jsonl.2'));
    assert.ok(older.length > 0 && oldest.length > 0);
    assert.equal(existsSync(join(dir, 'r.1.jsonl.3')), false);
    // Nothing lost between the kept files: they run on in order.
    const paths = [...oldest, ...older, ...current].map((l) => Number(l.path.slice(1)));
    for (let i = 1; i < paths.length; i++) assert.equal(paths[i], paths[i - 1] + 1);
    assert.equal(paths[paths.length - 1], 59);
  });

  it('records what came over HTTPS as https, with the host the client named', async () => {
    const up = await httpUpstream((_req, res) => res.end('x'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-record-'));
    const proxy = await startProxy({
      tls: TLS,
      pools: { app: { members: [{ url: up.url }] } },
      routes: [{ pool: 'app', record: { file: join(dir, 'tls.jsonl') } }],
    });
    await new Promise<void>((done, fail) =>
      https
        .get(
          `https://127.0.0.1:${proxy.port}/secure`,
          { rejectUnauthorized: false, servername: 'localhost', headers: { host: 'shop.example' } },
          (res) => {
            res.resume();
            res.on('end', done);
          },
        )
        .on('error', fail),
    );
    await proxy.server.drain(10);
    const [line] = lines(join(dir, 'tls.1.jsonl'));
    assert.equal(line.scheme, 'https');
    assert.equal(line.host, 'shop.example');
    assert.equal(line.path, '/secure');
  });

  it('samples a percentage: 0 records nothing', async () => {
    const up = await httpUpstream((_req, res) => res.end('x'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-record-'));
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [{ pool: 'app', record: { file: join(dir, 'r.jsonl'), percent: 0 } }],
    });
    for (let i = 0; i < 5; i++) assert.equal((await request(proxy.url)).status, 200);
    await proxy.server.drain(10);
    assert.deepEqual(lines(join(dir, 'r.1.jsonl')), []);
  });
});
