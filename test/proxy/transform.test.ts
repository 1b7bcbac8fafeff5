/**
 * Response transforms (the piscina pool) and compression: what the client gets, what the upstream
 * was asked for, and the failure modes (throwing or slow modules, bodies over the limit, a full
 * queue), against real upstreams.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { negotiateEncoding } from '../../src/proxy/content-coding';
import { delay, httpUpstream, request, startProxy } from '../support/helpers';

const INTERNAL = 'http://10.0.0.5:3000';
const PUBLIC = 'https://www.example.com';
const REPLACE = { replace: [{ from: INTERNAL, to: PUBLIC }] };

function moduleFile(source: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'swy-transform-')), 'transform.js');
  writeFileSync(file, source);
  return file;
}

/** One route over one upstream, with `route` extras (transform, compress). */
async function proxyFor(up: { url: string }, route: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return startProxy({ pools: { app: { members: [{ url: up.url }] } }, routes: [{ pool: 'app', ...route }], ...extra });
}

function html(res: http.ServerResponse, body: string | Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(200, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

describe('response transforms and compression', () => {
  it('replaces text that straddles chunk boundaries, corrects Content-Length, weakens the ETag, and asks the upstream for identity', async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const up = await httpUpstream(async (req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'Content-Type': 'text/html', ETag: '"v1"' });
      // The internal origin is split over three writes, each flushed on its own.
      for (const part of ['<a href="http://10.0', '.0.5:30', '00/page">x</a> and http://10.0.0.5:3000/']) {
        res.write(part);
        await delay(15);
      }
      res.end();
    });
    const proxy = await proxyFor(up, { transform: REPLACE });
    const r = await request(proxy.url, { headers: { 'Accept-Encoding': 'gzip' } });
    const expected = `<a href="${PUBLIC}/page">x</a> and ${PUBLIC}/`;
    assert.equal(r.body.toString(), expected);
    assert.equal(r.headers['content-length'], String(Buffer.byteLength(expected)));
    assert.equal(r.headers['transfer-encoding'], undefined);
    assert.equal(r.headers.etag, 'W/"v1"');
    assert.equal(seen[0]['accept-encoding'], undefined, 'Accept-Encoding is removed upstream when a transform applies');
  });

  it('decodes a gzip or brotli upstream, transforms, and encodes to what the client accepts', async () => {
    const page = `<p>${INTERNAL}/a</p>`.repeat(50);
    const up = await httpUpstream((req, res) => {
      // An upstream that compresses whatever it was asked.
      const br = req.url === '/br';
      html(res, br ? zlib.brotliCompressSync(page) : zlib.gzipSync(page), { 'Content-Encoding': br ? 'br' : 'gzip' });
    });
    const proxy = await proxyFor(up, { transform: REPLACE });
    const want = page.split(INTERNAL).join(PUBLIC);
    for (const path of ['/gz', '/br']) {
      const plain = await request(`${proxy.url}${path}`);
      assert.equal(plain.headers['content-encoding'], undefined, `${path}: identity for a client that accepts nothing`);
      assert.equal(plain.body.toString(), want);
      const gz = await request(`${proxy.url}${path}`, { headers: { 'Accept-Encoding': 'gzip' } });
      assert.equal(gz.headers['content-encoding'], 'gzip');
      assert.equal(zlib.gunzipSync(gz.body).toString(), want);
      assert.equal(gz.headers['content-length'], String(gz.body.length));
      assert.match(String(gz.headers.vary), /Accept-Encoding/);
      const br = await request(`${proxy.url}${path}`, { headers: { 'Accept-Encoding': 'gzip;q=0.5, br' } });
      assert.equal(br.headers['content-encoding'], 'br');
      assert.equal(zlib.brotliDecompressSync(br.body).toString(), want);
    }
  });

  it('leaves HEAD, 304, ranges, no-transform and other media types untouched', async () => {
    const body = `${INTERNAL}/x`;
    const up = await httpUpstream((req, res) => {
      if (req.url === '/304') {
        res.writeHead(304, { ETag: '"e"' });
        res.end();
        return;
      }
      if (req.url === '/range') {
        res.writeHead(206, { 'Content-Type': 'text/html', 'Content-Range': 'bytes 0-4/100' });
        res.end(body.slice(0, 5));
        return;
      }
      if (req.url === '/nt') {
        html(res, body, { 'Cache-Control': 'public, no-transform' });
        return;
      }
      if (req.url === '/png') {
        res.writeHead(200, { 'Content-Type': 'image/png' });
        res.end(body);
        return;
      }
      html(res, body, { ETag: '"e"' });
    });
    const proxy = await proxyFor(up, { transform: REPLACE, compress: true });
    const head = await request(proxy.url, { method: 'HEAD', headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(head.headers['content-length'], String(body.length), "HEAD keeps the upstream's length");
    assert.equal(head.headers.etag, '"e"');
    assert.equal(head.headers['content-encoding'], undefined);
    assert.match(String(head.headers.vary), /Accept-Encoding/, 'HEAD carries the Vary a GET would');
    const notModified = await request(`${proxy.url}/304`, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.headers.etag, '"e"');
    const range = await request(`${proxy.url}/range`, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(range.status, 206);
    assert.equal(range.body.toString(), body.slice(0, 5));
    for (const path of ['/nt', '/png']) {
      const r = await request(`${proxy.url}${path}`, { headers: { 'Accept-Encoding': 'gzip' } });
      assert.equal(r.body.toString(), body, path);
      assert.equal(r.headers['content-encoding'], undefined, path);
    }
  });

  it('passes a body over transform.maxBodySize through untransformed, declared or chunked', async () => {
    const big = `${INTERNAL} `.repeat(2000); // about 44 KB
    const up = await httpUpstream((req, res) => {
      if (req.url === '/chunked') {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.write(big.slice(0, 20_000));
        setTimeout(() => res.end(big.slice(20_000)), 10);
        return;
      }
      html(res, big);
    });
    const proxy = await proxyFor(up, { transform: { ...REPLACE, maxBodySize: 10_000 } });
    const small = await proxyFor(up, { transform: { ...REPLACE, maxBodySize: 1_000_000 } });
    for (const path of ['/', '/chunked']) {
      const r = await request(`${proxy.url}${path}`);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), big, `${path} passed through whole and unchanged`);
      const t = await request(`${small.url}${path}`);
      assert.ok(!t.body.toString().includes(INTERNAL), `${path} transformed under a larger limit`);
    }
    // Too large, declared or found while buffering, on a route that also compresses: untransformed,
    // still compressed.
    const both = await proxyFor(up, { transform: { ...REPLACE, maxBodySize: 10_000 }, compress: true });
    for (const path of ['/', '/chunked']) {
      const z = await request(`${both.url}${path}`, { headers: { 'Accept-Encoding': 'gzip' } });
      assert.equal(z.headers['content-encoding'], 'gzip', path);
      assert.equal(zlib.gunzipSync(z.body).toString(), big, path);
    }
  });

  it('answers 502 when a user module throws or runs past its timeout, and the worker keeps serving', async () => {
    const up = await httpUpstream((req, res) => html(res, `page ${req.url}`));
    const mod = moduleFile(`
      module.exports = (body, ctx) => {
        if (ctx.url === '/throw') throw new Error('boom');
        if (ctx.url === '/spin') { const end = Date.now() + 5000; while (Date.now() < end); }
        if (ctx.url === '/bad') return 42;
        return body.toString().toUpperCase() + ' ' + ctx.status + ' ' + ctx.contentType + ' ' + ctx.method;
      };
    `);
    const proxy = await proxyFor(up, { transform: { module: mod, timeout: 300 } });
    const ok = await request(`${proxy.url}/ok`);
    assert.equal(ok.body.toString(), 'PAGE /OK 200 text/html GET');
    const thrown = await request(`${proxy.url}/throw`);
    assert.equal(thrown.status, 502);
    assert.match(thrown.body.toString(), /SWY_ERR_TRANSFORM_FAILED/);
    const bad = await request(`${proxy.url}/bad`);
    assert.equal(bad.status, 502);
    const slow = await request(`${proxy.url}/spin`);
    assert.equal(slow.status, 502);
    assert.match(slow.body.toString(), /SWY_ERR_TRANSFORM_TIMEOUT/);
    const after = await request(`${proxy.url}/after`);
    assert.equal(after.body.toString(), 'PAGE /AFTER 200 text/html GET', 'a fresh thread took over');
  });

  it('accepts `transform: FILE` shorthand and ES modules', async () => {
    const up = await httpUpstream((_req, res) => html(res, 'hello'));
    const file = join(mkdtempSync(join(tmpdir(), 'swy-esm-')), 't.mjs');
    writeFileSync(file, 'export default async (body) => `[${body}]`;\n');
    const proxy = await proxyFor(up, { transform: file });
    assert.equal((await request(proxy.url)).body.toString(), '[hello]');
  });

  it('past the queue bound, passes bodies through (onOverload: pass) or answers 503 (reject)', async () => {
    const up = await httpUpstream((req, res) => html(res, `page ${req.url}`));
    const mod = moduleFile(`
      module.exports = (body) => { const end = Date.now() + 400; while (Date.now() < end); return body.toString().toUpperCase(); };
    `);
    for (const onOverload of ['pass', 'reject'] as const) {
      const proxy = await proxyFor(
        up,
        { transform: { module: mod, timeout: 5000 } },
        { transformPool: { threads: 1, maxQueue: 1, onOverload } },
      );
      // One runs, one waits, the other two find the queue full.
      const results = await Promise.all(
        [1, 2, 3, 4].map(async (i) => {
          await delay(i * 40);
          return request(`${proxy.url}/p${i}`);
        }),
      );
      const bodies = results.map((r) => `${r.status} ${r.body.toString()}`);
      assert.deepEqual(bodies.slice(0, 2), ['200 PAGE /P1', '200 PAGE /P2'], onOverload);
      if (onOverload === 'pass') {
        assert.deepEqual(bodies.slice(2), ['200 page /p3', '200 page /p4']);
      } else {
        for (const r of results.slice(2)) {
          assert.equal(r.status, 503);
          assert.equal(r.headers['retry-after'], '1');
          assert.match(r.body.toString(), /SWY_ERR_TRANSFORM_OVERLOADED/);
        }
      }
    }
  });

  it('compresses by q-value with Vary, honours minSize, and leaves compressed or ineligible responses alone', async () => {
    const page = '<p>hello switchyard</p>'.repeat(200);
    const up = await httpUpstream((req, res) => {
      if (req.url === '/tiny') return html(res, 'tiny');
      if (req.url === '/pre') return html(res, zlib.gzipSync(page), { 'Content-Encoding': 'gzip' });
      if (req.url === '/vary') return html(res, page, { Vary: 'Cookie', ETag: '"s"' });
      html(res, page);
    });
    const proxy = await proxyFor(up, { compress: { minSize: 100 } });
    const cases: Array<[string, string | undefined, string | undefined]> = [
      ['gzip', '/', 'gzip'],
      ['br', '/', 'br'],
      ['gzip;q=1, br;q=0.5', '/', 'gzip'],
      ['gzip, br', '/', 'br'],
      ['br;q=0, gzip;q=0', '/', undefined],
      ['*', '/', 'br'],
      ['identity', '/', undefined],
      ['gzip', '/tiny', undefined],
    ];
    for (const [accept, path, expected] of cases) {
      const r = await request(`${proxy.url}${path}`, { headers: { 'Accept-Encoding': accept } });
      assert.equal(r.headers['content-encoding'], expected, `${accept} ${path}`);
      assert.match(String(r.headers.vary), /Accept-Encoding/, `${accept} ${path}: Vary`);
      const decoded =
        expected === 'gzip' ? zlib.gunzipSync(r.body) : expected === 'br' ? zlib.brotliDecompressSync(r.body) : r.body;
      assert.equal(decoded.toString(), path === '/tiny' ? 'tiny' : page);
      if (expected !== undefined) assert.equal(r.headers['content-length'], undefined);
    }
    const vary = await request(`${proxy.url}/vary`, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(vary.headers.vary, 'Cookie, Accept-Encoding');
    assert.equal(vary.headers.etag, 'W/"s"');
    const pre = await request(`${proxy.url}/pre`, { headers: { 'Accept-Encoding': 'gzip, br' } });
    assert.equal(pre.headers['content-encoding'], 'gzip', 'already compressed upstream: passed as is');
    assert.equal(zlib.gunzipSync(pre.body).toString(), page);
  });

  it('streams a large compressed body with backpressure and no corruption', async () => {
    const chunk = Buffer.from('<div>switchyard streams compressed bodies</div>\n'.repeat(1000));
    const up = await httpUpstream(async (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      for (let i = 0; i < 100; i++) {
        if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
      }
      res.end();
    });
    const proxy = await proxyFor(up, { compress: true });
    const r = await request(proxy.url, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(r.headers['content-encoding'], 'gzip');
    const plain = zlib.gunzipSync(r.body);
    assert.equal(plain.length, chunk.length * 100);
    assert.ok(plain.equals(Buffer.concat(Array.from({ length: 100 }, () => chunk))));
  });

  it('negotiates Accept-Encoding per RFC 9110 (pure)', () => {
    assert.equal(negotiateEncoding(null, ['br', 'gzip']), null);
    assert.equal(negotiateEncoding('gzip, deflate', ['br', 'gzip']), 'gzip');
    assert.equal(negotiateEncoding('x-gzip', ['gzip']), 'gzip');
    assert.equal(negotiateEncoding('*;q=0.1, gzip;q=0', ['br', 'gzip']), 'br');
    assert.equal(negotiateEncoding('BR;Q=0.9, GZIP;q=0.8', ['gzip', 'br']), 'br');
    assert.equal(negotiateEncoding('gzip;q=0.8, br;q=0.8', ['gzip', 'br']), 'gzip', "ties go to the server's order");
  });
});
