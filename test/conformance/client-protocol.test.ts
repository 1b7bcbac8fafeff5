import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as net from 'node:net';
import {
  completeResponse,
  delay,
  httpUpstream,
  memberPool,
  rawExchange,
  rawUpstream,
  startProxy,
  waitFor,
} from '../support/helpers';

/** Split a byte string holding several responses with Content-Length bodies. */
function responses(received: string): Array<{ head: string; body: string }> {
  const out: Array<{ head: string; body: string }> = [];
  let rest = received;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) break;
    const head = rest.slice(0, end);
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    const len = m === null ? 0 : Number(m[1]);
    out.push({ head, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

describe('client side of the protocol', () => {
  it('answers pipelined requests in order, each once', async () => {
    const up = await httpUpstream(async (req, res) => {
      // Later requests finish first upstream-side; the client must still see request order.
      await delay(req.url === '/1' ? 60 : 5);
      res.end(`body of ${req.url}`);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const raw = [1, 2, 3].map((i) => `GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n`).join('');
    const got = await rawExchange(proxy.port, raw, (r) => responses(r).length === 3);
    assert.deepEqual(
      responses(got).map((r) => r.body),
      ['body of /1', 'body of /2', 'body of /3'],
    );
  });

  it('answers valid pipelined requests before the 400 for a broken one behind them, then closes', async () => {
    const seen: string[] = [];
    const up = await httpUpstream(async (req, res) => {
      seen.push(req.url!);
      await delay(30);
      res.end(`body of ${req.url}`);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const raw =
      'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n';
    const got = await rawExchange(proxy.port, raw);
    const parts = responses(got);
    assert.deepEqual(
      parts.map((p) => p.body),
      ['body of /1', 'body of /2', '400 Bad Request (SWY_ERR_BAD_REQUEST)\n'],
    );
    assert.match(parts[2].head, /Connection: close/);
    assert.deepEqual(seen, ['/1', '/2']);
  });

  it('closes after an HTTP/1.0 request without keep-alive, delimiting an unsized body by close', async () => {
    const up = await rawUpstream((s) =>
      s.once('data', () => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n')),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.0\r\nHost: a\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(got, /transfer-encoding/i);
    assert.match(got, /\r\nConnection: close\r\n/);
    assert.ok(got.endsWith('\r\n\r\nhello'), JSON.stringify(got));
  });

  it('keeps an HTTP/1.0 keep-alive client open when the body is sized', async () => {
    const up = await httpUpstream((_req, res) => res.end('sized'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const raw = 'GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n';
    const got = await rawExchange(proxy.port, raw + raw, (r) => responses(r).length === 2);
    const [first] = responses(got);
    assert.match(first.head, /\r\nConnection: keep-alive/);
    assert.equal(first.body, 'sized');
  });

  it('re-frames an unsized upstream body as chunked for HTTP/1.1 clients', async () => {
    const up = await rawUpstream((s) =>
      s.once('data', () => s.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close')),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', (r) => r.endsWith('0\r\n\r\n'));
    assert.match(got, /\r\nTransfer-Encoding: chunked\r\n/);
    assert.ok(got.endsWith('\r\n\r\nb\r\nuntil close\r\n0\r\n\r\n'), JSON.stringify(got));
  });

  it('sends no body for HEAD, 204 and 304, and keeps the connection usable', async () => {
    const up = await rawUpstream((s) => {
      let n = 0;
      s.on('data', () => {
        n++;
        if (n === 1)
          s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'); // HEAD: length, no body
        else if (n === 2) s.write('HTTP/1.1 204 No Content\r\n\r\n');
        else s.write('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n');
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const sock = net.connect(proxy.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => {
      got += d.toString('latin1');
    });
    const ask = async (req: string, count: number): Promise<void> => {
      sock.write(req);
      await waitFor(() => (got.match(/HTTP\/1\.1 /g) ?? []).length >= count);
    };
    await ask('HEAD / HTTP/1.1\r\nHost: a\r\n\r\n', 1);
    await ask('GET /204 HTTP/1.1\r\nHost: a\r\n\r\n', 2);
    await ask('GET /304 HTTP/1.1\r\nHost: a\r\n\r\n', 3);
    await delay(50);
    sock.destroy();
    const parts = got.split(/(?=HTTP\/1\.1 )/);
    assert.equal(parts.length, 3, JSON.stringify(got));
    assert.match(parts[0], /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 5\r\n[\s\S]*\r\n\r\n$/);
    assert.match(parts[1], /^HTTP\/1\.1 204 No Content\r\n[\s\S]*\r\n\r\n$/);
    assert.doesNotMatch(parts[1], /transfer-encoding|content-length/i);
    assert.match(parts[2], /^HTTP\/1\.1 304 Not Modified\r\n[\s\S]*ETag: "x"\r\n[\s\S]*\r\n\r\n$/);
    assert.equal(up.connections.length, 1);
  });

  it('answers Expect: 100-continue, then streams the body upstream', async () => {
    let seen: { expect: string | undefined; body: string } | null = null;
    const up = await httpUpstream((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        seen = { expect: req.headers.expect, body };
        res.end('stored');
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const sock = net.connect(proxy.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => {
      got += d.toString('latin1');
    });
    sock.write('PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    await waitFor(() => got.includes('\r\n\r\n'));
    assert.equal(got, 'HTTP/1.1 100 Continue\r\n\r\n');
    sock.write('hello');
    await waitFor(() => completeResponse(got.slice('HTTP/1.1 100 Continue\r\n\r\n'.length)));
    sock.destroy();
    assert.match(got, /HTTP\/1\.1 200 OK[\s\S]*stored$/);
    // The expectation was met by the proxy; it is not passed on.
    assert.deepEqual(seen, { expect: undefined, body: 'hello' });
  });

  it('answers 417 to an expectation it cannot meet', async () => {
    const up = await httpUpstream((_req, res) => res.end('no'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n', completeResponse);
    assert.match(got, /^HTTP\/1\.1 417 /);
  });

  it('answers 400 to a malformed request and closes', async () => {
    const up = await httpUpstream((_req, res) => res.end('no'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*Connection: close/);
    assert.equal(up.connections.length, 0);
  });

  it('answers 431 to a request head over server.maxHeaderSize', async () => {
    const up = await httpUpstream((_req, res) => res.end('no'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { maxHeaderSize: 2048 } });
    const got = await rawExchange(proxy.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(4096)}\r\n\r\n`);
    assert.match(got, /^HTTP\/1\.1 431 /);
  });

  it('answers 408 to a client that sends its head too slowly (slowloris)', async () => {
    const up = await httpUpstream((_req, res) => res.end('no'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { headersTimeout: 150 } });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ');
    assert.match(got, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('answers 408 when a head pipelined behind a complete request in the same write stalls', async () => {
    // The second request begins inside llhttp, after the first completed: its head's clock must
    // start there, not wait for the keep-alive timeout (5 s, past this exchange's 3 s limit).
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { headersTimeout: 150 } });
    const got = await rawExchange(
      proxy.port,
      'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX-Slow: ',
      undefined,
      3000,
    );
    const parts = responses(got);
    assert.equal(parts[0]?.body, 'ok');
    assert.match(parts[1]?.head ?? '', /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('relays bodies of requests pipelined around one without a body, each to its own request', async () => {
    const up = await httpUpstream(async (req, res) => {
      let body = '';
      for await (const chunk of req) body += String(chunk);
      res.end(`${req.url}:${body}`);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const raw =
      'POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' +
      'GET /2 HTTP/1.1\r\nHost: a\r\n\r\n' +
      'POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' +
      'GET /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n';
    const got = await rawExchange(proxy.port, raw, (r) => responses(r).length === 4);
    assert.deepEqual(
      responses(got).map((r) => r.body),
      ['/1:hello', '/2:', '/3:abc', '/4:'],
    );
  });

  it('skips a CRLF before a keep-alive request, and lets a lone CRLF idle out silently', async () => {
    const up = await httpUpstream((req, res) => res.end(`body of ${req.url}`));
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      server: { headersTimeout: 100, keepAliveTimeout: 400 },
    });
    const socket = net.connect(proxy.port, '127.0.0.1');
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
    });
    const closed = once(socket, 'close');
    socket.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor(() => responses(got).length === 1);
    socket.write('\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor(() => responses(got).length === 2);
    // A blank line is no request (llhttp skips it): no 408 after headersTimeout, only the
    // keep-alive timeout's close.
    socket.write('\r\n');
    await closed;
    assert.deepEqual(
      responses(got).map((r) => r.body),
      ['body of /1', 'body of /2'],
    );
  });

  it('starts the head clock for a request behind a CRLF on a parser a cut-off head left behind', async () => {
    // Parsers are pooled: the one a client left mid-head goes to the next connection.
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { headersTimeout: 150 } });
    const cut = net.connect(proxy.port, '127.0.0.1');
    cut.on('error', () => undefined);
    cut.write('GET / HTTP/1.1\r\nHost: a\r\nX-Partial: ');
    await waitFor(() => proxy.server.connections === 1);
    await delay(20);
    cut.destroy();
    await waitFor(() => proxy.server.connections === 0);
    const got = await rawExchange(proxy.port, '\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Slow: ', undefined, 3000);
    assert.match(got, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('answers 408 to a client that sends its body too slowly', async () => {
    const up = await httpUpstream((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { requestTimeout: 200 } });
    const got = await rawExchange(proxy.port, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc');
    assert.match(got, /^HTTP\/1\.1 408 /);
  });

  it('closes an idle keep-alive client connection after server.keepAliveTimeout', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { keepAliveTimeout: 150 } });
    const got = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    // rawExchange resolves on close: one full response, then the idle connection was closed.
    assert.equal(responses(got).length, 1);
    assert.equal(proxy.server.connections, 0);
  });

  it('passes header bytes outside ASCII through unchanged, both ways', async () => {
    let seen: Buffer | null = null;
    const up = await rawUpstream((s) =>
      s.once('data', (d) => {
        seen = d;
        s.write(
          Buffer.concat([
            Buffer.from('HTTP/1.1 200 OK\r\nX-Back: caf'),
            Buffer.from([0xe9]),
            Buffer.from('\r\nContent-Length: 0\r\n\r\n'),
          ]),
        );
      }),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const req = Buffer.concat([
      Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf'),
      Buffer.from([0xe9]),
      Buffer.from('\r\n\r\n'),
    ]);
    const got = await rawExchange(proxy.port, req, completeResponse);
    assert.ok(
      seen !== null && (seen as Buffer).includes(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0d, 0x0a])),
      'upstream got the byte 0xe9 as is',
    );
    assert.ok(
      Buffer.from(got, 'latin1').includes(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0d, 0x0a])),
      'client got the byte 0xe9 as is',
    );
  });

  it('takes a client FIN mid-exchange as the client leaving, and aborts the upstream exchange', async () => {
    const up = await httpUpstream(() => {
      /* never answers */
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const sock = net.connect(proxy.port, '127.0.0.1');
    sock.on('error', () => undefined);
    sock.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor(() => up.connections.length === 1);
    sock.end();
    await waitFor(() => up.connections[0].destroyed);
    assert.equal(memberPool(proxy).stats().open, 0);
  });
});
