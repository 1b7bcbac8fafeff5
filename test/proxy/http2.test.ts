/**
 * HTTP/2 to clients over TLS (ALPN h2): Node's http2 client and curl through the proxy to an
 * HTTP/1.1 upstream, over real sockets on port 0.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as http2 from 'node:http2';
import { resolve } from 'node:path';
import * as tls from 'node:tls';
import { FIXTURES, httpUpstream, onCleanup, startProxy, waitFor } from '../support/helpers';

const TLS = { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') };

interface Answer {
  headers: http2.IncomingHttpHeaders;
  body: string;
}

function session(port: number): http2.ClientHttp2Session {
  const s = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false, servername: 'localhost' });
  s.on('error', () => undefined);
  onCleanup(() => s.destroy());
  return s;
}

function ask(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<Answer> {
  return new Promise((ok, fail) => {
    const r = s.request(headers);
    let got: http2.IncomingHttpHeaders = {};
    let text = '';
    r.on('response', (h) => (got = h));
    r.on('data', (d: Buffer) => (text += d.toString()));
    r.on('end', () => ok({ headers: got, body: text }));
    r.on('error', fail);
    r.end(body);
  });
}

describe('HTTP/2 to clients (TLS, ALPN h2)', () => {
  it('proxies requests and bodies both ways, turning fields into HTTP/1.1 and back (RFC 9113 §8)', async () => {
    const up = await httpUpstream((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        res.setHeader('Set-Cookie', ['a=1', 'b=2']);
        res.setHeader('Keep-Alive', 'timeout=5');
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            httpVersion: req.httpVersion,
            host: req.headers.host,
            proto: req.headers['x-forwarded-proto'],
            cookie: req.headers.cookie,
            via: req.headers.via,
            te: req.headers['transfer-encoding'] ?? null,
            length: req.headers['content-length'] ?? null,
            body,
          }),
        );
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS, preserveHost: true });
    const s = session(proxy.port);
    const get = await ask(s, { ':path': '/a?b=1', cookie: ['c1=1', 'c2=2'] });
    assert.equal(get.headers[':status'], 200);
    assert.deepEqual(get.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(get.headers['keep-alive'], undefined, 'connection-specific fields are not relayed');
    assert.equal(get.headers.via, '1.1 switchyard');
    const seen = JSON.parse(get.body) as Record<string, string | null>;
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/a?b=1');
    assert.equal(seen.httpVersion, '1.1');
    assert.equal(seen.host, `localhost:${proxy.port}`, ':authority becomes Host');
    assert.equal(seen.proto, 'https');
    assert.equal(seen.cookie, 'c1=1; c2=2', 'cookie crumbs joined');
    assert.equal(seen.via, '2 switchyard', 'Via names the version the request came in with');
    // A body of undeclared length goes chunked; a declared one keeps its length.
    const post = JSON.parse((await ask(s, { ':path': '/p', ':method': 'POST' }, 'x'.repeat(100_000))).body) as Record<
      string,
      string
    >;
    assert.equal(post.te, 'chunked');
    assert.equal(post.body.length, 100_000);
    const sized = JSON.parse(
      (await ask(s, { ':path': '/p', ':method': 'PUT', 'content-length': '5' }, 'hello')).body,
    ) as Record<string, string>;
    assert.equal(sized.length, '5');
    assert.equal(sized.te, null);
    assert.equal(sized.body, 'hello');
  });

  it('multiplexes many streams on one connection', async () => {
    const up = await httpUpstream((req, res) => setTimeout(() => res.end(req.url), 5));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS });
    const s = session(proxy.port);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => ask(s, { ':path': `/n${i}` })));
    assert.deepEqual(
      answers.map((a) => a.body),
      Array.from({ length: 50 }, (_, i) => `/n${i}`),
    );
    assert.equal(proxy.server.connections, 1, 'one client connection');
  });

  it('refuses a Host that disagrees with :authority, and answers failures with their status', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({
      pools: { up: { members: [{ url: up.url }] }, down: { members: [{ url: 'http://127.0.0.1:1' }] } },
      routes: [
        { match: { path: '/down' }, pool: 'down' },
        { match: {}, pool: 'up' },
      ],
      tls: TLS,
    });
    const s = session(proxy.port);
    const bad = await ask(s, { ':path': '/', ':authority': 'a.example', host: 'b.example' });
    assert.equal(bad.headers[':status'], 400);
    const down = await ask(s, { ':path': '/down' });
    assert.equal(down.headers[':status'], 502);
    // The session goes on after both.
    assert.equal((await ask(s, { ':path': '/' })).body, 'ok');
  });

  it('a stream the client cancels mid-response aborts its upstream request; the session goes on', async () => {
    let upstreamClosed = false;
    const up = await httpUpstream((req, res) => {
      if (req.url === '/slow') {
        res.write('part');
        res.on('close', () => (upstreamClosed = true));
        return;
      }
      res.end('ok');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS });
    const s = session(proxy.port);
    const r = s.request({ ':path': '/slow' });
    r.on('error', () => undefined);
    await new Promise((ok) => r.once('data', ok));
    r.close(http2.constants.NGHTTP2_CANCEL);
    await waitFor(() => upstreamClosed);
    assert.equal((await ask(s, { ':path': '/after' })).body, 'ok');
  });

  it('drain sends GOAWAY: the stream in flight finishes, the connection then closes', async () => {
    let release: (() => void) | null = null;
    const up = await httpUpstream((req, res) => {
      if (req.url === '/slow') release = () => res.end('finished');
      else res.end('ok');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS });
    const s = session(proxy.port);
    const goaway = new Promise((ok) => s.once('goaway', ok));
    const slow = ask(s, { ':path': '/slow' });
    await waitFor(() => release !== null);
    const drained = proxy.server.drain(10_000);
    await goaway;
    release!();
    assert.equal((await slow).body, 'finished');
    await drained;
    assert.equal(proxy.server.connections, 0);
  });

  it('curl --http2 gets HTTP/2; an HTTP/1.1-only client still gets HTTP/1.1 on the same listener', async function () {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS });
    // Asynchronously: the proxy answering it runs in this process.
    const curl = await new Promise<{ stdout: string; missing: boolean }>((ok) =>
      execFile(
        'curl',
        ['-sk', '--max-time', '10', '--http2', '-w', ' %{http_version}', `https://127.0.0.1:${proxy.port}/`],
        (err, stdout) => ok({ stdout, missing: (err as NodeJS.ErrnoException | null)?.code === 'ENOENT' }),
      ),
    );
    if (curl.missing) this.skip();
    assert.equal(curl.stdout, 'ok 2');
    const h1 = await new Promise<string>((ok, fail) => {
      const s = tls.connect({
        port: proxy.port,
        host: '127.0.0.1',
        ALPNProtocols: ['http/1.1'],
        rejectUnauthorized: false,
      });
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.on('end', () => ok(text));
      s.on('error', fail);
      s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    });
    assert.match(h1, /^HTTP\/1\.1 200 /);
  });

  it('server.http2: false offers HTTP/1.1 only', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS, server: { http2: false } });
    const protocol = await new Promise<string | false | null>((ok, fail) => {
      const s = tls.connect(
        { port: proxy.port, host: '127.0.0.1', ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false },
        () => {
          ok(s.alpnProtocol);
          s.destroy();
        },
      );
      s.on('error', fail);
    });
    assert.equal(protocol, 'http/1.1');
  });

  it('a body over server.maxBodySize is a 413, declared or streamed; the session goes on', async () => {
    let bodies = 0;
    const up = await httpUpstream((req, res) => {
      req.on('data', () => undefined);
      req.on('end', () => {
        bodies++;
        res.end('ok');
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], tls: TLS, server: { maxBodySize: 1000 } });
    const s = session(proxy.port);
    const declared = await ask(
      s,
      { ':path': '/', ':method': 'POST', 'content-length': '5000' },
      'x'.repeat(5000),
    ).catch(() => null);
    assert.equal(declared?.headers[':status'], 413);
    const streamed = await new Promise<number>((ok, fail) => {
      const r = s.request({ ':path': '/', ':method': 'POST' });
      r.on('response', (h) => ok(Number(h[':status'])));
      r.on('error', fail);
      r.resume();
      r.write('y'.repeat(800));
      setTimeout(() => r.end('y'.repeat(800)), 20);
    });
    assert.equal(streamed, 413);
    assert.equal(bodies, 0, 'no body past the limit completed at the upstream');
    assert.equal((await ask(s, { ':path': '/', ':method': 'POST' }, 'small')).body, 'ok');
  });
});
