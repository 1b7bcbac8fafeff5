/**
 * HTTP/2 to clients: sessions run by node:http2 (nghttp2), each stream turned into a
 * ClientRequest and handed to the same ProxyHandler as an HTTP/1.1 request, so routes, pools,
 * retries, header rules, transforms, the access log and metrics are one code path. A stream's
 * request follows RFC 9113 §8 on its way to an HTTP/1.1 upstream: the pseudo-headers become the
 * request line and Host (a Host that disagrees with :authority is refused), cookies are joined,
 * a body without Content-Length goes chunked; nghttp2 has already refused connection-specific
 * fields and a TE other than "trailers". The answer's head is turned back into HTTP/2 fields here.
 *
 * Connections reach it after ALPN chose h2 (server.ts), as a net.Socket the ClientConnection
 * that accepted it still counts (server.maxConnections, drain).
 */
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { BadRequestError, BodyTooLargeError, HeadersTooLargeError, SwitchyardError } from '../errors';
import { errorResponse } from '../http1/error-response';
import { addField, addHeadFields, CONNECTION_SPECIFIC } from '../http1/http2-fields';
import { ClientRequest, type RequestConnection } from './client-request';
import type { TlsSession } from './client-transport';
import type { ProxyHandler } from './handler';

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_FLAG_END_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } =
  http2.constants;

/**
 * Streams a client may cancel per connection per second before the connection is closed with
 * GOAWAY ENHANCE_YOUR_CALM: "rapid reset" (CVE-2023-44487) opens and cancels streams to make the
 * server start work it is never asked to finish. Each cancelled stream may have reached an
 * upstream already. Browsers and gRPC clients cancel far fewer.
 */
const MAX_RESETS_PER_SECOND = 200;

/** What a session's streams share: the connection they came on, and the listener's handler. */
interface SessionInfo {
  readonly handler: ProxyHandler;
  readonly remoteAddress: string | undefined;
  readonly tlsSession: TlsSession | null;
  /** Client-cancelled streams in the current one-second window, and when it began. */
  resets: number;
  resetWindow: number;
}

export interface Http2Limits {
  readonly maxHeaderSize: number;
  readonly maxBodySize: number;
  /** An idle session (no frames) is closed with GOAWAY after this. */
  readonly keepAliveTimeout: number;
}

export class Http2Front {
  private readonly server: http2.Http2Server;
  /** Set around `emit('connection')`: node:http2 makes the session within that call. */
  private pending: SessionInfo | null = null;
  readonly sessions = new Set<http2.ServerHttp2Session>();
  private draining = false;
  private readonly maxBodySize: number;
  private readonly maxHeaderSize: number;

  constructor(limits: Http2Limits) {
    this.maxBodySize = limits.maxBodySize;
    this.maxHeaderSize = limits.maxHeaderSize;
    this.server = http2.createServer({
      settings: { maxConcurrentStreams: 128, maxHeaderListSize: limits.maxHeaderSize },
    });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      const info = this.pending;
      this.sessions.add(session);
      session.on('error', () => undefined);
      session.once('close', () => this.sessions.delete(session));
      session.setTimeout(limits.keepAliveTimeout, () => session.close());
      if (info === null) {
        session.destroy();
        return;
      }
      // On the session, not the server: a stream reset before its event still names its session.
      session.on(
        'stream',
        (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) =>
          this.onStream(session, info, stream, headers, flags, rawHeaders),
      );
      if (this.draining) session.close();
    });
  }

  /** A connection whose ALPN said h2: its session starts on `socket`. */
  accept(socket: net.Socket, handler: ProxyHandler, remoteAddress: string | undefined, tls: TlsSession | null): void {
    this.pending = { handler, remoteAddress, tlsSession: tls, resets: 0, resetWindow: 0 };
    try {
      this.server.emit('connection', socket);
    } finally {
      this.pending = null;
    }
  }

  /** A drain: GOAWAY to every session; open streams finish, new ones are refused. */
  drain(): void {
    this.draining = true;
    for (const s of this.sessions) s.close();
  }

  private countReset(session: http2.ServerHttp2Session, info: SessionInfo): void {
    const now = Date.now();
    if (now - info.resetWindow >= 1000) {
      info.resetWindow = now;
      info.resets = 0;
    }
    if (++info.resets > MAX_RESETS_PER_SECOND && !session.destroyed) {
      session.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
      session.destroy();
    }
  }

  private onStream(
    session: http2.ServerHttp2Session,
    info: SessionInfo,
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
    rawHeaders: string[],
  ): void {
    stream.on('error', () => undefined);
    if (stream.destroyed) {
      // Reset by the client in the same read that opened it: no work starts for it.
      this.countReset(session, info);
      return;
    }
    const method = String(headers[':method']);
    const path = headers[':path'];
    const authority = headers[':authority'];
    // TE may only say "trailers" in HTTP/2 (nghttp2 refuses anything else): the client reads them.
    const conn = new StreamConnection(stream, info, this.maxBodySize, headers.te !== undefined);
    // The fields as HTTP/1.1 would carry them: Host first, from :authority.
    const raw: string[] = [];
    let host: string | undefined;
    let cookie: string | undefined;
    // RFC 7541 §4.1's size of a header list, as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
    let listSize = 0;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i];
      listSize += name.length + rawHeaders[i + 1].length + 32;
      if (name.charCodeAt(0) === 58 /* : */) continue;
      if (name === 'host') host = rawHeaders[i + 1];
      // RFC 9113 §8.2.3: cookie crumbs are joined into one field for HTTP/1.1.
      if (name === 'cookie') {
        cookie = cookie === undefined ? rawHeaders[i + 1] : `${cookie}; ${rawHeaders[i + 1]}`;
        continue;
      }
      raw.push(name, rawHeaders[i + 1]);
    }
    if (cookie !== undefined) raw.push('cookie', cookie);
    let refusal: SwitchyardError | null = null;
    if (listSize > this.maxHeaderSize) {
      // nghttp2 only refuses lists past its own 64 KiB; server.maxHeaderSize holds for HTTP/2 too.
      refusal = new HeadersTooLargeError(this.maxHeaderSize);
    } else if (method === 'CONNECT') {
      refusal = new SwitchyardError('SWY_ERR_METHOD_NOT_ALLOWED', 405, 'CONNECT is not supported by a reverse proxy');
    } else if (typeof path !== 'string' || path === '') {
      refusal = new BadRequestError('an HTTP/2 request without :path');
    } else if (typeof authority === 'string' && host !== undefined && host !== authority) {
      // RFC 9113 §8.3.1: the two must agree; a proxy that routed by one and forwarded the other
      // could be steered past its routes.
      refusal = new BadRequestError(':authority and Host disagree');
    }
    if (typeof authority === 'string' && host === undefined) raw.unshift('host', authority);
    // A body without a declared length travels chunked to the HTTP/1.1 upstream.
    if ((flags & NGHTTP2_FLAG_END_STREAM) === 0 && headers['content-length'] === undefined)
      raw.push('transfer-encoding', 'chunked');
    const req = new ClientRequest(conn, method, typeof path === 'string' ? path : '/', raw, 2, 0, true, false);
    conn.req = req;
    if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) {
      // No body: the readable side is left unread. Once read to its end, node:http2 destroys the
      // stream as soon as the answer is written, before that write's callback, and Node's
      // Writable then builds an ERR_STREAM_DESTROYED per stream: 6% of the CPU of /small.
      req.bodyEnd();
    } else {
      stream.on('data', (chunk: Buffer) => req.bodyChunk(chunk));
      stream.on('end', () => req.bodyEnd());
    }
    stream.on('drain', () => req.onDrain?.());
    stream.once('close', () => {
      if (req.finished) return;
      // Reset before its answer was complete: by the client (the proxy's own resets finish first).
      if (stream.rstCode !== NGHTTP2_NO_ERROR) this.countReset(session, info);
      req.abort();
    });
    if (refusal !== null) {
      req.respondError(refusal);
      // Counted and logged like the HTTP/1.1 connection's own refusals.
      info.handler.accountConnectionError(info.remoteAddress, refusal, req);
      return;
    }
    info.handler.handle(req);
  }
}

/** One stream as the connection of its request: the answer's head and body become HTTP/2 frames. */
class StreamConnection implements RequestConnection {
  req: ClientRequest | null = null;
  private held: Buffer | null = null;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly info: SessionInfo,
    private readonly maxBodySize: number,
    /** The client sent `TE: trailers`: the answer ends with the upstream's trailers, if any. */
    private readonly wantsTrailers: boolean,
  ) {}

  get remoteAddress(): string | undefined {
    return this.info.remoteAddress;
  }

  get tlsSession(): TlsSession | null {
    return this.info.tlsSession;
  }

  pauseReading(): void {
    this.stream.pause();
  }

  resumeReading(): void {
    this.stream.resume();
  }

  /**
   * A streamed body past server.maxBodySize, as the HTTP/1.1 connection handles it: the exchange
   * lets go of its upstream request first (its body must never end there as if complete, which
   * answering through the request would do when the client's stream ends), then the client gets
   * 413, or a reset when its answer had begun.
   */
  bodyTooLarge(req: ClientRequest): boolean {
    if (this.maxBodySize === 0 || req.bytesIn <= this.maxBodySize) return false;
    if (req.aborted) return true; // answered at the first chunk past the limit
    const err = new BodyTooLargeError(this.maxBodySize);
    const started = req.headersSent;
    req.abort();
    this.held = null;
    if (started) {
      this.destroy();
    } else {
      const answer = errorResponse(err);
      this.writeResponseHead(`HTTP/2 ${answer.status} ${answer.reason}\r\n${answer.headerLines}\r\n`);
      if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end(answer.body);
    }
    this.info.handler.accountConnectionError(this.info.remoteAddress, err, req);
    return true;
  }

  keepAliveAfter(): boolean {
    return true;
  }

  /** "HTTP/x STATUS REASON\r\nName: value\r\n...\r\n" (client-request.ts) → HTTP/2 fields. */
  writeResponseHead(head: string): void {
    const stream = this.stream;
    if (stream.destroyed || stream.headersSent) return;
    const fields: http2.OutgoingHttpHeaders = {};
    const statusLine = addHeadFields(head, fields, CONNECTION_SPECIFIC);
    fields[':status'] = Number(statusLine.split(' ', 2)[1]);
    try {
      // A head with grpc-status is gRPC's "trailers-only" answer (an error, the proxy's own or
      // the upstream's): it ends the stream, as gRPC clients expect.
      if (fields['grpc-status'] !== undefined) {
        stream.respond(fields, { endStream: true });
      } else if (this.wantsTrailers) {
        stream.respond(fields, { waitForTrailers: true });
        stream.once('wantTrailers', () => this.sendTrailers());
      } else {
        stream.respond(fields);
      }
    } catch {
      stream.close(NGHTTP2_INTERNAL_ERROR);
    }
  }

  /** Node sends an empty DATA frame with END_STREAM when there are none. */
  private sendTrailers(): void {
    const fields: http2.OutgoingHttpHeaders = {};
    const raw = this.req?.trailers ?? [];
    for (let i = 0; i < raw.length; i += 2) addField(fields, raw[i].toLowerCase(), raw[i + 1]);
    try {
      this.stream.sendTrailers(fields);
    } catch {
      this.stream.close(NGHTTP2_INTERNAL_ERROR);
    }
  }

  /**
   * The last chunk of a read is held until the read is over (uncork) or the response ends with
   * it: a short answer then leaves in one end(chunk), one pass through node:http2's write path
   * instead of two. At most one chunk is held; the one before it is written at once.
   */
  write(chunk: Buffer): boolean {
    if (this.stream.destroyed || this.stream.writableEnded) return true;
    const before = this.held;
    this.held = chunk;
    return before === null || this.stream.write(before);
  }

  writeChunk(chunk: Buffer): boolean {
    return this.write(chunk);
  }

  /** The proxy's own short answers' bodies (HTTP/1.1's interim and chunk lines never come here). */
  writeRaw(s: string): void {
    if (!this.stream.destroyed && this.stream.headersSent && !this.stream.writableEnded)
      this.stream.write(Buffer.from(s, 'latin1'));
  }

  uncork(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.write(held);
  }

  finishRequest(): void {
    const held = this.held;
    this.held = null;
    if (this.stream.destroyed || this.stream.writableEnded) return;
    if (held === null) this.stream.end();
    else this.stream.end(held);
  }

  handOver(): never {
    throw new Error('no Upgrade tunnels over HTTP/2');
  }

  onTunnelCut(): void {}

  /** A response that cannot be completed must not look complete: RST_STREAM. */
  destroy(): void {
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  /** A stream that ended would look complete: a cut body is a reset stream. */
  cutAfterWrites(): void {
    this.destroy();
  }

  /** An injected reset: RST_STREAM, the stream's own reset (the session's other streams go on). */
  reset(): void {
    this.destroy();
  }
}
