/**
 * Upgrade requests (WebSocket and the like) become a byte tunnel between the client and a
 * dedicated upstream connection (never a pooled one: after a 101 it no longer speaks HTTP).
 *
 *   request head (X-Forwarded-* applied, Upgrade kept) → upstream's head →
 *     101, checked (Sec-WebSocket-Accept must match) → tunnel both ways, idle timeout
 *     anything else → relayed as a normal response, then the connection closes
 *
 * Either side ending or failing closes both; nothing outlives the pair.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import {
  SwitchyardError,
  TunnelIdleError,
  UpstreamConnectTimeoutError,
  UpstreamHeadersTimeoutError,
  UpstreamProtocolError,
  toSwitchyardError,
} from '../errors';
import { createParser, HTTPParser } from '../http1/parser';
import type { UpstreamTarget } from '../upstream/connection';
import { findHeader } from '../http1/fields';
import type { ClientRequest } from './client-request';
import { buildResponseHead } from './headers';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export interface TunnelOptions {
  readonly target: UpstreamTarget;
  /** The upstream request head, Upgrade and Connection included. */
  readonly head: string;
  readonly connectTimeout: number;
  readonly responseHeaderTimeout: number;
  readonly idleTimeout: number;
  /** Called once with the outcome: undefined when a tunnel or relayed response ended normally. */
  readonly onDone: (status: number, error: SwitchyardError | undefined) => void;
  /** Answers the client with an error before anything was sent to it. */
  readonly onError: (err: SwitchyardError) => void;
}

/** How long a tunnel that was told to go away waits for both peers to close before it cuts them. */
const GOING_AWAY_MS = 2000;

/**
 * Where a WebSocket byte stream stands between frames (RFC 6455 §5.2): a close frame may only be
 * put in at a frame boundary, or the peer would read it as the rest of a frame.
 */
export class FrameBoundary {
  private readonly header = Buffer.alloc(14);
  private have = 0;
  private need = 2;
  private payloadLeft = 0;

  get atBoundary(): boolean {
    return this.have === 0 && this.payloadLeft === 0;
  }

  feed(data: Buffer): void {
    let i = 0;
    while (i < data.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, data.length - i);
        this.payloadLeft -= n;
        i += n;
        continue;
      }
      this.header[this.have++] = data[i++]!;
      if (this.have === 2) {
        const len7 = this.header[1] & 0x7f;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((this.header[1] & 0x80) !== 0 ? 4 : 0);
      }
      if (this.have >= 2 && this.have === this.need) {
        const len7 = this.header[1] & 0x7f;
        this.payloadLeft =
          len7 === 126 ? this.header.readUInt16BE(2) : len7 === 127 ? Number(this.header.readBigUInt64BE(2)) : len7;
        this.have = 0;
        this.need = 2;
      }
    }
  }
}

/** A close frame with status 1001 (going away); masked when it goes to a server (RFC 6455 §5.3). */
export function goingAwayFrame(masked: boolean): Buffer {
  if (!masked) return Buffer.from([0x88, 0x02, 0x03, 0xe9]);
  const mask = randomBytes(4);
  return Buffer.from([0x88, 0x82, mask[0], mask[1], mask[2], mask[3], 0x03 ^ mask[0], 0xe9 ^ mask[1]]);
}

/** The Sec-WebSocket-Accept a server must send for `key` (RFC 6455 §4.2.2). */
export function websocketAccept(key: string): string {
  return createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
}

export function openTunnel(req: ClientRequest, o: TunnelOptions): void {
  const upstream =
    o.target.tls === null
      ? net.connect({ host: o.target.host, port: o.target.port, noDelay: true })
      : tls
          .connect({ ...o.target.tls, host: o.target.host, port: o.target.port, ALPNProtocols: ['http/1.1'] })
          .setNoDelay(true);
  let client: net.Socket | null = null;
  let answered = false;
  let finished = false;
  const wsKey = req.facts.websocketKey;
  /** WebSocket tunnels: where the stream to the client stands between frames (see FrameBoundary). */
  let toClient: FrameBoundary | null = null;

  const finish = (status: number, err?: SwitchyardError): void => {
    if (finished) return;
    finished = true;
    upstream.destroy();
    client?.destroy();
    o.onDone(status, err);
  };
  const failBeforeAnswer = (err: SwitchyardError): void => {
    if (answered) {
      finish(0, err);
      return;
    }
    answered = true;
    finished = true;
    upstream.destroy();
    o.onError(err);
    o.onDone(err.status, err);
  };

  // One 'timeout' handler for every phase: socket.setTimeout(ms, callback) would add a listener
  // per phase, and the connect phase's would still fire when the tunnel idles.
  let phase: 'connect' | 'head' | 'tunnel' = 'connect';
  const onTimeout = (): void => {
    if (phase === 'connect') failBeforeAnswer(new UpstreamConnectTimeoutError(o.connectTimeout));
    else if (phase === 'head') failBeforeAnswer(new UpstreamHeadersTimeoutError(o.responseHeaderTimeout));
    else finish(101, new TunnelIdleError(o.idleTimeout));
  };
  upstream.setTimeout(o.connectTimeout);
  upstream.on('timeout', onTimeout);
  upstream.on('error', (err) => failBeforeAnswer(toSwitchyardError(err)));
  upstream.on('close', () => {
    if (!answered)
      failBeforeAnswer(new UpstreamProtocolError('upstream closed the connection before answering the upgrade'));
    else finish(101);
  });
  upstream.once(o.target.tls === null ? 'connect' : 'secureConnect', () => {
    if (phase !== 'connect') return;
    phase = 'head';
    upstream.setTimeout(o.responseHeaderTimeout);
  });

  let status = 0;
  let relaying = false;
  const parser = createParser('response', 64 * 1024, (_maj, _min, raw, _m, _u, code, reason) => {
    status = code;
    if (code === 101) {
      const accept = findHeader(raw, 'sec-websocket-accept');
      if (findHeader(raw, 'upgrade') === null || (wsKey !== null && accept !== websocketAccept(wsKey))) {
        failBeforeAnswer(
          new UpstreamProtocolError('upstream answered the upgrade without a valid Sec-WebSocket-Accept'),
        );
        return 1;
      }
      startTunnel(code, reason, raw);
      return 1;
    }
    if (code < 200) return 0; // 1xx other than 101: wait for the final answer
    // The upstream refused the upgrade: relay its answer as a plain response, then close.
    answered = true;
    relaying = true;
    const { socket } = req.takeSocket();
    client = socket;
    const head = buildResponseHead(raw);
    const lines = head.lines.replace(/^(content-length|transfer-encoding):[^\r]*\r\n/gim, '');
    socket.write(`HTTP/1.1 ${code} ${reason}\r\n${lines}Connection: close\r\n\r\n`, 'latin1');
    return 0;
  });
  parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
    if (relaying && client !== null) client.write(chunk);
  };
  parser[HTTPParser.kOnMessageComplete] = () => {
    if (relaying && client !== null) {
      // The body was sent delimited by the close that follows.
      client.end();
      finished = true;
      upstream.destroy();
      o.onDone(status, undefined);
    }
  };

  const onUpstreamData = (d: Buffer): void => {
    const ret = parser.execute(d);
    if (typeof ret !== 'number') {
      const e = ret;
      if (e.code === 'HPE_PAUSED_UPGRADE') return;
      failBeforeAnswer(new UpstreamProtocolError(`invalid response from upstream: ${e.reason}`));
      return;
    }
    if (status === 101 && client !== null && ret < d.length) {
      // Bytes after the 101 head already belong to the tunnel.
      const rest = d.subarray(ret);
      toClient?.feed(rest);
      client.write(rest);
    }
  };
  upstream.on('data', onUpstreamData);
  upstream.write(o.head, 'latin1');

  function startTunnel(code: number, reason: string, raw: string[]): void {
    answered = true;
    upstream.off('data', onUpstreamData);
    const { socket, head } = req.takeSocket();
    client = socket;
    // The 101 keeps its Upgrade and Connection fields: they are the point of it.
    let lines = '';
    for (let i = 0; i < raw.length; i += 2) lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    socket.write(`HTTP/1.1 ${code} ${reason}\r\n${lines}\r\n`, 'latin1');
    if (head.length > 0) upstream.write(head);
    // Both directions with backpressure; the tunnel closes when either side ends or idles.
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.resume();
    phase = 'tunnel';
    upstream.setTimeout(o.idleTimeout);
    socket.setTimeout(o.idleTimeout);
    socket.on('timeout', onTimeout);
    socket.on('error', () => finish(101));
    socket.on('close', () => finish(101));
    // Either side ending ends the tunnel: its FIN is passed on, and once that is flushed both
    // sockets go. Peers that keep a half-open socket (node:http's upgraded sockets do) would
    // otherwise hold the pair open for good.
    socket.on('end', () => upstream.end(() => finish(101)));
    upstream.on('end', () => socket.end(() => finish(101)));
    if (wsKey !== null) {
      // A drain that runs out of time says goodbye properly: 1001 to both peers, each at a frame
      // boundary of what it was being sent (a cut mid-frame just closes that side).
      const down = new FrameBoundary();
      toClient = down;
      const toUpstream = new FrameBoundary();
      upstream.on('data', (d: Buffer) => down.feed(d));
      socket.on('data', (d: Buffer) => toUpstream.feed(d));
      if (head.length > 0) toUpstream.feed(head);
      req.onTunnelCut(() => {
        if (finished) return;
        socket.unpipe(upstream);
        upstream.unpipe(socket);
        if (down.atBoundary) socket.end(goingAwayFrame(false));
        else socket.destroy();
        if (toUpstream.atBoundary) upstream.end(goingAwayFrame(true));
        else upstream.destroy();
        setTimeout(() => finish(101), GOING_AWAY_MS).unref();
      });
    }
  }
}
