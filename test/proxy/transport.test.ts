/**
 * Plain client connections run on their TCP handles (client-transport.ts), or on net.Socket where
 * Node lacks the bindings. Both must behave alike: the rest of the suite covers the handle path
 * in depth; these run the main behaviours over both.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { completeResponse, httpUpstream, rawExchange, request, startProxy, waitFor } from '../support/helpers';

for (const clientSockets of ['handle', 'net'] as const) {
  describe(`plain client connections on ${clientSockets === 'handle' ? 'their TCP handles' : 'net.Socket (the fallback)'}`, () => {
    it('answers pipelined keep-alive requests in order on one connection, then closes on Connection: close', async () => {
      const up = await httpUpstream((req, res) => res.end(`you asked ${req.url}`));
      const proxy = await startProxy({ upstreams: [{ url: up.url }] }, { clientSockets });
      const got = await rawExchange(
        proxy.port,
        'GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      assert.deepEqual(got.match(/you asked \/\w/g), ['you asked /a', 'you asked /b', 'you asked /c']);
      assert.equal((got.match(/Connection: close/g) ?? []).length, 1, 'only the last response closes');
      await waitFor(() => proxy.server.connections === 0);
    });

    it('sends small binary bodies byte for byte, sized and chunked, alongside their heads', async () => {
      // Every byte value; small enough that head and body leave in one write.
      const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const up = await httpUpstream((req, res) => {
        if (req.url === '/chunked') {
          res.write(bytes.subarray(0, 100));
          res.end(bytes.subarray(100));
          return;
        }
        res.setHeader('content-length', bytes.length);
        res.end(bytes);
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] }, { clientSockets });
      for (const path of ['/sized', '/chunked']) {
        const res = await request(`${proxy.url}${path}`);
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, bytes, path);
      }
    });

    it('streams a 4 MiB upload up and a chunked 4 MiB answer down intact', async () => {
      const body = randomBytes(4 * 1024 * 1024);
      const up = await httpUpstream((req, res) => {
        const hash = createHash('sha256');
        req.on('data', (c: Buffer) => hash.update(c));
        req.on('end', () => {
          res.setHeader('x-upload-sha256', hash.digest('hex'));
          // No Content-Length: the proxy frames it as chunked for the client.
          for (let i = 0; i < 64; i++) res.write(body.subarray(i * 65536, (i + 1) * 65536));
          res.end();
        });
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] }, { clientSockets });
      const res = await request(`${proxy.url}/up`, { method: 'POST' }, body);
      const sha = createHash('sha256').update(body).digest('hex');
      assert.equal(res.status, 200);
      assert.equal(res.headers['x-upload-sha256'], sha);
      assert.equal(res.headers['transfer-encoding'], 'chunked');
      assert.equal(createHash('sha256').update(res.body).digest('hex'), sha);
    });

    it('keeps a connection for the next request, and a client that leaves mid-response aborts the upstream exchange', async () => {
      const up = await httpUpstream((req, res) => {
        if (req.url === '/slow') {
          res.writeHead(200);
          res.write('start');
          return;
        } // never ends
        res.end('ok');
      });
      const proxy = await startProxy({ upstreams: [{ url: up.url }] }, { clientSockets });
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const first = await request(proxy.url, { agent });
      const second = await request(proxy.url, { agent });
      assert.deepEqual([first.body.toString(), second.body.toString()], ['ok', 'ok']);
      assert.equal(proxy.server.connections, 1, 'one client connection served both');
      agent.destroy();

      const client = net.connect(proxy.port, '127.0.0.1');
      client.on('error', () => undefined);
      let got = '';
      client.on('data', (d: Buffer) => {
        got += d.toString('latin1');
      });
      client.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => got.includes('start'));
      assert.equal(completeResponse(got), false);
      const slowConn = up.connections[up.connections.length - 1];
      client.destroy();
      await waitFor(() => slowConn.destroyed);
      await waitFor(() => proxy.server.connections === 0);
    });
  });
}
