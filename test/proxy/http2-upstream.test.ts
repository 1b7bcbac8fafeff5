/**
 * HTTP/2 to upstreams (h2c:// and https:// with `http2`), and HTTP/2 with prior knowledge from
 * clients on an h2c listener: real node:http2 servers and clients, and curl, on port 0.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { resolve } from 'node:path';
import * as tls from 'node:tls';
import {
  FIXTURES,
  httpUpstream,
  onCleanup,
  pump,
  request,
  resolveConfig,
  startProxy,
  startProxyListeners,
  waitFor,
} from '../support/helpers';

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

interface H2Upstream {
  port: number;
  url: string;
  /** Every session the upstream accepted. */
  sessions: http2.ServerHttp2Session[];
  /** Most streams open at once on any one session. */
  peak: number;
}

/** A node:http2 upstream, h2c unless `secure`; `onStream` answers each stream. */
async function h2Upstream(
  onStream: (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    session: http2.ServerHttp2Session,
  ) => void,
  options: { secure?: boolean; settings?: http2.Settings } = {},
): Promise<H2Upstream> {
  const server = options.secure
    ? http2.createSecureServer({
        cert: readFileSync(resolve(FIXTURES, 'server.pem')),
        key: readFileSync(resolve(FIXTURES, 'server-key.pem')),
        settings: options.settings,
      })
    : http2.createServer({ settings: options.settings });
  const up: H2Upstream = { port: 0, url: '', sessions: [], peak: 0 };
  const open = new Map<http2.ServerHttp2Session, number>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    up.sessions.push(s);
    s.on('error', () => undefined);
  });
  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    const session = stream.session as http2.ServerHttp2Session;
    open.set(session, (open.get(session) ?? 0) + 1);
    up.peak = Math.max(up.peak, open.get(session)!);
    stream.on('error', () => undefined);
    stream.once('close', () => open.set(session, open.get(session)! - 1));
    onStream(stream, headers, session);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  up.port = (server.address() as net.AddressInfo).port;
  up.url = `${options.secure ? 'https' : 'h2c'}://127.0.0.1:${up.port}`;
  onCleanup(() => {
    for (const s of up.sessions) s.destroy();
    return new Promise((r) => server.close(() => r(undefined)));
  });
  return up;
}

/** Reads the request body, then answers with what the upstream saw. */
function echo(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  let body = '';
  stream.on('data', (d: Buffer) => (body += d.toString()));
  stream.on('end', () => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify({ headers, body }));
  });
}

function h2Session(url: string): http2.ClientHttp2Session {
  const s = http2.connect(url, { rejectUnauthorized: false, servername: 'localhost' });
  s.on('error', () => undefined);
  onCleanup(() => s.destroy());
  return s;
}

interface H2Answer {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: string;
}

function h2Ask(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<H2Answer> {
  return new Promise((ok, fail) => {
    const r = s.request(headers);
    const answer: H2Answer = { headers: {}, trailers: {}, body: '' };
    r.on('response', (h) => (answer.headers = h));
    r.on('trailers', (h: http2.IncomingHttpHeaders) => (answer.trailers = h));
    r.on('data', (d: Buffer) => (answer.body += d.toString()));
    r.on('end', () => ok(answer));
    r.on('error', fail);
    r.end(body);
  });
}

/** A request on a keep-alive agent of one socket, so that HTTP/1.1 client connections are reused too. */
function get(port: number, path: string, method = 'GET', body?: string): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const r = http.request({ port, host: '127.0.0.1', path, method, agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => ok({ status: res.statusCode!, body: text }));
      res.on('error', fail);
    });
    r.on('error', fail);
    r.end(body);
  });
}

describe('HTTP/2 to upstreams', () => {
  it('h2c://: requests, bodies and fields cross as HTTP/2 (RFC 9113 §8.3), on one session', async () => {
    const up = await h2Upstream(echo);
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const a = JSON.parse((await get(proxy.port, '/a?b=1')).body) as { headers: Record<string, string>; body: string };
    assert.equal(a.headers[':method'], 'GET');
    assert.equal(a.headers[':path'], '/a?b=1');
    assert.equal(a.headers[':scheme'], 'http');
    assert.equal(a.headers[':authority'], `127.0.0.1:${up.port}`);
    assert.equal(a.headers.host, undefined, 'Host becomes :authority');
    assert.equal(a.headers.connection, undefined);
    assert.equal(a.headers.te, 'trailers');
    assert.equal(a.headers['x-forwarded-proto'], 'http');
    const post = await get(proxy.port, '/p', 'POST', 'x'.repeat(200_000));
    const p = JSON.parse(post.body) as { headers: Record<string, string>; body: string };
    assert.equal(p.headers[':method'], 'POST');
    assert.equal(p.headers['content-length'], '200000');
    assert.equal(p.body.length, 200_000);
    assert.equal(a.headers.via, '1.1 switchyard');
    assert.equal((await request(`${proxy.url}/via`)).headers.via, '2 switchyard', 'the answer came over HTTP/2');
    assert.equal(up.sessions.length, 1, 'every request on one session');
  });

  it('https:// with http2: ALPN h2, the certificate verified', async () => {
    const up = await h2Upstream(echo, { secure: true });
    const proxy = await startProxy({
      upstreams: [{ url: up.url, http2: true, ca: resolve(FIXTURES, 'ca.pem'), servername: 'localhost' }],
    });
    const a = JSON.parse((await get(proxy.port, '/tls')).body) as { headers: Record<string, string> };
    assert.equal(a.headers[':scheme'], 'https');
    assert.equal(a.headers[':path'], '/tls');
    // Without the CA the member's certificate is not trusted: 502, never an unverified exchange.
    const untrusted = await startProxy({ upstreams: [{ url: up.url, http2: true }] });
    assert.equal((await get(untrusted.port, '/')).status, 502);
  });

  it("relays the upstream's trailers to HTTP/1.1 clients (last chunk) and to HTTP/2 clients that sent TE: trailers", async () => {
    const up = await h2Upstream((stream) => {
      stream.respond({ ':status': 200 }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc', 'content-type': 'text/evil' }));
      stream.end('body');
    });
    const proxy = await startProxy({
      listen: ['127.0.0.1:0', { address: '127.0.0.1:0', h2c: true }],
      upstreams: [{ url: up.url }],
    });
    const trailers = await new Promise<Record<string, string>>((ok, fail) => {
      http
        .get({ port: proxy.port, host: '127.0.0.1', agent: false, headers: { te: 'trailers' } }, (res) => {
          res.resume();
          res.on('end', () => ok(res.trailers as Record<string, string>));
          res.on('error', fail);
        })
        .on('error', fail);
    });
    assert.deepEqual(trailers, { 'x-checksum': 'abc' }, 'content-type may not travel in trailers');
    const listeners = await startProxyListeners({
      listen: [{ address: '127.0.0.1:0', h2c: true }],
      upstreams: [{ url: up.url }],
    });
    const s = h2Session(`http://127.0.0.1:${listeners.ports[0]}`);
    const withTe = await h2Ask(s, { ':path': '/', te: 'trailers' });
    assert.equal(withTe.body, 'body');
    assert.equal(withTe.trailers['x-checksum'], 'abc');
    const without = await h2Ask(s, { ':path': '/' });
    assert.equal(without.body, 'body');
    assert.equal(without.trailers['x-checksum'], undefined);
  });

  it('multiplexes within the maxConcurrentStreams the member allows, and queues past it', async () => {
    const up = await h2Upstream(
      (stream, headers) =>
        setTimeout(
          () => !stream.destroyed && (stream.respond({ ':status': 200 }), stream.end(String(headers[':path']))),
          20,
        ),
      { settings: { maxConcurrentStreams: 4 } },
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { maxConnections: 1 } });
    // Settle the member's SETTINGS first: the limit applies from then on.
    await get(proxy.port, '/warm');
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => get(proxy.port, `/n${i}`)));
    assert.deepEqual(
      answers.map((a) => a.body),
      Array.from({ length: 30 }, (_, i) => `/n${i}`),
    );
    assert.equal(up.sessions.length, 1, 'one connection (pool.maxConnections: 1)');
    assert.ok(up.peak <= 4, `at most 4 streams at once; saw ${up.peak}`);
    assert.equal(up.peak, 4, 'and the session was used up to its limit');
  });

  it('opens another session when one is full, up to maxConnections', async () => {
    const up = await h2Upstream(
      (stream) => setTimeout(() => !stream.destroyed && (stream.respond({ ':status': 200 }), stream.end('ok')), 30),
      { settings: { maxConcurrentStreams: 2 } },
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { maxConnections: 3 } });
    await get(proxy.port, '/warm');
    const answers = await Promise.all(Array.from({ length: 12 }, () => get(proxy.port, '/')));
    assert.ok(answers.every((a) => a.status === 200 && a.body === 'ok'));
    assert.ok(up.sessions.length >= 2 && up.sessions.length <= 3, `sessions: ${up.sessions.length}`);
  });

  for (const reused of [false, true]) {
    const on = reused ? 'on a reused session' : 'on a fresh session';

    it(`a GOAWAY sends the streams it left unprocessed to a new session, bodiless POSTs included, ${on}`, async () => {
      let goneAway = false;
      const up = await h2Upstream((stream, headers, session) => {
        if (headers[':path'] === '/warm' || goneAway) {
          echo(stream, headers);
          return;
        }
        // The first stream of the burst is answered; the rest arrive past the GOAWAY's last id.
        goneAway = true;
        session.goaway(NGHTTP2_NO_ERROR, stream.id);
        echo(stream, headers);
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }], pool: { maxConnections: 1 } });
      if (reused) await get(proxy.port, '/warm');
      // Without bodies: a refused stream whose body bytes had left cannot be sent again (they are gone).
      const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => get(proxy.port, `/p${i}`, 'POST')));
      for (const [i, a] of answers.entries()) {
        assert.equal(a.status, 200);
        assert.equal((JSON.parse(a.body) as { headers: Record<string, string> }).headers[':path'], `/p${i}`);
      }
      assert.ok(up.sessions.length >= 2, 'a new session took the refused streams');
    });

    it(`a stream the upstream resets after taking a POST is a 502, not sent again, ${on}`, async () => {
      let posts = 0;
      const up = await h2Upstream((stream, headers) => {
        if (headers[':path'] === '/warm') return echo(stream, headers);
        posts++;
        stream.close(NGHTTP2_INTERNAL_ERROR);
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      if (reused) await get(proxy.port, '/warm');
      const answer = await get(proxy.port, '/p', 'POST', 'data');
      assert.equal(answer.status, 502);
      assert.equal(posts, 1);
      // The session goes on for the next request.
      assert.equal((await get(proxy.port, '/warm')).status, 200);
    });

    it(`an upstream that drops the connection mid-response cuts the client; nothing hangs, ${on}`, async () => {
      const up = await h2Upstream((stream, headers, session) => {
        if (headers[':path'] === '/warm') return echo(stream, headers);
        stream.respond({ ':status': 200 });
        stream.write('partial');
        setTimeout(() => session.destroy(), 20);
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      if (reused) await get(proxy.port, '/warm');
      await assert.rejects(get(proxy.port, '/cut'), /aborted|socket hang up|ECONNRESET/);
      assert.equal((await get(proxy.port, '/warm')).status, 200, 'a new session serves the next request');
    });

    it(`an upstream that never answers is a 504 after timeouts.responseHeader, ${on}`, async () => {
      const up = await h2Upstream((stream, headers) => {
        if (headers[':path'] === '/warm') echo(stream, headers);
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }], timeouts: { responseHeader: 200 } });
      if (reused) await get(proxy.port, '/warm');
      assert.equal((await get(proxy.port, '/stall')).status, 504);
    });
  }

  it('a member that refuses connections: 502, and the next member takes the request', async () => {
    const up = await h2Upstream(echo);
    const proxy = await startProxy({ upstreams: [{ url: 'h2c://127.0.0.1:1' }, { url: up.url }] });
    for (let i = 0; i < 4; i++) assert.equal((await get(proxy.port, `/r${i}`, 'POST', 'x')).status, 200);
    const alone = await startProxy({ upstreams: [{ url: 'h2c://127.0.0.1:1' }] });
    assert.equal((await get(alone.port, '/')).status, 502);
  });

  it('a slow client reader holds the upstream stream back instead of buffering it (flow control)', async () => {
    let written = (): number => 0;
    const up = await h2Upstream((stream) => {
      stream.respond({ ':status': 200 });
      written = pump(stream, 64 * 1024 * 1024, { end: true, stop: () => stream.destroyed });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await new Promise<http.IncomingMessage>((ok) =>
      http.get({ port: proxy.port, host: '127.0.0.1', agent: false }, ok),
    );
    res.pause();
    await new Promise((r) => setTimeout(r, 300));
    const stalled = written();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(written(), stalled, 'the upstream stopped writing while the client read nothing');
    assert.ok(written() < 16 * 1024 * 1024, `upstream wrote ${written()} bytes to a client that read none`);
    res.destroy();
  });

  it('health checks speak HTTP/2 to HTTP/2 members: a failing one is taken out', async () => {
    const answer =
      (name: string, healthy: boolean) => (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
        stream.respond({ ':status': headers[':path'] === '/health' && !healthy ? 503 : 200 });
        stream.end(name);
      };
    const sick = await h2Upstream(answer('sick', false));
    const fine = await h2Upstream(answer('fine', true));
    const proxy = await startProxy({
      pools: {
        a: { members: [{ url: sick.url }, { url: fine.url }], healthCheck: { path: '/health', interval: 20, fall: 1 } },
      },
    });
    await waitFor(async () => {
      const bodies = await Promise.all(Array.from({ length: 4 }, () => get(proxy.port, '/')));
      return bodies.every((b) => b.body === 'fine');
    });
    const bodies = await Promise.all(Array.from({ length: 6 }, () => get(proxy.port, '/')));
    assert.deepEqual(new Set(bodies.map((b) => b.body)), new Set(['fine']));
  });

  it('refuses http2 on an http:// member, naming the key', () => {
    assert.throws(
      () => resolveConfig({ upstreams: [{ url: 'http://127.0.0.1:1', http2: true }] }),
      /upstreams\[0\]\.http2: got true with "http:\/\/127\.0\.0\.1:1"; expected an https:\/\/ url/,
    );
    assert.throws(
      () => resolveConfig({ listen: [{ address: '127.0.0.1:0', h2c: true, tls: {} }], tls: {} }),
      /listen\[0\]\.h2c/,
    );
  });
});

describe('HTTP/2 with prior knowledge (h2c listeners)', () => {
  it('takes HTTP/2 from a client that opens with the preface, and HTTP/1.1 as before on the same listener', async () => {
    const up = await httpUpstream((req, res) => res.end(`${req.httpVersion} ${req.url}`));
    const { ports } = await startProxyListeners({
      listen: [{ address: '127.0.0.1:0', h2c: true }],
      upstreams: [{ url: up.url }],
    });
    const s = h2Session(`http://127.0.0.1:${ports[0]}`);
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => h2Ask(s, { ':path': `/h2/${i}` })));
    assert.deepEqual(
      answers.map((a) => a.body),
      Array.from({ length: 10 }, (_, i) => `1.1 /h2/${i}`),
    );
    const h1 = await request(`http://127.0.0.1:${ports[0]}/h1`);
    assert.equal(h1.body.toString(), '1.1 /h1');
  });

  it('server.http2: false keeps HTTPS listeners to HTTP/1.1 while an h2c listener still takes HTTP/2', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const { ports } = await startProxyListeners({
      listen: [
        { address: '127.0.0.1:0', tls: {} },
        { address: '127.0.0.1:0', h2c: true },
      ],
      tls: { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') },
      server: { http2: false },
      upstreams: [{ url: up.url }],
    });
    const protocol = await new Promise<string | false | null>((ok, fail) => {
      const s = tls.connect(
        { port: ports[0], host: '127.0.0.1', ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false },
        () => {
          ok(s.alpnProtocol);
          s.destroy();
        },
      );
      s.on('error', fail);
    });
    assert.equal(protocol, 'http/1.1');
    const s = h2Session(`http://127.0.0.1:${ports[1]}`);
    assert.equal((await h2Ask(s, { ':path': '/' })).body, 'ok');
  });

  it('a plain listener without h2c answers the preface as HTTP/1.1 would: 400', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const s = h2Session(`http://127.0.0.1:${proxy.port}`);
    await assert.rejects(h2Ask(s, { ':path': '/' }));
  });

  it('curl --http2-prior-knowledge', async function () {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const { ports } = await startProxyListeners({
      listen: [{ address: '127.0.0.1:0', h2c: true }],
      upstreams: [{ url: up.url }],
    });
    const curl = await new Promise<{ stdout: string; missing: boolean }>((ok) =>
      execFile(
        'curl',
        [
          '-s',
          '--max-time',
          '10',
          '--http2-prior-knowledge',
          '-w',
          ' %{http_version}',
          `http://127.0.0.1:${ports[0]}/`,
        ],
        (err, stdout) => ok({ stdout, missing: (err as NodeJS.ErrnoException | null)?.code === 'ENOENT' }),
      ),
    );
    if (curl.missing) this.skip();
    assert.equal(curl.stdout, 'ok 2');
  });
});
