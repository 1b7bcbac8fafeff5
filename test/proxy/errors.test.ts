import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { closedPort, httpUpstream, rawUpstream, request, startProxy, waitFor } from '../support/helpers';

/** Resolves with how a response ended: complete, or aborted after its head. */
function fetchOutcome(url: string): Promise<{ status: number; complete: boolean; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode!, complete: res.complete, body }));
        res.on('error', () => resolve({ status: res.statusCode!, complete: false, body }));
        res.on('aborted', () => resolve({ status: res.statusCode!, complete: false, body }));
      })
      .on('error', reject);
  });
}

describe('errors map to the status a user expects', () => {
  it('502 when the upstream refuses the connection', async () => {
    const proxy = await startProxy({ upstreams: [{ url: `http://127.0.0.1:${await closedPort()}` }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_CONNECT/);
  });

  it('502 when the upstream resets before responding', async () => {
    const up = await rawUpstream((socket) => socket.once('data', () => socket.resetAndDestroy()));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
  });

  it('502 when the upstream closes before responding', async () => {
    const up = await rawUpstream((socket) => socket.once('data', () => socket.end()));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_RESET/);
  });

  it('502 when the upstream sends an invalid response', async () => {
    const up = await rawUpstream((socket) => socket.once('data', () => socket.write('HTTP/1.1 2OO OK\r\n\r\n')));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_PROTOCOL/);
  });

  it('504 when the upstream sends no response head within timeouts.responseHeader', async () => {
    const up = await rawUpstream(() => {
      /* silent */
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }], timeouts: { responseHeader: 150 } });
    const res = await request(proxy.url);
    assert.equal(res.status, 504);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_HEADERS_TIMEOUT/);
  });

  it('aborts the client when the upstream stalls mid-body past timeouts.idle', async () => {
    const up = await rawUpstream((socket) =>
      socket.once('data', () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial')),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }], timeouts: { idle: 150 } });
    const out = await fetchOutcome(proxy.url);
    assert.equal(out.status, 200);
    assert.equal(out.complete, false);
  });

  it('aborts the client, never ends it cleanly, when the upstream closes mid-body', async () => {
    const up = await rawUpstream((socket) =>
      socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial')),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const out = await fetchOutcome(proxy.url);
    assert.equal(out.complete, false);
    assert.equal(out.body, 'partial');
  });

  it('aborts the upstream exchange when the client goes away, and does not reuse that connection', async () => {
    let requests = 0;
    const up = await httpUpstream((req, res) => {
      requests++;
      if (req.url === '/slow') {
        res.writeHead(200);
        res.write('start');
        return;
      } // never ends
      res.end('fast');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    await new Promise<void>((resolve) => {
      const req = http.get(`${proxy.url}/slow`, { agent: false }, (res) =>
        res.once('data', () => {
          req.destroy();
          resolve();
        }),
      );
      req.on('error', () => undefined);
    });
    const slowConn = up.connections[0];
    await waitFor(() => slowConn.destroyed);
    const res = await request(`${proxy.url}/fast`);
    assert.equal(res.body.toString(), 'fast');
    assert.equal(up.connections.length, 2);
    assert.equal(requests, 2);
  });

  it('takes a client reset mid-stream (writes failing under the relay) as the client leaving', async () => {
    const up = await httpUpstream((req, res) => {
      if (req.url !== '/stream') {
        res.end('fast');
        return;
      }
      res.writeHead(200);
      const timer = setInterval(() => res.write(Buffer.alloc(16 * 1024, 'x')), 2);
      res.on('close', () => clearInterval(timer));
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const client = net.connect(proxy.port, '127.0.0.1');
    client.on('error', () => undefined);
    client.write('GET /stream HTTP/1.1\r\nHost: a\r\n\r\n');
    await once(client, 'data');
    client.resetAndDestroy();
    const streamConn = up.connections[0];
    await waitFor(() => streamConn.destroyed);
    const res = await request(`${proxy.url}/fast`);
    assert.equal(res.body.toString(), 'fast');
    await waitFor(() => proxy.server.connections === 0);
  });

  it('never delivers bytes an upstream sends after its response to the next request', async () => {
    const up = await rawUpstream((socket) => {
      socket.on('data', () =>
        socket.write(
          'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled',
        ),
      );
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const first = await request(proxy.url);
    const second = await request(proxy.url);
    assert.equal(first.body.toString(), 'ok');
    assert.equal(second.body.toString(), 'ok');
    // The connection that carried stray bytes was dropped, not pooled.
    assert.equal(up.connections.length, 2);
  });

  for (const [what, response, body] of [
    ['a chunked response', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'ok'],
    ['a 204', 'HTTP/1.1 204 No Content\r\n\r\n', ''],
  ] as const) {
    it(`never delivers bytes an upstream sends after ${what} (parsed to its end by llhttp) to anyone`, async () => {
      const up = await rawUpstream((socket) => {
        socket.on('data', () => socket.write(`${response}HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled`));
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const first = await request(proxy.url);
      const second = await request(proxy.url);
      assert.equal(first.body.toString(), body);
      assert.equal(second.body.toString(), body);
      assert.equal(up.connections.length, 2);
    });
  }

  it('ignores a 1xx and relays the final response', async () => {
    const up = await rawUpstream((socket) =>
      socket.once('data', () =>
        socket.write(
          'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone',
        ),
      ),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 201);
    assert.equal(res.body.toString(), 'done');
  });
});

describe('upstream faults: the response head is checked before anything reaches the client', () => {
  const cases: Array<[string, string]> = [
    [
      'Content-Length with Transfer-Encoding',
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['two different Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
    ['Transfer-Encoding: chunked, chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n'],
    ['an invalid status line', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
  ];
  for (const [name, response] of cases) {
    it(`${name}: 502, and that connection is not reused`, async () => {
      const up = await rawUpstream((socket) => socket.once('data', () => socket.write(response)));
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const res = await request(proxy.url);
      assert.equal(res.status, 502);
      assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_PROTOCOL/);
      await request(proxy.url);
      assert.equal(up.connections.length, 2);
    });
  }

  for (const [name, method, first] of [
    ['HEAD', 'HEAD', 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled'],
    ['304', 'GET', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nsmuggled'],
  ] as const) {
    it(`a body sent after a ${name} response never reaches the next request`, async () => {
      const up = await rawUpstream((socket) => {
        socket.on('data', (d) =>
          socket.write(
            d.toString().startsWith('GET /next') ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean' : first,
          ),
        );
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const res = await request(`${proxy.url}/first`, { method });
      assert.equal(res.body.toString(), '');
      assert.equal((await request(`${proxy.url}/next`)).body.toString(), 'clean');
    });
  }

  it('a body sent after a 204 never reaches the next request', async () => {
    const up = await rawUpstream((socket) => {
      socket.on('data', (d) => {
        if (d.toString().startsWith('GET /204'))
          socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\nsmuggled');
        else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean');
      });
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    assert.equal((await request(`${proxy.url}/204`)).status, 204);
    const next = await request(`${proxy.url}/next`);
    assert.equal(next.body.toString(), 'clean');
  });
});
