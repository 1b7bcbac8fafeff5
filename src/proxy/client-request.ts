/**
 * One HTTP/1.1 request (or HTTP/2 stream: http2-front.ts) and its response, as the handler sees them: the request's fields and a
 * body that is pushed to whoever pipes it, and writeHead / write / end (or respondError) for the
 * answer. The connection it arrived on (client-connection.ts) does the framing and the I/O.
 */
import type * as net from 'node:net';
import type { SwitchyardError } from '../errors';
import type { BodyTarget, RequestBody } from '../io/body';
import { errorResponse, grpcErrorResponse } from '../http1/error-response';
import { findHeader, scanHeaders, type HeaderFacts } from '../http1/fields';
import type { TlsSession } from './client-transport';

/** Bodies of pipelined requests waiting their turn are buffered up to this, then reading stops. */
const MAX_QUEUED_BODY = 64 * 1024;

/** What a request needs from the connection it arrived on. */
export interface RequestConnection {
  readonly remoteAddress: string | undefined;
  readonly tlsSession: TlsSession | null;
  pauseReading(): void;
  resumeReading(): void;
  /** A chunked body grew past server.maxBodySize: answered and closed (true), or within it. */
  bodyTooLarge(req: ClientRequest): boolean;
  keepAliveAfter(req: ClientRequest): boolean;
  /** A complete response head, held back until flush() so the first body bytes join it. */
  writeResponseHead(head: string): void;
  write(chunk: Buffer): boolean;
  writeChunk(chunk: Buffer): boolean;
  writeRaw(s: string): void;
  uncork(): void;
  finishRequest(req: ClientRequest, closeAfter: boolean): void;
  handOver(req: ClientRequest): { socket: net.Socket; head: Buffer };
  onTunnelCut(cut: () => void): void;
  destroy(): void;
  /** An injected fault: reset the connection (TCP RST; RST_STREAM for an HTTP/2 stream). */
  reset(): void;
  /**
   * An injected fault: what was written goes out, then the connection closes without ending the
   * message (no last chunk), so the client sees a cut body. An HTTP/2 stream is reset.
   */
  cutAfterWrites(req: ClientRequest): void;
}

/**
 * One request and its response. The handler reads the request fields and answers through
 * writeHead / write / end, or respondError; it learns of the client leaving via `onAbort`.
 */
export class ClientRequest implements RequestBody {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly httpMajor: number;
  readonly httpMinor: number;
  /** llhttp's verdict from version and Connection header. */
  readonly clientKeepAlive: boolean;
  /**
   * An Upgrade (or CONNECT) request that llhttp stopped after: nothing more is read on this
   * connection. For an Upgrade, `upgradeTo` says whether it may become a tunnel.
   */
  readonly isUpgrade: boolean;
  /** The Upgrade protocols asked for that server.upgradeProtocols allows, as sent; null: none. */
  upgradeTo: string | null = null;
  readonly facts: HeaderFacts;
  headersSent = false;
  /** The upstream's trailer fields (name, value, ...), relayed after the body: set before end(). */
  trailers: string[] | null = null;
  finished = false;
  /** For the access log: the status sent, and body bytes each way. */
  status = 0;
  bytesIn = 0;
  bytesOut = 0;
  aborted = false;
  /** Injected faults that hit this request (`name:kind,...`), for the access log; null for none. */
  fault: string | null = null;
  /** The handler's: called once if the client goes away before `end()`. */
  onAbort: (() => void) | null = null;
  /** The handler's: called when the client accepts more after write() returned false. */
  onDrain: (() => void) | null = null;
  /** Upgrade requests: bytes the client sent after the head, which belong to the tunnel. */
  upgradeHead: Buffer | null = null;

  /** Body chunks that arrived before anyone asked for them (pipelined requests). */
  private queued: Buffer[] | null = null;
  private queuedBytes = 0;
  private bodyEnded = false;
  private target: BodyTarget | null = null;
  private chunkedResponse = false;
  private closeAfter = false;
  private paused = false;

  constructor(
    private readonly conn: RequestConnection,
    method: string,
    url: string,
    rawHeaders: string[],
    httpMajor: number,
    httpMinor: number,
    keepAlive: boolean,
    upgrade: boolean,
  ) {
    this.httpMajor = httpMajor;
    this.method = method;
    this.url = url;
    this.rawHeaders = rawHeaders;
    this.httpMinor = httpMinor;
    this.clientKeepAlive = keepAlive;
    this.isUpgrade = upgrade;
    this.facts = scanHeaders(rawHeaders);
  }

  /** A body follows the head (RFC 9112 §6.3: only with Transfer-Encoding or a non-zero Content-Length). */
  get declaresBody(): boolean {
    const f = this.facts;
    return f.transferEncoding !== null || (f.contentLength !== null && Number(f.contentLength) > 0);
  }

  get remoteAddress(): string | undefined {
    return this.conn.remoteAddress;
  }

  /** The connection's TLS version and resumption; null over plain TCP. */
  get tlsSession(): TlsSession | null {
    return this.conn.tlsSession;
  }

  // RequestBody: the upstream connection pulls the body through these.

  pipeTo(target: BodyTarget): void {
    this.target = target;
    // The client holds its body back until told to go on: tell it now that someone takes it.
    if (this.facts.expect !== null && !this.bodyEnded && !this.headersSent && this.httpMinor >= 1) {
      this.conn.writeRaw('HTTP/1.1 100 Continue\r\n\r\n');
    }
    const queued = this.queued;
    this.queued = null;
    this.queuedBytes = 0;
    if (queued !== null) for (const chunk of queued) target.onBodyChunk(chunk);
    if (this.bodyEnded) target.onBodyEnd();
    else this.conn.resumeReading();
  }

  unpipe(): void {
    this.target = null;
  }

  pause(): void {
    this.paused = true;
    this.conn.pauseReading();
  }

  resume(): void {
    this.paused = false;
    this.conn.resumeReading();
  }

  /** From the parser. */
  bodyChunk(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    if (this.conn.bodyTooLarge(this)) return;
    if (this.target !== null) {
      this.target.onBodyChunk(chunk);
      return;
    }
    if (this.aborted || this.finished) return; // answered already: the rest is read and dropped
    (this.queued ??= []).push(chunk);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > MAX_QUEUED_BODY) this.conn.pauseReading();
  }

  /** From the parser. */
  bodyEnd(): void {
    this.bodyEnded = true;
    this.target?.onBodyEnd();
  }

  get bodyComplete(): boolean {
    return this.bodyEnded;
  }

  get readingPaused(): boolean {
    return this.paused;
  }

  // The response.

  /**
   * `head` holds the status line's fields and the header lines ("Name: value\r\n"...) without
   * framing; `contentLength` tells whether they include a Content-Length.
   */
  writeHead(status: number, reason: string, headerLines: string, contentLength: boolean): void {
    if (this.headersSent || this.aborted) return;
    this.headersSent = true;
    this.status = status;
    if (this.httpMajor === 2) {
      // HTTP/2 frames the body itself (http2-front.ts turns the head into fields).
      this.conn.writeResponseHead(`HTTP/2 ${status} ${reason}\r\n${headerLines}\r\n`);
      return;
    }
    const noBody = this.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    let framing = '';
    if (!noBody && !contentLength) {
      // A body of unknown length: chunked to HTTP/1.1 clients, delimited by close to HTTP/1.0 ones.
      if (this.httpMinor >= 1) {
        this.chunkedResponse = true;
        framing = 'Transfer-Encoding: chunked\r\n';
      } else {
        this.closeAfter = true;
      }
    }
    const keepAlive = !this.closeAfter && this.conn.keepAliveAfter(this);
    if (!keepAlive) this.closeAfter = true;
    const connection = keepAlive ? (this.httpMinor === 0 ? 'Connection: keep-alive\r\n' : '') : 'Connection: close\r\n';
    this.conn.writeResponseHead(`HTTP/1.1 ${status} ${reason}\r\n${headerLines}${framing}${connection}\r\n`);
  }

  /** An interim (1xx) response, before the final head; `headerLines` as for writeHead. */
  writeInterim(status: number, reason: string, headerLines: string): void {
    if (this.headersSent || this.aborted) return;
    this.conn.writeRaw(`HTTP/1.1 ${status} ${reason}\r\n${headerLines}\r\n`);
  }

  /** Returns false when the client is not keeping up; `onDrain` follows. */
  write(chunk: Buffer): boolean {
    if (this.aborted || chunk.length === 0) return true;
    this.bytesOut += chunk.length;
    return this.chunkedResponse ? this.conn.writeChunk(chunk) : this.conn.write(chunk);
  }

  /** Send what writeHead/write held back (the end of one upstream read). */
  flush(): void {
    this.conn.uncork();
  }

  end(): void {
    if (this.finished || this.aborted) return;
    this.finished = true;
    if (this.chunkedResponse) this.conn.writeRaw(this.trailers === null ? '0\r\n\r\n' : lastChunk(this.trailers));
    this.conn.finishRequest(this, this.closeAfter);
  }

  /**
   * Upgrade requests: take the client socket for a tunnel. The connection stops parsing; bytes
   * already read after the head are returned with it.
   */
  takeSocket(): { socket: net.Socket; head: Buffer } {
    this.finished = true;
    return this.conn.handOver(this);
  }

  /** After takeSocket: how the tunnel ends itself when the connection is cut. */
  onTunnelCut(cut: () => void): void {
    this.conn.onTunnelCut(cut);
  }

  /**
   * The proxy's own answer for `err` (errorResponse); `close` ends the connection after it. If
   * bytes of a response already went out, ending it normally would pass a truncated body off as
   * complete, so the connection is cut instead. A client that went away (499) gets nothing.
   */
  respondError(err: SwitchyardError, close = false): void {
    if (err.status === 499) return;
    if (this.headersSent || this.aborted) {
      this.destroy();
      return;
    }
    if (close) this.closeAfter = true;
    const grpc = findHeader(this.rawHeaders, 'content-type')?.startsWith('application/grpc') === true;
    const answer = grpc ? grpcErrorResponse(err) : errorResponse(err);
    this.respond(answer.status, answer.reason, answer.headerLines, answer.body);
  }

  /** A complete short answer from the proxy itself; `headerLines` include its Content-Length. */
  respond(status: number, reason: string, headerLines: string, body: string): void {
    this.writeHead(status, reason, headerLines, true);
    if (this.method !== 'HEAD' && body.length > 0) {
      this.conn.writeRaw(body);
      this.bytesOut += Buffer.byteLength(body);
    }
    this.end();
  }

  /** Cut the client connection: a response that cannot be completed must not look complete. */
  destroy(): void {
    if (this.finished) return;
    this.finished = true;
    this.conn.destroy();
  }

  /** An injected fault: the body written so far reaches the client, then the connection closes mid-message. */
  cutAfterWrites(): void {
    if (this.finished) return;
    this.finished = true;
    this.conn.cutAfterWrites(this);
  }

  /** An injected fault: the connection is reset, nothing more is sent. */
  reset(): void {
    if (this.finished) return;
    this.finished = true;
    this.conn.reset();
  }

  /** From the connection: the client went away. */
  abort(): void {
    if (this.finished || this.aborted) return;
    this.aborted = true;
    this.target = null;
    this.queued = null;
    const onAbort = this.onAbort;
    this.onAbort = null;
    onAbort?.();
  }
}

/** The last chunk with a trailer section (RFC 9112 §7.1.2). */
function lastChunk(trailers: readonly string[]): string {
  let s = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) s += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  return `${s}\r\n`;
}
