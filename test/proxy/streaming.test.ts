import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { delay, httpUpstream, pump, startProxy } from '../support/helpers';

const MiB = 1024 * 1024;

/** Deterministic bytes, generated as they are read, never held whole. */
function generated(total: number): Readable {
  let sent = 0;
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 0xff;
  return new Readable({
    read() {
      if (sent >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(block.length, total - sent);
      sent += n;
      this.push(n === block.length ? block : block.subarray(0, n));
    },
  });
}

async function digest(stream: Readable): Promise<{ sha: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of stream) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { sha: h.digest('hex'), bytes };
}

describe('streaming', () => {
  it('passes a 64 MiB upload through intact (Content-Length and chunked)', async function () {
    this.timeout(60_000);
    const received: Array<{ sha: string; bytes: number; te?: string; cl?: string }> = [];
    const up = await httpUpstream(async (req, res) => {
      const d = await digest(req);
      received.push({
        ...d,
        ...(req.headers['transfer-encoding'] ? { te: req.headers['transfer-encoding'] } : {}),
        ...(req.headers['content-length'] ? { cl: req.headers['content-length'] } : {}),
      });
      res.end('stored');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const expected = await digest(generated(64 * MiB));
    for (const sized of [true, false]) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          `${proxy.url}/upload`,
          {
            method: 'POST',
            agent: false,
            headers: sized ? { 'content-length': String(64 * MiB) } : {},
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          },
        );
        req.on('error', reject);
        pipeline(generated(64 * MiB), req).catch(reject);
      });
      assert.equal(status, 200);
    }
    assert.deepEqual(
      received.map((r) => r.sha),
      [expected.sha, expected.sha],
    );
    assert.equal(received[0].cl, String(64 * MiB));
    assert.equal(received[1].te, 'chunked');
  });

  it('passes a 64 MiB download through intact', async function () {
    this.timeout(60_000);
    const up = await httpUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': String(64 * MiB) });
      generated(64 * MiB).pipe(res);
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const expected = await digest(generated(64 * MiB));
    const got = await new Promise<{ sha: string; bytes: number }>((resolve, reject) => {
      http.get(proxy.url, { agent: false }, (res) => digest(res).then(resolve, reject)).on('error', reject);
    });
    assert.deepEqual(got, expected);
  });

  // With nobody reading at the far end, only kernel socket buffers (a few MiB, growing slowly as
  // they autotune) can absorb bytes. A proxy that buffered in memory would take them all.
  const BOUND = 48 * MiB;

  it('applies backpressure to the upstream when the client does not read (no whole-body buffering)', async () => {
    let written = 0;
    const up = await httpUpstream((_req, res) => {
      const write = (): void => {
        while (written < 512 * MiB) {
          written += 64 * 1024;
          if (!res.write(Buffer.alloc(64 * 1024))) {
            res.once('drain', write);
            return;
          }
        }
        res.end();
      };
      res.writeHead(200);
      write();
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const req = http.get(proxy.url, { agent: false });
    req.on('error', () => undefined);
    const res = await new Promise<http.IncomingMessage>((resolve) => req.on('response', resolve));
    res.pause(); // the client reads nothing more
    await delay(1500);
    assert.ok(written < BOUND, `upstream wrote ${written} bytes into a client that reads nothing`);
    req.destroy();
  });

  it('applies backpressure to the client when the upstream does not read the upload', async () => {
    const up = await httpUpstream((req) => {
      req.pause();
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    let stop = false;
    const req = http.request(`${proxy.url}/up`, {
      method: 'POST',
      agent: false,
      headers: { 'content-length': String(512 * MiB) },
    });
    req.on('error', () => undefined);
    const accepted = pump(req, 512 * MiB, { stop: () => stop });
    await delay(1500);
    stop = true;
    assert.ok(accepted() < BOUND, `proxy accepted ${accepted()} bytes that the upstream never read`);
    req.destroy();
  });

  it('delivers the first bytes of a slow response before the upstream finishes', async () => {
    let finish!: () => void;
    const finished = new Promise<void>((r) => {
      finish = r;
    });
    const up = await httpUpstream(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part\n');
      await finished;
      res.end('second part\n');
    });
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get(proxy.url, { agent: false }, resolve).on('error', reject),
    );
    const first = await new Promise<string>((resolve) => res.once('data', (c: Buffer) => resolve(c.toString())));
    assert.equal(first, 'first part\n');
    finish();
    let rest = '';
    for await (const c of res) rest += (c as Buffer).toString();
    assert.equal(rest, 'second part\n');
  });
});
