/**
 * Reloads keep long-lived connections: a WebSocket tunnel on a retired worker runs on past
 * timeouts.drain (up to timeouts.streamDrain), and when it must be cut, both peers get a 1001
 * close frame at a frame boundary instead of a bare close (which browsers report as 1006).
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { FrameBoundary, goingAwayFrame, websocketAccept } from '../../src/proxy/upgrade';
import { configFile, listenUpstream, request, startCli, waitFor } from '../support/helpers';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** A masked client frame (text), as a browser sends it. */
function clientFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4])]);
}

/** A server frame (text, unmasked). */
function serverFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

/** Answers each client frame with a server frame "echo:<n>"; records every byte it got. */
async function wsUpstream() {
  const received: Buffer[] = [];
  const server = http.createServer((_req, res) => res.end('plain'));
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Accept: ${websocketAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
    );
    let n = 0;
    socket.on('data', (d: Buffer) => {
      received.push(d);
      if (d[0] === 0x81) socket.write(serverFrame(`echo:${++n}`));
    });
    socket.on('error', () => undefined);
  });
  const up = await listenUpstream(server);
  return { ...up, received: () => Buffer.concat(received) };
}

function wsClient(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  let got = Buffer.alloc(0);
  let closed = false;
  socket.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d]);
  });
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => undefined);
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  return { socket, got: () => got, closed: () => closed };
}

describe('long-lived connections across a reload', function () {
  this.timeout(30_000);

  it('FrameBoundary knows frame boundaries, however the bytes are split', () => {
    const frames = [
      clientFrame('hi'),
      serverFrame('x'.repeat(125)),
      Buffer.concat([Buffer.from([0x82, 126, 0x01, 0x00]), Buffer.alloc(256)]),
      Buffer.concat([Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Buffer.alloc(65536)]),
      goingAwayFrame(true),
    ];
    const stream = Buffer.concat(frames);
    const ends = new Set<number>();
    let at = 0;
    for (const f of frames) ends.add((at += f.length));
    for (const step of [1, 3, 7, 1000]) {
      const b = new FrameBoundary();
      for (let i = 0; i < stream.length; i += step) {
        const end = Math.min(stream.length, i + step);
        b.feed(stream.subarray(i, end));
        // At every read end, at a boundary exactly when a frame just ended.
        if (step === 1 || ends.has(end)) assert.equal(b.atBoundary, ends.has(end), `step ${step}, byte ${end}`);
      }
      assert.equal(b.atBoundary, true);
    }
  });

  it('a WebSocket on a retired worker runs on past timeouts.drain, while new connections reach the new worker', async () => {
    const up = await wsUpstream();
    const file = configFile(
      `upstreams: [{ url: "${up.url}" }]\nworkers: 1\ntimeouts:\n  drain: 200\n  streamDrain: 60000\n`,
    );
    const cli = await startCli(['--config', file]);
    const ws = wsClient(cli.port);
    await waitFor(() => ws.got().includes('\r\n\r\n'));
    const [oldPid] = cli.workerPids();
    cli.child.kill('SIGHUP');
    await waitFor(() => cli.logs.some((l) => l.event === 'reload-complete'));
    await waitFor(() => cli.logs.some((l) => String(l.msg).startsWith('drain: tunnels and streams go on')));
    ws.socket.write(clientFrame('after the drain timeout'));
    await waitFor(() => ws.got().includes('echo:1'));
    assert.equal(ws.closed(), false);
    // The retired worker is still there, for this tunnel only; a new request meets the new worker.
    assert.ok(cli.logs.every((l) => !(l.msg === 'retired worker exited' && l.workerPid === oldPid)));
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).body.toString(), 'plain');
    ws.socket.destroy();
    await waitFor(() => cli.logs.some((l) => l.msg === 'retired worker exited' && l.workerPid === oldPid));
  });

  it('a download already streaming when its worker is retired finishes past timeouts.drain', async () => {
    const chunks = 30;
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(chunks * 10) });
      let n = 0;
      const timer = setInterval(() => {
        res.write('x'.repeat(10));
        if (++n === chunks) {
          clearInterval(timer);
          res.end();
        }
      }, 40);
      res.on('close', () => clearInterval(timer));
    });
    const up = await listenUpstream(server);
    const file = configFile(
      `upstreams: [{ url: "${up.url}" }]\nworkers: 1\ntimeouts:\n  drain: 200\n  streamDrain: 60000\n`,
    );
    const cli = await startCli(['--config', file]);
    const done = new Promise<{ bytes: number; complete: boolean }>((resolve) => {
      http.get(`http://127.0.0.1:${cli.port}/download`, { agent: false }, (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          bytes += d.length;
          if (bytes === 20) cli.child.kill('SIGHUP'); // mid-download
        });
        res.on('end', () => resolve({ bytes, complete: res.complete }));
        res.on('error', () => resolve({ bytes, complete: false }));
      });
    });
    assert.deepEqual(await done, { bytes: chunks * 10, complete: true });
    assert.ok(
      cli.logs.some((l) => String(l.msg).startsWith('drain: tunnels and streams go on')),
      'the download outlived timeouts.drain',
    );
  });

  it('past timeouts.streamDrain, both peers get a 1001 close frame, then the tunnel closes', async () => {
    const up = await wsUpstream();
    const file = configFile(
      `upstreams: [{ url: "${up.url}" }]\nworkers: 1\ntimeouts:\n  drain: 100\n  streamDrain: 400\n`,
    );
    const cli = await startCli(['--config', file]);
    const ws = wsClient(cli.port);
    await waitFor(() => ws.got().includes('\r\n\r\n'));
    ws.socket.write(clientFrame('one'));
    await waitFor(() => ws.got().includes('echo:1'));
    cli.child.kill('SIGHUP');
    await waitFor(
      () =>
        ws.closed() ||
        ws
          .got()
          .subarray(-4)
          .equals(Buffer.from([0x88, 0x02, 0x03, 0xe9])),
    );
    assert.deepEqual(
      [...ws.got().subarray(-4)],
      [0x88, 0x02, 0x03, 0xe9],
      'the client got close 1001 after the last whole frame',
    );
    await waitFor(() => up.received().length > 0 && up.received()[up.received().length - 8] === 0x88);
    const tail = up.received().subarray(-8);
    assert.equal(tail[1], 0x82, 'a masked close frame with 2 bytes of payload');
    assert.deepEqual([tail[6] ^ tail[2], tail[7] ^ tail[3]], [0x03, 0xe9], 'status 1001');
    await waitFor(() => ws.closed());
  });

  it('a stop cuts tunnels at timeouts.drain, with a 1001 close frame', async () => {
    const up = await wsUpstream();
    const file = configFile(
      `upstreams: [{ url: "${up.url}" }]\nworkers: 1\ntimeouts:\n  drain: 200\n  streamDrain: 60000\n`,
    );
    const cli = await startCli(['--config', file]);
    const ws = wsClient(cli.port);
    await waitFor(() => ws.got().includes('\r\n\r\n'));
    cli.child.kill('SIGTERM');
    await waitFor(() => ws.closed());
    assert.deepEqual([...ws.got().subarray(-4)], [0x88, 0x02, 0x03, 0xe9]);
    assert.deepEqual(await cli.exited, { code: 0, signal: null });
  });
});
