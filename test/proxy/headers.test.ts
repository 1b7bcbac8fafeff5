import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { completeResponse, httpUpstream, rawExchange, rawUpstream, request, startProxy } from '../support/helpers';

/** An upstream that answers with the headers it received, as JSON. */
async function echoHeaders() {
  const seen: Array<{ headers: IncomingHttpHeaders; rawHeaders: string[]; url: string }> = [];
  const up = await httpUpstream((req, res) => {
    seen.push({ headers: req.headers, rawHeaders: req.rawHeaders, url: req.url! });
    res.end('ok');
  });
  return { up, seen };
}

/** Send `raw` through a fresh proxy to an echoHeaders upstream: the response, and the headers the upstream got. */
async function upstreamHeadersFor(
  raw: string,
): Promise<{ response: string; headers: IncomingHttpHeaders; upstreamPort: number }> {
  const { up, seen } = await echoHeaders();
  const proxy = await startProxy({ upstreams: [{ url: up.url }] });
  const response = await rawExchange(proxy.port, raw, completeResponse);
  return { response, headers: seen[0].headers, upstreamPort: up.port };
}

describe('request headers', () => {
  it('rewrites Host to the upstream by default', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(`${proxy.url}/a?b=1`, { headers: { host: 'public.example' } });
    assert.equal(res.status, 200);
    assert.equal(seen[0].headers.host, `127.0.0.1:${up.port}`);
    assert.equal(seen[0].url, '/a?b=1');
    assert.equal(seen[0].headers['x-forwarded-host'], 'public.example');
  });

  it('keeps the client Host with preserveHost: true', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], preserveHost: true });
    await request(proxy.url, { headers: { host: 'public.example' } });
    assert.equal(seen[0].headers.host, 'public.example');
  });

  it('removes hop-by-hop headers and every header named in Connection', async () => {
    const raw =
      'GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret, x-other\r\n' +
      'Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n' +
      'Upgrade: h2c\r\nX-Secret: 1\r\nX-Other: 2\r\nX-Kept: 3\r\n\r\n';
    const { response, headers: h } = await upstreamHeadersFor(raw);
    assert.match(response, /^HTTP\/1\.1 200 /);
    for (const name of [
      'connection',
      'keep-alive',
      'proxy-connection',
      'te',
      'trailer',
      'upgrade',
      'x-secret',
      'x-other',
    ]) {
      assert.equal(h[name], undefined, `${name} must not reach the upstream`);
    }
    assert.equal(h['x-kept'], '3');
  });

  it('removes a field named in Connection whatever the case of its letters, and only that field', async () => {
    // '^' is '~' less 0x20, as 'A' is 'a' less 0x20: only letters have a case.
    const raw =
      'GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close, x-1~\r\n' +
      'X-1~: gone\r\nX-1^: kept\r\nx-1~: gone too\r\nClose: gone as well\r\n\r\n';
    const { response, headers: h } = await upstreamHeadersFor(raw);
    assert.match(response, /^HTTP\/1\.1 200 /);
    assert.equal(h['x-1~'], undefined);
    assert.equal(h.close, undefined);
    assert.equal(h['x-1^'], 'kept');
  });

  it('knows field names in any case, and only those names: a one-character miss is an ordinary field', async () => {
    const raw =
      'GET /x HTTP/1.1\r\nhOST: a.example\r\ncONNECTION: X-SECRET\r\nX-SECRET: 1\r\nKEEP-ALIVE: timeout=5\r\n' +
      'tE: trailers\r\nX-FORWARDED-FOR: 6.6.6.6\r\nVIA: 1.0 other\r\n' +
      'Connectiom: a\r\nKeep_Alive: b\r\nX-Forwarded-Fo1: c\r\nVib: d\r\nTf: e\r\n\r\n';
    const { response, headers: h, upstreamPort } = await upstreamHeadersFor(raw);
    assert.match(response, /^HTTP\/1\.1 200 /);
    for (const name of ['connection', 'x-secret', 'keep-alive', 'te'])
      assert.equal(h[name], undefined, `${name} must not reach the upstream`);
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-host'], 'a.example');
    assert.equal(h.via, '1.0 other, 1.1 switchyard');
    assert.equal(h.host, `127.0.0.1:${upstreamPort}`);
    assert.deepEqual([h.connectiom, h.keep_alive, h['x-forwarded-fo1'], h.vib, h.tf], ['a', 'b', 'c', 'd', 'e']);
  });

  it('removes hop-by-hop headers from the response, and names listed in its Connection', async () => {
    const up = await rawUpstream((socket) => {
      socket.once('data', () =>
        socket.write(
          'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n' +
            'Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nTE: trailers\r\n' +
            'X-End: kept\r\nContent-Length: 2\r\n\r\nok',
        ),
      );
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'ok');
    for (const name of ['x-hop', 'proxy-connection', 'trailer', 'upgrade', 'te']) {
      assert.equal(res.headers[name], undefined, `${name} must not reach the client`);
    }
    // Node's own keep-alive framing for the client connection is ours, not the upstream's value.
    assert.notEqual(res.headers['keep-alive'], 'timeout=5');
    assert.equal(res.headers['x-end'], 'kept');
    assert.equal(res.headers.via, '1.1 switchyard');
  });

  it("names the version each message came in with in Via (RFC 9110 §7.6.3): the client's request's, the upstream's answer's", async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const old = await rawExchange(proxy.port, 'GET /old HTTP/1.0\r\nHost: a\r\n\r\n');
    assert.match(old, /\r\nVia: 1\.1 switchyard\r\n/, "the upstream's answer was HTTP/1.1");
    await request(`${proxy.url}/new`);
    assert.deepEqual(
      seen.map((s) => [s.url, s.headers.via]),
      [
        ['/old', '1.0 switchyard'],
        ['/new', '1.1 switchyard'],
      ],
    );
  });

  it("keeps the upstream's Date and response X-Request-Id as sent, whatever their case, and adds a Date only when missing", async () => {
    const up = await rawUpstream((socket) => {
      socket.on('data', (d: Buffer) =>
        socket.write(
          d.includes('/dated')
            ? 'HTTP/1.1 200 OK\r\nDATE: Tue, 01 Jan 2030 00:00:00 GMT\r\nx-request-ID: up-1\r\nContent-Length: 2\r\n\r\nok'
            : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
        ),
      );
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const dated = await rawExchange(proxy.port, 'GET /dated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.deepEqual(dated.match(/^date: .*$/gim), ['DATE: Tue, 01 Jan 2030 00:00:00 GMT']);
    assert.match(dated, /^x-request-ID: up-1$/m);
    const undated = await rawExchange(proxy.port, 'GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(undated.match(/^date: /gim)?.length, 1);
  });

  it('removes a name its Connection lists alone, as it does one in a list', async () => {
    const up = await rawUpstream((socket) => {
      socket.once('data', () =>
        socket.write(
          'HTTP/1.1 200 OK\r\nConnection:  X-Hop \r\nX-Hop: 1\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok',
        ),
      );
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.headers['x-hop'], undefined);
    assert.equal(res.headers['x-end'], 'kept');
  });

  it('sends a new version 4 UUID as X-Request-Id, a different one for each request', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    // More than one batch of IDs (request-id.ts cuts them 128 at a time).
    for (let i = 0; i < 300; i++) assert.equal((await request(proxy.url)).status, 200);
    const ids = seen.map((s) => s.headers['x-request-id']);
    for (const id of ids)
      assert.match(String(id), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(new Set(ids).size, 300);
  });

  it('replaces X-Forwarded-* from an untrusted client', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    await request(proxy.url, {
      headers: {
        host: 'real.example',
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
      },
    });
    const h = seen[0].headers;
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-forwarded-host'], 'real.example');
    assert.equal(h.via, '1.1 switchyard');
  });

  it('gives each connection its own client address in X-Forwarded-For, clients from three addresses at once', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const from = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    // A new connection per request (the helper's agent: false), the three addresses interleaved.
    for (let round = 0; round < 3; round++) {
      await Promise.all(from.map((localAddress) => request(`${proxy.url}/${localAddress}`, { localAddress })));
    }
    assert.equal(seen.length, 9);
    for (const s of seen) assert.equal(s.headers['x-forwarded-for'], s.url.slice(1));
  });

  it('appends to X-Forwarded-For from a trusted proxy and keeps its proto and host', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], trustedProxies: ['127.0.0.0/8'] });
    await request(proxy.url, {
      headers: {
        host: 'edge.internal',
        'x-forwarded-for': '203.0.113.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'www.example',
        via: '1.1 edge',
      },
    });
    const h = seen[0].headers;
    assert.equal(h['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'https');
    assert.equal(h['x-forwarded-host'], 'www.example');
    assert.equal(h.via, '1.1 edge, 1.1 switchyard');
  });

  it('does not let Connection strip the headers the proxy adds', async () => {
    const raw = 'GET / HTTP/1.1\r\nHost: a.example\r\nConnection: X-Forwarded-For, Via, X-Forwarded-Host\r\n\r\n';
    const { headers: h } = await upstreamHeadersFor(raw);
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h.via, '1.1 switchyard');
    assert.equal(h['x-forwarded-host'], 'a.example');
  });

  it('reduces an absolute-form target to its path, never naming another host upstream', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(
      proxy.port,
      'GET http://other.example/x?y=1 HTTP/1.1\r\nHost: a.example\r\n\r\n',
      completeResponse,
    );
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.equal(seen[0].url, '/x?y=1');
    assert.equal(seen[0].headers.host, `127.0.0.1:${up.port}`);
  });

  it('answers CONNECT with 405 instead of dropping the connection', async () => {
    const { up, seen } = await echoHeaders();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 405 /);
    assert.equal(seen.length, 0);
  });
});
