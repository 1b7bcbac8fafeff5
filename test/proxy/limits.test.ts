import assert from 'node:assert/strict';
import * as net from 'node:net';
import pino from 'pino';
import { ProxyServer } from '../../src/proxy/server';
import {
  completeResponse,
  delay,
  httpUpstream,
  onCleanup,
  rawExchange,
  request,
  resolveConfig,
  startProxy,
  waitFor,
} from '../support/helpers';

function openKeepAlive(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('error', reject);
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (completeResponse(got)) resolve(s);
    });
    s.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  });
}

describe('limits and slow clients', () => {
  it('holds at most server.maxConnections client connections; the next is closed at accept', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { maxConnections: 3 } });
    const held = await Promise.all([1, 2, 3].map(() => openKeepAlive(proxy.port)));
    const refused = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.equal(refused, '', 'closed without an answer');
    held[0].destroy();
    await waitFor(() => proxy.server.connections === 2);
    assert.equal((await request(proxy.url)).status, 200);
    for (const s of held) s.destroy();
  });

  it('logs a flood of dropped connections as one line a second, with a count of the rest', async () => {
    const lines: Array<{ msg: string; alsoSinceLastLine?: number }> = [];
    const logger = pino(
      { level: 'warn' },
      {
        write: (line: string) => {
          lines.push(JSON.parse(line) as { msg: string });
        },
      },
    );
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const server = new ProxyServer(
      resolveConfig({ upstreams: [{ url: up.url }], server: { maxConnections: 1 } }),
      logger,
    );
    const { port } = await server.listen('127.0.0.1', 0);
    onCleanup(() => server.drain(10));
    const held = await openKeepAlive(port);
    for (let i = 0; i < 50; i++) assert.equal(await rawExchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n'), '');
    const drops = () => lines.filter((l) => l.msg.startsWith('connection dropped'));
    assert.ok(drops().length >= 1 && drops().length < 50, `${drops().length} lines for 50 drops`);
    await delay(1100);
    assert.equal(await rawExchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n'), '');
    const counted = drops().reduce((n, l) => n + 1 + (l.alsoSinceLastLine ?? 0), 0);
    assert.equal(counted, 51, 'every drop is in a line or a count');
    held.destroy();
  });

  it('keeps serving normal clients while 1,000 slow clients trickle their heads', async function () {
    this.timeout(60_000);
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const slow: net.Socket[] = [];
    for (let i = 0; i < 1000; i++) {
      const s = net.connect(proxy.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write('GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ');
      slow.push(s);
    }
    await waitFor(() => proxy.server.connections >= 1000);
    let stop = false;
    const trickle = (async () => {
      while (!stop) {
        for (const s of slow) s.write('x');
        await delay(100);
      }
    })();
    for (let i = 0; i < 50; i++) assert.equal((await request(`${proxy.url}/normal${i}`)).status, 200);
    stop = true;
    await trickle;
    assert.equal(up.connections.length > 0, true);
    for (const s of slow) s.destroy();
  });

  it('times out the slow ones (408) without affecting the rest', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { headersTimeout: 200 } });
    const answers = Promise.all(
      Array.from({ length: 100 }, () => rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ')),
    );
    assert.equal((await request(proxy.url)).status, 200);
    for (const got of await answers) assert.match(got, /^HTTP\/1\.1 408 /);
  });

  it('a client that aborts mid-upload: the upstream exchange is destroyed, and the next request works', async () => {
    const up = await httpUpstream((req, res) => {
      req.on('data', () => undefined);
      req.on('end', () => res.end('stored'));
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const s = net.connect(proxy.port, '127.0.0.1');
    s.on('error', () => undefined);
    s.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n');
    s.write(Buffer.alloc(10_000, 'x'));
    await waitFor(() => up.connections.length === 1);
    s.destroy();
    await waitFor(() => up.connections[0].destroyed);
    assert.equal((await request(proxy.url, { method: 'POST' }, 'small')).body.toString(), 'stored');
  });
});
