/**
 * Small writes held back to the end of a busy turn of the loop (upstream/write-batch.ts): many
 * clients at once, small and large responses mixed on each connection, and closes after them.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { deferWrite, shouldDefer, writeBatchStats, type DeferredWriter } from '../../src/io/write-batch';
import { handleTransportAvailable } from '../../src/proxy/tcp-transport';
import { httpUpstream, startProxy } from '../support/helpers';

const CLIENTS = 64;

/** The body the upstream gives for a path: small for /s…, 200 KB naming the path for /big…. */
function bodyFor(path: string): string {
  return path.startsWith('/big') ? `${path};`.repeat(Math.ceil(200_000 / (path.length + 1))) : `you asked ${path}`;
}

/** Split raw HTTP/1.1 responses with Content-Length bodies. */
function parseResponses(raw: Buffer): Array<{ status: number; head: string; body: string }> {
  const out: Array<{ status: number; head: string; body: string }> = [];
  let at = 0;
  while (at < raw.length) {
    const end = raw.indexOf('\r\n\r\n', at);
    assert.ok(
      end !== -1,
      `a response head is cut short: ${JSON.stringify(raw.subarray(at, at + 200).toString('latin1'))}`,
    );
    const head = raw.subarray(at, end).toString('latin1');
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
    assert.ok(Number.isInteger(length), `no Content-Length in ${JSON.stringify(head)}`);
    out.push({
      status: Number(head.slice(9, 12)),
      head,
      body: raw.subarray(end + 4, end + 4 + length).toString('latin1'),
    });
    at = end + 4 + length;
  }
  return out;
}

describe('small writes held back to the end of a busy turn', () => {
  it('gives 64 clients sending at once their own responses, in order, whole, then closes each (the FIN after the response)', async () => {
    const up = await httpUpstream((req, res) => {
      const body = bodyFor(req.url!);
      res.setHeader('content-length', Buffer.byteLength(body));
      res.end(body);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const before = writeBatchStats.turnsHeld;
    const finsBefore = writeBatchStats.finsHeld;
    // Twice: in the second burst the upstream connections come from the pool, so the request
    // heads are held too (a connection still connecting writes at once).
    for (let round = 0; round < 2; round++) {
      const sockets = await Promise.all(
        Array.from(
          { length: CLIENTS },
          () =>
            new Promise<net.Socket>((resolve, reject) => {
              const s = net.connect(proxy.port, '127.0.0.1', () => resolve(s));
              s.on('error', reject);
            }),
        ),
      );
      const paths = sockets.map((_, i) => [`/s-${i}-a`, `/big-${i}-b`, `/s-${i}-c`, `/s-${i}-d`]);
      const received = sockets.map(
        (s) =>
          new Promise<Buffer>((resolve) => {
            const chunks: Buffer[] = [];
            s.on('data', (d: Buffer) => chunks.push(d));
            s.on('close', () => resolve(Buffer.concat(chunks)));
          }),
      );
      // Every client's requests leave in the same tick, so the proxy reads many of them per turn.
      sockets.forEach((s, i) => {
        const last = paths[i].length - 1;
        s.write(
          paths[i]
            .map((p, k) => `GET ${p} HTTP/1.1\r\nHost: x\r\n${k === last ? 'Connection: close\r\n' : ''}\r\n`)
            .join(''),
        );
      });
      const all = await Promise.all(received);
      all.forEach((raw, i) => {
        const responses = parseResponses(raw);
        assert.deepEqual(
          responses.map((r) => r.status),
          [200, 200, 200, 200],
          `round ${round}, client ${i}`,
        );
        assert.deepEqual(
          responses.map((r) => r.body),
          paths[i].map(bodyFor),
          `round ${round}, client ${i}: bodies in order`,
        );
        assert.match(responses[3].head, /\r\nConnection: close/i);
      });
    }
    // The write holding belongs to the handle transport; the net.Socket fallback writes through.
    if (handleTransportAvailable) {
      assert.ok(writeBatchStats.turnsHeld > before, 'some turns held small writes back');
      // The closing responses are small: their FINs waited with them, and still came after them.
      assert.ok(writeBatchStats.finsHeld > finsBefore, 'some FINs waited with their responses');
    }
  });

  it('sends what it holds without waiting for the end of the turn once 64 sockets wait', async () => {
    // Under overload one poll phase can run tens of thousands of callbacks; held writes must not
    // wait for all of them. Here the writers are plain recorders, in one synchronous stretch.
    const flushed: number[] = [];
    const writer = (id: number): DeferredWriter => ({ flushDeferred: () => flushed.push(id) });
    await new Promise((r) => setImmediate(r)); // a fresh turn: nothing counted yet
    const early: number[] = [];
    for (let id = 0; id < 100; id++) {
      if (shouldDefer()) deferWrite(writer(id));
      else flushed.push(-1); // written at once (the first few of a quiet turn)
      if (id === 80) early.push(...flushed);
    }
    const atOnce = flushed.filter((id) => id === -1).length;
    // The first 64 held were sent as the 64th was queued, before the turn ended.
    assert.deepEqual(
      early.filter((id) => id >= 0),
      Array.from({ length: 64 }, (_, i) => i + atOnce),
    );
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      flushed.filter((id) => id >= 0),
      Array.from({ length: 100 - atOnce }, (_, i) => i + atOnce),
    );
  });

  it('writes at once for one client at a time', async () => {
    const up = await httpUpstream((req, res) => res.end(`you asked ${req.url}`));
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const before = writeBatchStats.turnsHeld;
    for (let i = 0; i < 20; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get(`${proxy.url}/one-${i}`, { agent }, (res) => {
            let text = '';
            res.setEncoding('latin1');
            res.on('data', (d: string) => {
              text += d;
            });
            res.on('end', () => resolve(text));
          })
          .on('error', reject);
      });
      assert.equal(body, `you asked /one-${i}`);
    }
    agent.destroy();
    // At most the first turn, if the one before it (another test's) was busy.
    assert.ok(writeBatchStats.turnsHeld - before <= 1, `${writeBatchStats.turnsHeld - before} turns held writes back`);
  });
});
