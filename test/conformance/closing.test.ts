/**
 * How a client connection ends (proxy/client-transport.ts EndHow): closed at once when the client
 * said Connection: close and was read to the end, in stages (FIN, then keep reading) when it may
 * still be sending. Raw sockets, so that a reset shows as what it is.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { acceptHandles } from '../../src/proxy/accept';
import { EndHow } from '../../src/proxy/client-transport';
import { handleTransportAvailable, TcpTransport } from '../../src/proxy/tcp-transport';
import { writeBatchStats } from '../../src/io/write-batch';
import { httpUpstream, onCleanup, startProxy, waitFor } from '../support/helpers';

interface Ending {
  received: Buffer;
  /** 'end' (a FIN after everything) or the socket error's code. */
  how: string;
}

/**
 * Connect, write `bytes` (then `more` every 5 ms until the socket ends), collect until it closes;
 * with `readAfterMs`, read nothing until then.
 */
function exchange(port: number, bytes: string, more?: Buffer, readAfterMs = 0): Promise<Ending> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let how = '';
    let timer: NodeJS.Timeout | undefined;
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(bytes);
      if (readAfterMs > 0) {
        s.pause();
        setTimeout(() => s.resume(), readAfterMs);
      }
      if (more !== undefined)
        timer = setInterval(() => {
          if (s.writable) s.write(more);
        }, 5);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => {
      how ||= 'end';
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      how ||= err.code ?? err.message;
    });
    s.on('close', () => {
      clearInterval(timer);
      resolve({ received: Buffer.concat(chunks), how });
    });
  });
}

function bodyOf(raw: Buffer): Buffer {
  const at = raw.indexOf('\r\n\r\n');
  assert.ok(at !== -1, `no response head in ${JSON.stringify(raw.subarray(0, 200).toString('latin1'))}`);
  return raw.subarray(at + 4);
}

describe('how a client connection ends', () => {
  it('closes at once after a whole request that said Connection: close; the response arrives whole, then the FIN', async () => {
    const up = await httpUpstream((req, res) => res.end(`you asked ${req.url}`));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const before = writeBatchStats.closedAtOnce;
    for (let i = 0; i < 20; i++) {
      const got = await exchange(proxy.port, `GET /c${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(got.how, 'end', `request ${i}: a FIN, not a reset`);
      assert.match(got.received.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n[^]*\r\nConnection: close\r\n/i);
      assert.equal(bodyOf(got.received).toString(), `you asked /c${i}`);
    }
    // Closing at once is the handle transport's; the net.Socket fallback half-closes first.
    if (handleTransportAvailable)
      assert.ok(writeBatchStats.closedAtOnce >= before + 20, 'each closed without a half-close first');
    await waitFor(() => proxy.server.connections === 0);
  });

  it('gives a client that reads slowly every byte of a large response before the close', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 'b');
    const up = await httpUpstream((_req, res) => res.end(big));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    // The client reads nothing for a while, so the proxy's writes back up behind it.
    const got = await exchange(proxy.port, 'GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', undefined, 300);
    assert.equal(got.how, 'end');
    assert.equal(bodyOf(got.received).length, big.length);
    assert.ok(bodyOf(got.received).equals(big), 'every byte');
  });

  it('on a socket still writing when the close is asked for, sends every byte, then the FIN', async function () {
    if (!handleTransportAvailable) this.skip();
    // Straight on the transport: a response the peer is not reading leaves libuv holding the
    // rest, which close() would cancel.
    const big = Buffer.alloc(32 * 1024 * 1024, 'z');
    const server = net.createServer();
    onCleanup(() => server.close());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    let queued = false;
    acceptHandles(server, (err, handle) => {
      assert.equal(err, 0);
      const t = new TcpTransport(handle);
      t.start({ onData: () => undefined, onEnd: () => undefined, onClose: () => undefined, onDrain: () => undefined });
      queued = !t.write(big);
      t.end(EndHow.Close);
    });
    const got = await new Promise<{ length: number; how: string }>((resolve) => {
      let length = 0;
      let how = '';
      const s = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      s.pause();
      setTimeout(() => s.resume(), 200);
      s.on('data', (d: Buffer) => {
        length += d.length;
      });
      s.on('end', () => {
        how ||= 'end';
      });
      s.on('error', (e: NodeJS.ErrnoException) => {
        how ||= e.code ?? e.message;
      });
      s.on('close', () => resolve({ length, how }));
    });
    assert.ok(queued, 'the write was still queued when the close was asked for');
    assert.equal(got.length, big.length, 'every byte');
    assert.equal(got.how, 'end');
  });

  it('lingers when the client said close but is still sending its body: the early answer is read whole, without a reset', async () => {
    // The upstream answers at once, before the body ends; the client keeps sending it afterwards.
    const up = await httpUpstream((req, res) => {
      req.resume();
      res.end('early');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const before = writeBatchStats.closedAtOnce;
    const got = await exchange(
      proxy.port,
      `POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`,
      Buffer.alloc(16 * 1024, 'u'),
    );
    assert.equal(bodyOf(got.received).toString(), 'early');
    assert.equal(writeBatchStats.closedAtOnce, before, 'a client still sending is never closed at once');
    assert.equal(got.how, 'end', 'the answer is followed by a FIN, not cut by a reset');
  });
});
