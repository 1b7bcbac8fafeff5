import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import type { FaultEntry } from '../../src/config/load';
import { FaultSchema, type FaultConfig } from '../../src/config/schema';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AccessLog } from '../../src/ops/access-log';
import {
  completeResponse,
  FIXTURES,
  httpUpstream,
  rawExchange,
  request,
  startProxy,
  waitFor,
  type Upstream,
} from '../support/helpers';

const BIG = Buffer.alloc(64 * 1024, 'x');

/** An upstream that counts its connections and requests: /big is 64 KiB, /chunked is chunked. */
async function countingUpstream(): Promise<Upstream & { connections: () => number; requests: string[] }> {
  const requests: string[] = [];
  let connections = 0;
  const up = await httpUpstream((req, res) => {
    requests.push(req.url!);
    req.resume();
    if (req.url === '/big') {
      res.setHeader('content-length', BIG.length);
      res.end(BIG);
    } else if (req.url === '/chunked') {
      res.write('a'.repeat(3000));
      res.end('b'.repeat(3000));
    } else {
      res.end(`ok ${req.url}`);
    }
  });
  up.server.on('connection', () => connections++);
  return Object.assign(up, { connections: () => connections, requests });
}

function entry(
  spec: Partial<FaultConfig> & Record<string, unknown>,
  name = 'f',
  route: number | null = null,
): FaultEntry {
  return { name, route, spec: FaultSchema.parse(spec) };
}

/** How a response over a fresh connection ended: its status and body, complete or cut, or the socket error. */
function outcome(
  url: string,
  headers: http.OutgoingHttpHeaders = {},
): Promise<{ status?: number; body: string; complete: boolean; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, headers }, (res) => {
      let body = '';
      let chunks = 0;
      res.on('data', (c: Buffer) => {
        chunks++;
        body += c.toString('latin1');
      });
      const done = (complete: boolean) => resolve({ status: res.statusCode!, body, complete, chunks } as never);
      res.on('end', () => done(res.complete));
      res.on('aborted', () => done(false));
      res.on('error', () => done(false));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ body: '', complete: false, error: err.code }));
  });
}

/**
 * Runs `check` twice: with the upstream pool empty (a fresh connection) and after a request that
 * left an idle pooled connection (reused), as every fault path must work on both.
 */
async function freshAndReused(
  spec: Record<string, unknown>,
  check: (proxy: { url: string }, up: Awaited<ReturnType<typeof countingUpstream>>, reused: boolean) => Promise<void>,
  config: Record<string, unknown> = {},
): Promise<void> {
  for (const reused of [false, true]) {
    const up = await countingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], ...config });
    // Only /f* requests are hit (unless the fault says otherwise), so the warm-up and the follow-up pass untouched.
    proxy.server.applyFaults([entry({ match: { path: '/f' }, ...spec })]);
    if (reused) {
      assert.equal((await request(`${proxy.url}/warm`)).status, 200);
      assert.equal(up.connections(), 1);
    }
    await check(proxy, up, reused);
    // The pool is sound afterwards: the next request is answered by the upstream.
    const after = await request(`${proxy.url}/after`);
    assert.equal(after.status, 200);
    assert.equal(after.body.toString(), 'ok /after');
  }
}

describe('fault injection', () => {
  it('abort with a status: answered by the proxy, the upstream never sees the request', async () => {
    await freshAndReused({ abort: { status: 503 } }, async (proxy, up) => {
      const res = await request(`${proxy.url}/f`);
      assert.equal(res.status, 503);
      assert.match(res.body.toString(), /SWY_ERR_FAULT_ABORT/);
      assert.ok(!up.requests.includes('/f'));
    });
  });

  it('abort with any status, its reason phrase from Node', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ abort: { status: 429 } })]);
    const raw = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', completeResponse);
    assert.match(raw, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
  });

  it('a seeded 50% hits within statistical bounds over 2,000 requests, and the rest reach the upstream', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ abort: { status: 503 }, percent: 50, seed: 42 })]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const counts = new Map<number, number>();
    const total = 2000;
    for (let i = 0; i < total; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: 100 }, (_, j) => request(`${proxy.url}/p${i + j}`, { agent })),
      );
      for (const r of batch) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
    }
    agent.destroy();
    const hit = counts.get(503) ?? 0;
    // Binomial(2000, 0.5): sd 22.4; ±5 sd.
    assert.ok(hit > 888 && hit < 1112, `503s: ${hit} of ${total}`);
    assert.equal(counts.get(200), total - hit);
    assert.equal(up.requests.length, total - hit);
  });

  it('the same seed hits the same requests again', async () => {
    const run = async (): Promise<string> => {
      const up = await countingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      proxy.server.applyFaults([entry({ abort: { status: 500 }, percent: 30, seed: 7 })]);
      let pattern = '';
      for (let i = 0; i < 40; i++) pattern += (await request(`${proxy.url}/`)).status === 500 ? 'x' : '.';
      return pattern;
    };
    const first = await run();
    assert.match(first, /x/);
    assert.match(first, /\./);
    assert.equal(await run(), first);
  });

  it('abort by reset on the request side: the client connection is reset, the upstream never called', async () => {
    await freshAndReused({ abort: { reset: true } }, async (proxy, up) => {
      const res = await outcome(`${proxy.url}/f`);
      assert.equal(res.error, 'ECONNRESET');
      assert.ok(!up.requests.includes('/f'));
    });
  });

  it('abort by reset over HTTPS: the TLS connection is reset too', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({
      tls: { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') },
      upstreams: [{ url: up.url }],
    });
    proxy.server.applyFaults([entry({ abort: { reset: true }, match: { path: '/f' } })]);
    const error = await new Promise<string | undefined>((done) => {
      https
        .get(
          `https://127.0.0.1:${proxy.port}/f`,
          { rejectUnauthorized: false, servername: 'localhost', agent: false },
          (res) => {
            res.resume();
            res.on('end', () => done(undefined));
          },
        )
        .on('error', (err: NodeJS.ErrnoException) => done(err.code));
    });
    assert.equal(error, 'ECONNRESET');
    assert.ok(!up.requests.includes('/f'));
  });

  it('abort on the response side: the upstream answered, the client gets the fault status', async () => {
    await freshAndReused({ abort: { status: 502 }, side: 'response' }, async (proxy, up) => {
      const res = await request(`${proxy.url}/f`);
      assert.equal(res.status, 502);
      assert.match(res.body.toString(), /SWY_ERR_FAULT_ABORT/);
      assert.ok(up.requests.includes('/f'));
    });
  });

  it('reset on the response side: the upstream answered, the client connection is reset', async () => {
    await freshAndReused({ abort: { reset: true }, side: 'response' }, async (proxy, up) => {
      const res = await outcome(`${proxy.url}/f`);
      assert.equal(res.error, 'ECONNRESET');
      assert.ok(up.requests.includes('/f'));
    });
  });

  it('delay: a held request is overtaken by one sent after it on the same connection', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ listen: [{ address: '127.0.0.1:0', h2c: true }], upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ delay: 300, match: { header: { 'x-slow': '1' } } })]);
    // One HTTP/2 connection: the slow request's HEADERS frame reaches the proxy first.
    const session = http2.connect(proxy.url);
    try {
      const get = (path: string, headers: http2.OutgoingHttpHeaders = {}) =>
        new Promise<string>((resolve, reject) => {
          const s = session.request({ ':path': path, ...headers });
          let body = '';
          s.on('data', (c: Buffer) => (body += c.toString()));
          s.on('end', () => resolve(body));
          s.on('error', reject);
        });
      const slow = get('/slow', { 'x-slow': '1' });
      assert.equal(await get('/fast'), 'ok /fast');
      assert.deepEqual(up.requests, ['/fast']);
      assert.equal(await slow, 'ok /slow');
      assert.deepEqual(up.requests, ['/fast', '/slow']);
    } finally {
      session.close();
    }
  });

  it('delay on the response side: the answer is held, then relayed whole', async () => {
    await freshAndReused({ delay: { p50: 20, p99: 80 }, side: 'response' }, async (proxy) => {
      const res = await request(`${proxy.url}/f`);
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok /f');
    });
  });

  it('bandwidth: the body arrives whole, in paced pieces', async () => {
    await freshAndReused({ bandwidth: 256 * 1024, match: { path: '/big' } }, async (proxy) => {
      const res = (await outcome(`${proxy.url}/big`)) as Awaited<ReturnType<typeof outcome>> & { chunks: number };
      assert.equal(res.status, 200);
      assert.ok(res.complete);
      assert.equal(res.body, BIG.toString('latin1'));
      // 64 KiB at 256 KiB/s in slices of a twentieth of a second's worth (12.8 KiB): several reads.
      assert.ok(res.chunks >= 4, `${res.chunks} reads`);
    });
  });

  it('partial: the head and the first bytes of the body, then the connection closes', async () => {
    for (const reused of [false, true]) {
      const up = await countingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      proxy.server.applyFaults([entry({ partial: { bytes: 1000 }, match: { path: '/big' } })]);
      if (reused) await request(`${proxy.url}/warm`);
      const raw = await rawExchange(proxy.port, 'GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
      const [head, body] = raw.split('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /content-length: 65536/i);
      assert.equal(body, 'x'.repeat(1000));
      assert.equal((await request(`${proxy.url}/after`)).body.toString(), 'ok /after');
    }
  });

  it('partial on a chunked response: no last chunk, so the client sees a cut body', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ partial: { bytes: 4000 } })]);
    const res = await outcome(`${proxy.url}/chunked`);
    assert.equal(res.status, 200);
    assert.equal(res.complete, false);
    assert.equal(res.body, 'a'.repeat(3000) + 'b'.repeat(1000));
  });

  it('stall on the request side: no upstream call, and the head timeout answers 504', async () => {
    await freshAndReused(
      { stall: true },
      async (proxy, up) => {
        const res = await request(`${proxy.url}/f`);
        assert.equal(res.status, 504);
        assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_HEADERS_TIMEOUT/);
        assert.ok(!up.requests.includes('/f'));
      },
      { timeouts: { responseHeader: 150 } },
    );
  });

  it('stall on the response side: the head, then the body withheld until timeouts.idle cuts it', async () => {
    await freshAndReused(
      { stall: true, side: 'response' },
      async (proxy, up) => {
        const res = await outcome(`${proxy.url}/f`);
        assert.equal(res.status, 200);
        assert.equal(res.complete, false);
        assert.equal(res.body, '');
        assert.ok(up.requests.includes('/f'));
      },
      { timeouts: { idle: 150 } },
    );
  });

  it('matches on method and header, and is limited to its route', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({
      pools: { a: { members: [{ url: up.url }] } },
      routes: [
        { match: { path: '/one' }, pool: 'a' },
        { match: { path: '/two' }, pool: 'a' },
      ],
    });
    proxy.server.applyFaults([
      entry({ abort: { status: 500 }, match: { method: 'POST', header: { 'x-chaos': '*' } } }, 'posts'),
      entry({ abort: { status: 501 } }, 'two', 1),
    ]);
    assert.equal((await request(`${proxy.url}/one`, { method: 'POST', headers: { 'x-chaos': 'y' } })).status, 500);
    assert.equal((await request(`${proxy.url}/one`, { method: 'POST' })).status, 200);
    assert.equal((await request(`${proxy.url}/one`, { headers: { 'x-chaos': 'y' } })).status, 200);
    assert.equal((await request(`${proxy.url}/two`)).status, 501);
    assert.equal((await request(`${proxy.url}/one`)).status, 200);
  });

  it('applying an empty table turns every fault off', async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ abort: { status: 503 } })]);
    assert.equal((await request(proxy.url)).status, 503);
    proxy.server.applyFaults([]);
    assert.equal((await request(proxy.url)).status, 200);
  });

  it("a route's `faults` in the config apply from the start", async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({
      pools: { a: { members: [{ url: up.url }] } },
      routes: [{ match: {}, pool: 'a', faults: { teapot: { abort: { status: 418 }, match: { path: '/tea' } } } }],
    });
    assert.equal((await request(`${proxy.url}/tea`)).status, 418);
    assert.equal((await request(`${proxy.url}/coffee`)).status, 200);
  });

  it("over HTTP/2, a reset is the stream's RST_STREAM; the session and its other streams go on", async () => {
    const up = await countingUpstream();
    const proxy = await startProxy({ listen: [{ address: '127.0.0.1:0', h2c: true }], upstreams: [{ url: up.url }] });
    proxy.server.applyFaults([entry({ abort: { reset: true }, match: { path: '/f' } })]);
    const session = http2.connect(proxy.url);
    try {
      const reset = await new Promise<number>((resolve) => {
        const s = session.request({ ':path': '/f' });
        s.on('close', () => resolve(s.rstCode));
        s.on('error', () => undefined);
        s.resume();
      });
      assert.equal(reset, http2.constants.NGHTTP2_INTERNAL_ERROR);
      const ok = await new Promise<string>((resolve, reject) => {
        const s = session.request({ ':path': '/fine' });
        let body = '';
        s.on('data', (c: Buffer) => (body += c.toString()));
        s.on('end', () => resolve(body));
        s.on('error', reject);
      });
      assert.equal(ok, 'ok /fine');
    } finally {
      session.close();
    }
  });

  describe('request-header triggers (faultHeaders)', () => {
    it('from a trusted proxy: X-Switchyard-Fault-Abort and -Delay are honoured', async () => {
      const up = await countingUpstream();
      const proxy = await startProxy({
        upstreams: [{ url: up.url }],
        faultHeaders: true,
        trustedProxies: ['127.0.0.1'],
      });
      const res = await request(proxy.url, { headers: { 'x-switchyard-fault-abort': '418' } });
      assert.equal(res.status, 418);
      assert.match(res.body.toString(), /SWY_ERR_FAULT_ABORT/);
      assert.equal((await outcome(proxy.url, { 'x-switchyard-fault-abort': 'reset' })).error, 'ECONNRESET');
      const delayed = await request(`${proxy.url}/d`, { headers: { 'x-switchyard-fault-delay': '10' } });
      assert.equal(delayed.body.toString(), 'ok /d');
      assert.deepEqual(up.requests, ['/d']);
    });

    it('from an untrusted client: ignored, the request is proxied as it is', async () => {
      const up = await countingUpstream();
      const proxy = await startProxy({
        upstreams: [{ url: up.url }],
        faultHeaders: true,
        trustedProxies: ['10.0.0.0/8'],
      });
      const res = await request(`${proxy.url}/u`, { headers: { 'x-switchyard-fault-abort': '503' } });
      assert.equal(res.status, 200);
      assert.deepEqual(up.requests, ['/u']);
    });

    it('off by default, even from a trusted proxy', async () => {
      const up = await countingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }], trustedProxies: ['127.0.0.1'] });
      const res = await request(`${proxy.url}/u`, { headers: { 'x-switchyard-fault-abort': '503' } });
      assert.equal(res.status, 200);
    });

    it('a value that is not one answers 400 naming the field', async () => {
      const up = await countingUpstream();
      const proxy = await startProxy({
        upstreams: [{ url: up.url }],
        faultHeaders: true,
        trustedProxies: ['127.0.0.1'],
      });
      const res = await request(proxy.url, { headers: { 'x-switchyard-fault-abort': '99' } });
      assert.equal(res.status, 400);
      assert.equal(up.requests.length, 0);
      const bandwidth = await request(proxy.url, { headers: { 'x-switchyard-fault-bandwidth': 'fast' } });
      assert.equal(bandwidth.status, 400);
    });
  });

  it('a client that leaves during a delay is let go (499); the upstream never sees the request', async () => {
    const up = await countingUpstream();
    const file = join(mkdtempSync(join(tmpdir(), 'swy-faults-')), 'access.log');
    const accessLog = new AccessLog({ format: 'json', file, worker: 0 });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] }, { accessLog });
    proxy.server.applyFaults([entry({ delay: 2000, match: { path: '/gone' } })]);
    const socket = net.connect(proxy.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write('GET /gone HTTP/1.1\r\nHost: x\r\n\r\n');
    await request(`${proxy.url}/first`);
    // Whenever the proxy reads it, the request comes before the connection's end.
    socket.destroy();
    const line = await waitFor(() => {
      accessLog.flush();
      // The file is opened asynchronously: it may not be there yet.
      if (!existsSync(file)) return null;
      return readFileSync(file, 'utf8')
        .split('\n')
        .find((l) => l.includes('"/gone"'));
    });
    assert.match(line, /"status":499/);
    assert.match(line, /"fault":"f:delay"/);
    assert.deepEqual(up.requests, ['/first']);
    await accessLog.close();
  });
});
