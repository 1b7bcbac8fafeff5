import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { websocketAccept } from '../../src/proxy/upgrade';
import { FIXTURES, listenUpstream, rawUpstream, startProxy, waitFor } from '../support/helpers';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const UPGRADE =
  `GET /chat HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/** A WebSocket-speaking upstream (handshake only): echoes every byte after its 101. */
async function echoUpstream() {
  const seen: http.IncomingHttpHeaders[] = [];
  const sockets: net.Socket[] = [];
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push(req.headers);
    sockets.push(socket);
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Accept: ${websocketAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    socket.on('data', (d) => socket.write(d));
    socket.on('error', () => undefined);
  });
  const up = await listenUpstream(server);
  return { ...up, seen, sockets };
}

function client(port: number): { socket: net.Socket; received: () => string } {
  const socket = net.connect(port, '127.0.0.1');
  let got = '';
  socket.on('data', (d) => {
    got += d.toString('latin1');
  });
  socket.on('error', () => undefined);
  return { socket, received: () => got };
}

describe('Upgrade / WebSocket tunnels', () => {
  it('tunnels both ways, early bytes included, with X-Forwarded-* applied', async () => {
    const up = await echoUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const c = client(proxy.port);
    c.socket.write(`${UPGRADE}early`);
    await waitFor(() => c.received().endsWith('\r\n\r\nearly'));
    assert.match(c.received(), /^HTTP\/1\.1 101 /);
    assert.match(
      c.received(),
      new RegExp(`Sec-WebSocket-Accept: ${websocketAccept(KEY).replace(/[+/=]/g, '\\$&')}\\r\\n`),
    );
    c.socket.write('ping');
    await waitFor(() => c.received().endsWith('earlyping'));
    const h = up.seen[0];
    assert.equal(h.upgrade, 'websocket');
    assert.match(String(h.connection), /upgrade/i);
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-host'], 'public.example');
    assert.equal(h.host, `127.0.0.1:${up.port}`);
    c.socket.destroy();
  });

  it('tunnels over an HTTPS listener (wss): both ways, then both sides close', async () => {
    const up = await echoUpstream();
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      tls: { cert: `${FIXTURES}/server.pem`, key: `${FIXTURES}/server-key.pem` },
    });
    const socket = tls.connect({
      port: proxy.port,
      host: '127.0.0.1',
      servername: 'public.example',
      rejectUnauthorized: false,
    });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise((r) => socket.on('close', r));
    socket.write(`${UPGRADE}early`);
    await waitFor(() => got.endsWith('\r\n\r\nearly'));
    assert.match(got, /^HTTP\/1\.1 101 /);
    socket.write('ping');
    await waitFor(() => got.endsWith('earlyping'));
    assert.equal(up.seen[0]['x-forwarded-proto'], 'https');
    up.sockets[0].end();
    await closed;
    await waitFor(() => proxy.server.connections === 0);
  });

  it('closes both sockets when either side ends, leaving nothing open', async () => {
    const up = await echoUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const a = client(proxy.port);
    a.socket.write(UPGRADE);
    await waitFor(() => a.received().includes('\r\n\r\n'));
    a.socket.destroy();
    await waitFor(() => up.sockets[0].destroyed || up.sockets[0].readableEnded);
    await waitFor(() => proxy.server.connections === 0);

    const b = client(proxy.port);
    const bClosed = new Promise((r) => b.socket.on('close', r));
    b.socket.write(UPGRADE);
    await waitFor(() => up.sockets.length === 2 && b.received().includes('\r\n\r\n'));
    up.sockets[1].end();
    await bClosed;
    await waitFor(() => proxy.server.connections === 0);
  });

  it('relays an upstream that refuses the upgrade as its normal response, then closes', async () => {
    const up = await rawUpstream((s) =>
      s.once('data', () => s.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope')),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const c = client(proxy.port);
    const closed = new Promise((r) => c.socket.on('close', r));
    c.socket.write(UPGRADE);
    await closed;
    assert.match(c.received(), /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*Connection: close\r\n\r\nnope$/);
  });

  it('answers 502 to a 101 without a valid Sec-WebSocket-Accept', async () => {
    const up = await rawUpstream((s) =>
      s.once('data', () =>
        s.write(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: forged=\r\n\r\n',
        ),
      ),
    );
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const c = client(proxy.port);
    const closed = new Promise((r) => c.socket.on('close', r));
    c.socket.write(UPGRADE);
    await closed;
    assert.match(c.received(), /^HTTP\/1\.1 502 [\s\S]*SWY_ERR_UPSTREAM_PROTOCOL/);
    assert.doesNotMatch(c.received(), /101/);
  });

  it('carries megabytes through tunnels side by side, held back while the upstream stalls', async () => {
    // Client connections read into one shared buffer: each tunnel's bytes must be its own, whole
    // and in order, also when the upstream stops reading for a while and the tunnel pauses.
    const server = http.createServer((_req, res) => res.writeHead(426).end());
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Accept: ${websocketAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
      );
      const hash = createHash('sha256').update(head);
      let size = head.length;
      socket.pause();
      setTimeout(() => socket.resume(), 300);
      socket.on('data', (d: Buffer) => {
        hash.update(d);
        size += d.length;
        if (size === 4 * 1024 * 1024) socket.end(`${hash.digest('hex')}`);
      });
      socket.on('error', () => undefined);
    });
    const up = await listenUpstream(server);
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const tunnel = async () => {
      const data = randomBytes(4 * 1024 * 1024);
      const c = client(proxy.port);
      c.socket.write(UPGRADE);
      await waitFor(() => c.received().includes('\r\n\r\n'));
      const ended = new Promise((r) => c.socket.on('end', r));
      c.socket.write(data);
      await ended;
      assert.equal(c.received().split('\r\n\r\n')[1], createHash('sha256').update(data).digest('hex'));
      c.socket.destroy();
    };
    // Plain requests on other connections meanwhile, through the same read buffer.
    const plain = async () => {
      for (let i = 0; i < 20; i++) {
        const res = await fetch(`${proxy.url}/x${i}`);
        assert.equal(res.status, 426);
        await res.arrayBuffer();
      }
    };
    await Promise.all([tunnel(), tunnel(), plain()]);
  });

  it('closes an idle tunnel after timeouts.idle', async () => {
    const up = await echoUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], timeouts: { idle: 200 } });
    const c = client(proxy.port);
    const closed = new Promise((r) => c.socket.on('close', r));
    c.socket.write(UPGRADE);
    await waitFor(() => c.received().includes('\r\n\r\n'));
    await closed;
    await waitFor(() => up.sockets[0].destroyed || up.sockets[0].readableEnded);
  });
});
