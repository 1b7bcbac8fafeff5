import assert from 'node:assert/strict';
import type * as net from 'node:net';
import type { Mirror } from '../../src/proxy/mirror';
import { httpUpstream, rawUpstream, request, startProxy, waitFor, type Proxy } from '../support/helpers';

function mirrorOf(proxy: Proxy): Mirror {
  return proxy.server.handler.router.routes[0].mirror!;
}

describe('mirroring to a shadow pool', () => {
  it('copies requests, bodies included, with a marker field naming the main request', async () => {
    const mainIds = new Map<string, unknown>();
    const main = await httpUpstream((req, res) => {
      mainIds.set(req.url!, req.headers['x-request-id']);
      req.resume();
      req.on('end', () => res.end('main'));
    });
    const seen: Array<{ method: string; url: string; body: string; marker: unknown; id: unknown }> = [];
    const shadow = await httpUpstream((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({
          method: req.method!,
          url: req.url!,
          body,
          marker: req.headers['x-switchyard-mirror'],
          id: req.headers['x-request-id'],
        });
        res.end('shadow');
      });
    });
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow' } }],
    });
    const get = await request(`${proxy.url}/a?x=1`);
    assert.equal(get.body.toString(), 'main');
    const post = await request(
      `${proxy.url}/b`,
      { method: 'POST', headers: { 'transfer-encoding': 'chunked' } },
      'hello body',
    );
    assert.equal(post.body.toString(), 'main');
    await waitFor(() => seen.length === 2);
    const byUrl = new Map(seen.map((s) => [s.url, s]));
    assert.equal(byUrl.get('/a?x=1')!.method, 'GET');
    assert.equal(byUrl.get('/b')!.body, 'hello body');
    assert.equal(byUrl.get('/b')!.method, 'POST');
    // The marker names the main request, by the id its upstream got.
    assert.equal(byUrl.get('/b')!.marker, mainIds.get('/b'));
    assert.equal(byUrl.get('/a?x=1')!.marker, mainIds.get('/a?x=1'));
    assert.match(String(byUrl.get('/a?x=1')!.marker), /^[0-9a-f-]{36}$/);
    // The shadow's request has an id of its own.
    assert.notEqual(byUrl.get('/a?x=1')!.id, byUrl.get('/a?x=1')!.marker);
    await waitFor(() => mirrorOf(proxy).counts.answered === 2);
  });

  it('a black-hole shadow never delays the main exchange; copies past maxInFlight are dropped and counted', async () => {
    const main = await httpUpstream((_req, res) => res.end('main'));
    const held: net.Socket[] = [];
    // Accepts, reads, never answers.
    const shadow = await rawUpstream((socket) => {
      held.push(socket);
      socket.resume();
    });
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow', maxInFlight: 3, timeout: 60_000 } }],
    });
    for (let i = 0; i < 10; i++) {
      const res = await request(`${proxy.url}/r${i}`);
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'main');
    }
    const counts = mirrorOf(proxy).counts;
    assert.equal(mirrorOf(proxy).inFlight, 3);
    assert.equal(counts.dropped, 7);
    for (const s of held) s.destroy();
  });

  it('a shadow past its own timeout is abandoned and counted; the main answer was never held', async () => {
    const main = await httpUpstream((_req, res) => res.end('main'));
    const shadow = await rawUpstream((socket) => socket.resume());
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow', timeout: 100 } }],
    });
    assert.equal((await request(proxy.url)).body.toString(), 'main');
    await waitFor(() => mirrorOf(proxy).counts.timeout === 1);
    assert.equal(mirrorOf(proxy).inFlight, 0);
  });

  it('compares status, chosen fields and body: a shadow that answers differently is a counted mismatch', async () => {
    const main = await httpUpstream((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(req.url === '/same' ? 'same' : 'v1');
    });
    const shadow = await httpUpstream((req, res) => {
      if (req.url === '/same') {
        res.setHeader('content-type', 'text/plain');
        res.end('same');
        return;
      }
      res.statusCode = 500;
      res.setHeader('content-type', 'application/json');
      res.end('{"v":2}');
    });
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow', compare: { headers: ['Content-Type'] } } }],
    });
    const diff = await request(`${proxy.url}/diff`);
    assert.equal(diff.status, 200);
    assert.equal(diff.body.toString(), 'v1');
    assert.equal((await request(`${proxy.url}/same`)).body.toString(), 'same');
    const counts = mirrorOf(proxy).counts;
    await waitFor(() => counts.match + counts.mismatch === 2);
    assert.equal(counts.mismatch, 1);
    assert.equal(counts.match, 1);
  });

  it('a shadow that refuses connections fails its copies only', async () => {
    const main = await httpUpstream((_req, res) => res.end('main'));
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: 'http://127.0.0.1:1' }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow' } }],
    });
    for (let i = 0; i < 3; i++) assert.equal((await request(proxy.url)).body.toString(), 'main');
    await waitFor(() => mirrorOf(proxy).counts.failed === 3);
  });

  it('bodies over maxBodySize are not copied (counted); the main request keeps its whole body', async () => {
    const main = await httpUpstream((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(String(n)));
    });
    let shadowSaw = 0;
    const shadow = await httpUpstream((req, res) => {
      shadowSaw++;
      req.resume();
      res.end();
    });
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow', maxBodySize: 1000 } }],
    });
    const big = Buffer.alloc(5000, 'z');
    assert.equal((await request(proxy.url, { method: 'POST' }, big)).body.toString(), '5000');
    assert.equal(
      (await request(proxy.url, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, big)).body.toString(),
      '5000',
    );
    await waitFor(() => mirrorOf(proxy).counts.too_large === 2);
    assert.equal(shadowSaw, 0);
  });

  it('samples a percentage', async () => {
    const main = await httpUpstream((_req, res) => res.end('main'));
    const shadow = await httpUpstream((_req, res) => res.end('shadow'));
    const proxy = await startProxy({
      pools: { main: { members: [{ url: main.url }] }, shadow: { members: [{ url: shadow.url }] } },
      routes: [{ pool: 'main', mirror: { pool: 'shadow', percent: 0 } }],
    });
    for (let i = 0; i < 20; i++) assert.equal((await request(proxy.url)).status, 200);
    assert.deepEqual(
      Object.values(mirrorOf(proxy).counts).reduce((a, b) => a + b, 0),
      0,
    );
  });
});
