import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import { delay, httpUpstream, memberPool, rawUpstream, request, startProxy, waitFor } from '../support/helpers';

describe('keep-alive pooling to the upstream', () => {
  it('serves many sequential requests over one upstream connection', async () => {
    const up = await httpUpstream((req, res) => res.end(req.url));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    for (let i = 0; i < 50; i++) {
      const res = await request(`${proxy.url}/${i}`);
      assert.equal(res.body.toString(), `/${i}`);
    }
    assert.equal(up.connections.length, 1);
  });

  it('serves concurrent requests over at most maxConnections, queueing past it', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const up = await httpUpstream(async (req, res) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await delay(5);
      inFlight--;
      res.end(req.url);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { maxConnections: 4 } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => request(`${proxy.url}/${i}`, { agent })));
    agent.destroy();
    results.forEach((r, i) => assert.equal(r.body.toString(), `/${i}`));
    assert.ok(up.connections.length <= 4, `${up.connections.length} upstream connections for maxConnections 4`);
    assert.ok(maxInFlight <= 4);
  });

  it('answers 503 when no connection frees up within queueTimeout', async () => {
    const up = await httpUpstream(() => {
      /* never answers */
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { maxConnections: 1, queueTimeout: 100 } });
    const first = request(proxy.url).catch(() => null);
    await waitFor(() => up.connections.length === 1);
    const second = await request(proxy.url);
    assert.equal(second.status, 503);
    assert.match(second.body.toString(), /SWY_ERR_POOL_QUEUE_TIMEOUT/);
    void first;
  });

  it('does not reuse a connection whose response was framed by close', async () => {
    const up = await rawUpstream((socket) => {
      socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close'));
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    assert.equal((await request(proxy.url)).body.toString(), 'until close');
    assert.equal((await request(proxy.url)).body.toString(), 'until close');
    assert.equal(up.connections.length, 2);
  });

  it('replays a bodiless request once when a pooled connection turns out closed by the upstream', async () => {
    // The upstream closes each connection right after its first response, without saying so:
    // the next request on that pooled socket meets a reset before any response byte.
    let served = 0;
    const up = await rawUpstream((socket) => {
      socket.once('data', () => {
        served++;
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        socket.once('data', () => socket.destroy());
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    for (let i = 0; i < 5; i++) assert.equal((await request(proxy.url)).status, 200);
    assert.equal(served, 5);
  });

  it('counts a Content-Length body split across reads at any point, then reuses the connection', async () => {
    // Each part goes out after a pause, so the proxy reads it on its own: the head ends mid-read,
    // the body starts and ends mid-read, and the next response comes whole in one read.
    const parts = ['HTTP/1.1 200 OK\r\nContent-Le', 'ngth: 11\r\n\r', '\nhel', 'lo wor', 'ld'];
    const up = await rawUpstream((socket) => {
      let n = 0;
      socket.on('data', async () => {
        if (n++ > 0) {
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond');
          return;
        }
        for (const part of parts) {
          socket.write(part);
          await delay(30);
        }
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const first = await request(proxy.url);
    assert.equal(first.status, 200);
    assert.equal(first.body.toString(), 'hello world');
    assert.equal((await request(proxy.url)).body.toString(), 'second');
    assert.equal(up.connections.length, 1);
  });

  it('delivers each concurrent response whole to its own client, slow readers included', async () => {
    // Every upstream connection of a worker reads into one shared buffer: each body must be out of
    // it before the next read lands, whichever connection that read is for, even when the client
    // is not reading and the chunk waits in the proxy.
    const bodies = Array.from({ length: 4 }, (_, i) => randomBytes(12 * 1024 * 1024 + i * 1001));
    const up = await httpUpstream((req, res) => {
      const body = bodies[Number(req.url!.slice(1))];
      res.setHeader('Content-Length', body.length);
      // Written in uneven pieces so that reads on different connections interleave.
      for (let at = 0; at < body.length; at += 7001) res.write(body.subarray(at, at + 7001));
      res.end();
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: bodies.length });
    const fetchSlowly = (i: number): Promise<Buffer> =>
      new Promise((ok, fail) => {
        http
          .get(`${proxy.url}/${i}`, { agent }, (res) => {
            const parts: Buffer[] = [];
            res.pause();
            setTimeout(() => res.resume(), 500);
            res.on('data', (d: Buffer) => parts.push(d));
            res.on('end', () => ok(Buffer.concat(parts)));
            res.on('error', fail);
          })
          .on('error', fail);
      });
    for (let round = 0; round < 2; round++) {
      const got = await Promise.all(bodies.map((_, i) => fetchSlowly(i)));
      got.forEach((body, i) => {
        assert.equal(body.length, bodies[i].length, `body ${i} length`);
        assert.equal(
          createHash('sha256').update(body).digest('hex'),
          createHash('sha256').update(bodies[i]).digest('hex'),
          `body ${i}`,
        );
      });
    }
    agent.destroy();
  });

  it('never reuses the memory of a body chunk still queued for a client that stopped reading', async () => {
    // Large chunks' memory is reused once written (body-chunks.ts): a chunk waiting in libuv's
    // queue for a stalled client must keep its bytes while other responses stream past. Loopback
    // buffers take up to 36 MiB here (tcp_rmem 32 MiB + tcp_wmem 4 MiB) before a write has to wait.
    const stalled = randomBytes(64 * 1024 * 1024);
    const fast = Array.from({ length: 4 }, (_, i) => randomBytes(2 * 1024 * 1024 + i * 999));
    const up = await httpUpstream((req, res) => {
      const body = req.url === '/stalled' ? stalled : fast[Number(req.url!.slice(1))];
      res.setHeader('Content-Length', body.length);
      for (let at = 0; at < body.length; at += 60_000) res.write(body.subarray(at, at + 60_000));
      res.end();
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const fetch = (path: string, holdMs: number): Promise<Buffer> =>
      new Promise((ok, fail) => {
        http
          .get(`${proxy.url}${path}`, { agent: false }, (res) => {
            const parts: Buffer[] = [];
            if (holdMs > 0) {
              res.pause();
              setTimeout(() => res.resume(), holdMs);
            }
            res.on('data', (d: Buffer) => parts.push(d));
            res.on('end', () => ok(Buffer.concat(parts)));
            res.on('error', fail);
          })
          .on('error', fail);
      });
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const slow = fetch('/stalled', 1500);
    await delay(300);
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(fast.map((_, i) => fetch(`/${i}`, 0)));
      got.forEach((body, i) => assert.equal(sha(body), sha(fast[i]), `fast body ${i}, round ${round}`));
    }
    assert.equal(sha(await slow), sha(stalled), "the stalled client's body");
  });

  it('closes idle pooled connections after pool.keepAliveTimeout', async () => {
    const up = await httpUpstream((_req, res) => res.end('x'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { keepAliveTimeout: 100 } });
    await request(proxy.url);
    const conn = up.connections[0];
    await waitFor(() => conn.destroyed || conn.readableEnded);
    assert.equal(memberPool(proxy).stats().open, 0);
  });
});
