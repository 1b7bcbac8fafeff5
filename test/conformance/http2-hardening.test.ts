/**
 * HTTP/2 attacks, sent as raw frames (test/support/h2-frames.ts) to an h2c listener: each gets a
 * GOAWAY or RST_STREAM with an error code, never reaches the upstream as a request it should not,
 * and leaves the worker serving the next connection.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import {
  END_HEADERS,
  END_STREAM,
  FrameType,
  frame,
  getRequest,
  headerBlock,
  RawH2,
  rstStream,
  settings,
} from '../support/h2-frames';
import { httpUpstream, onCleanup, pump, startProxyListeners, waitFor } from '../support/helpers';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_REFUSED_STREAM } =
  http2.constants;

interface Setup {
  port: number;
  /** Requests the upstream received. */
  seen: string[];
}

async function setup(config: Record<string, unknown> = {}, handler?: http.RequestListener): Promise<Setup> {
  const seen: string[] = [];
  const up = await httpUpstream((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (handler !== undefined) handler(req, res);
    else res.end('ok');
  });
  const { ports } = await startProxyListeners({
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    upstreams: [{ url: up.url }],
    ...config,
  });
  return { port: ports[0], seen };
}

async function raw(port: number): Promise<RawH2> {
  const c = new RawH2(port);
  onCleanup(() => c.destroy());
  await c.ready;
  return c;
}

/** The worker still answers a well-behaved HTTP/2 client on a new connection. */
async function stillServes(port: number): Promise<void> {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on('error', () => undefined);
  onCleanup(() => s.destroy());
  const status = await new Promise<number>((ok, fail) => {
    const r = s.request({ ':path': '/after' });
    r.on('response', (h) => ok(Number(h[':status'])));
    r.on('error', fail);
    r.resume();
  });
  assert.equal(status, 200);
}

const BASE: Array<[string, string]> = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':authority', 'localhost'],
  [':path', '/'],
];

describe('HTTP/2 hardening (raw frames)', () => {
  it('rapid reset (CVE-2023-44487): past 200 cancelled streams a second, GOAWAY ENHANCE_YOUR_CALM', async () => {
    const { port } = await setup();
    const c = await raw(port);
    const pairs: Buffer[] = [];
    for (let i = 0; i < 1000; i++) pairs.push(getRequest(1 + 2 * i), rstStream(1 + 2 * i, NGHTTP2_CANCEL));
    c.write(Buffer.concat(pairs));
    await waitFor(() => c.closed);
    assert.equal(c.goaway, NGHTTP2_ENHANCE_YOUR_CALM);
    await stillServes(port);
  });

  it('a few cancelled streams are a client changing its mind: the connection goes on', async () => {
    const { port } = await setup();
    const c = await raw(port);
    const pairs: Buffer[] = [];
    for (let i = 0; i < 20; i++) pairs.push(getRequest(1 + 2 * i, [], false), rstStream(1 + 2 * i, NGHTTP2_CANCEL));
    c.write(Buffer.concat([...pairs, getRequest(41)]));
    await waitFor(() =>
      c.frames.some((f) => f.stream === 41 && f.type === FrameType.Data && (f.flags & END_STREAM) !== 0),
    );
    assert.equal(c.goaway, null);
    assert.equal(c.closed, false);
  });

  it('CONTINUATION flood (CVE-2024-27316 family): GOAWAY and close, nothing forwarded', async () => {
    const { port, seen } = await setup();
    const c = await raw(port);
    const frames = [frame(FrameType.Headers, 0, 1, headerBlock(BASE))];
    for (let i = 0; i < 20_000; i++) frames.push(frame(FrameType.Continuation, 0, 1, headerBlock([[`x-${i}`, 'v']])));
    c.write(Buffer.concat(frames));
    await waitFor(() => c.closed);
    assert.notEqual(c.goaway, null);
    assert.notEqual(c.goaway, NGHTTP2_NO_ERROR);
    assert.deepEqual(seen, []);
    await stillServes(port);
  });

  for (const [name, make] of [
    ['SETTINGS', () => settings()],
    ['PING', () => frame(FrameType.Ping, 0, 0, Buffer.alloc(8))],
  ] as const) {
    it(`${name} flood from a client that reads no acknowledgement: GOAWAY and close`, async () => {
      const { port } = await setup();
      const c = await raw(port);
      c.socket.pause();
      c.write(Buffer.concat(Array.from({ length: 100_000 }, make)));
      // nghttp2 stops at 1000 acknowledgements queued unsent.
      await new Promise((r) => setTimeout(r, 500));
      c.socket.resume();
      await waitFor(() => c.closed);
      assert.notEqual(c.goaway, null);
      assert.notEqual(c.goaway, NGHTTP2_NO_ERROR);
      await stillServes(port);
    });
  }

  it('a header list over server.maxHeaderSize: 431, nothing forwarded, the session goes on', async () => {
    const { port, seen } = await setup({ server: { maxHeaderSize: 8192 } });
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', () => undefined);
    onCleanup(() => s.destroy());
    const ask = (headers: http2.OutgoingHttpHeaders): Promise<number> =>
      new Promise((ok, fail) => {
        const r = s.request(headers);
        r.on('response', (h) => ok(Number(h[':status'])));
        r.on('error', fail);
        r.resume();
      });
    assert.equal(await ask({ ':path': '/big', 'x-a': 'a'.repeat(6000), 'x-b': 'b'.repeat(6000) }), 431);
    assert.deepEqual(seen, []);
    assert.equal(await ask({ ':path': '/small' }), 200);
  });

  it('more concurrent streams than advertised (128): the excess is refused with REFUSED_STREAM', async () => {
    let release: (() => void) | null = null;
    const held: http.ServerResponse[] = [];
    const gate = new Promise<void>((r) => (release = r));
    const { port } = await setup({}, (_req, res) => {
      held.push(res);
      void gate.then(() => res.end('ok'));
    });
    const c = await raw(port);
    // Streams left open (no END_STREAM): each holds a place until the answers come.
    c.write(Buffer.concat(Array.from({ length: 160 }, (_, i) => getRequest(1 + 2 * i, [], false))));
    await waitFor(() => c.resets().size === 32);
    assert.ok([...c.resets().values()].every((code) => code === NGHTTP2_REFUSED_STREAM));
    assert.deepEqual(
      [...c.resets().keys()].sort((a, b) => a - b),
      Array.from({ length: 32 }, (_, i) => 1 + 2 * (128 + i)),
      'the streams past the 128th',
    );
    await waitFor(() => held.length === 128);
    release!();
  });

  for (const [name, fields] of [
    ['a request without :path', BASE.filter(([n]) => n !== ':path')],
    ['an uppercase field name', [...BASE, ['X-Upper', '1']]],
    ['a connection-specific field', [...BASE, ['connection', 'keep-alive']]],
    ['TE other than trailers', [...BASE, ['te', 'gzip']]],
    ['a pseudo-header after a regular field', [...BASE.slice(0, 3), ['x-a', '1'], [':path', '/']]],
  ] as Array<[string, Array<[string, string]>]>) {
    it(`${name}: RST_STREAM PROTOCOL_ERROR, nothing forwarded, the session goes on`, async () => {
      const { port, seen } = await setup();
      const c = await raw(port);
      c.write(frame(FrameType.Headers, END_HEADERS | END_STREAM, 1, headerBlock(fields)));
      c.write(getRequest(3));
      await waitFor(() => c.resets().has(1) && c.frames.some((f) => f.stream === 3 && f.type === FrameType.Data));
      assert.equal(c.resets().get(1), NGHTTP2_PROTOCOL_ERROR);
      assert.deepEqual(seen, ['GET /']);
      assert.equal(c.goaway, null);
    });
  }

  it('a zero-window stall holds the upstream back, and timeouts.idle ends the stream', async () => {
    let written = (): number => 0;
    let upstreamClosed = false;
    const { port } = await setup({ timeouts: { idle: 500 } }, (_req, res) => {
      res.on('close', () => (upstreamClosed = true));
      written = pump(res, 256 * 1024 * 1024, { end: true });
    });
    const c = await raw(port);
    // SETTINGS_INITIAL_WINDOW_SIZE 0: the proxy may send this stream no DATA at all.
    c.write(settings([[4, 0]]));
    c.write(getRequest(1));
    await waitFor(() => c.resets().has(1));
    assert.ok(upstreamClosed, "the upstream's response was abandoned");
    assert.ok(written() < 32 * 1024 * 1024, `the upstream wrote ${written()} bytes for a client that can take none`);
    assert.ok(!c.frames.some((f) => f.type === FrameType.Data && f.stream === 1 && f.payload.length > 0));
    await stillServes(port);
  });
});
