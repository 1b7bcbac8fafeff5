/**
 * One client connection: HTTP/1.1 requests parsed by llhttp straight off the socket, answered one
 * at a time in order, with keep-alive, pipelining, client timeouts and backpressure both ways.
 *
 * This replaces node:http's server on the hot path: per request there is no IncomingMessage, no
 * ServerResponse and no header object, and a response head is written as one latin1 string
 * (llhttp hands header bytes over as latin1, one char per byte, so they go back out unchanged),
 * coalesced with the first body bytes into one write.
 */
import * as net from 'node:net';
import {
  BadRequestError,
  BodyTooLargeError,
  HeadersTooLargeError,
  RequestTimeoutError,
  type SwitchyardError,
} from '../errors';
import { errorResponse } from '../http1/error-response';
import { allowedUpgrade } from '../http1/fields';
import { HTTPParser, takeTrailers, writeChunk, type ParseError } from '../http1/parser';
import { METHODS } from '../node-internals';
import type { Listed } from './client-list';
import { ClientRequest, type RequestConnection } from './client-request';
import { EndHow, type ClientTransport, type TlsSession, type TransportSink } from './client-transport';
import {
  MESSAGE_BEGIN,
  MESSAGE_COMPLETE,
  returnParser,
  takeParser,
  type ParserClient,
  type PooledParser,
} from './parser-pool';

export interface ClientLimits {
  /** 0: no limit. */
  readonly maxBodySize: number;
  readonly keepAliveTimeout: number;
  readonly headersTimeout: number;
  readonly requestTimeout: number;
  readonly maxHeaderSize: number;
  /** Upgrade protocols that may become tunnels (lower-case names); any other is refused. */
  readonly upgradeProtocols: readonly string[];
}

/** What the server does with each request; called once per request, in order. */
export interface RequestListener {
  (req: ClientRequest): void;
}

export interface ClientConnectionOwner {
  readonly draining: boolean;
  removeClient(conn: ClientConnection): void;
  /** The connection answered a broken or slow request itself (400, 408, 413, 431): log and count it. */
  answeredError(conn: ClientConnection, err: SwitchyardError, req: ClientRequest | null): void;
}

const enum Phase {
  /** Between requests: waiting for the first byte of the next one. */
  Idle,
  /** A request head is arriving. */
  Head,
  /** The head is in; its body is arriving. */
  Body,
  /** The request is complete; no client deadline applies while its response is produced. */
  Done,
}

const enum State {
  Open,
  /** The socket was handed to an Upgrade tunnel (upgrade.ts); this object only tracks it. */
  Tunnel,
  /** Our FIN is sent; reading and discarding until the client closes (see endConnection). */
  Lingering,
  Closed,
}

/** How long a lingering close waits for the client's FIN before the socket is destroyed. */
const LINGER_MS = 2000;

const MAX_PIPELINED = 16;

/** Every empty request queue (ClientConnection.queue): never written to. */
/** RFC 9113 §3.4: the connection preface of HTTP/2 with prior knowledge. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const NO_REQUESTS: ClientRequest[] = [];

export class ClientConnection implements TransportSink, Listed, ParserClient, RequestConnection {
  /** The owner's (client-list.ts). */
  listIndex = -1;
  /**
   * Only while a request is being read: an idle keep-alive connection, or one waiting for its
   * response, holds no parser (2.1 KiB each), so thousands of them cost little more than their
   * sockets.
   */
  private parser: PooledParser | null = null;
  /** Inside parser.execute(): the parser cannot be released yet. */
  private executing = false;
  /** Once handed to an Upgrade tunnel. */
  private tunnelSocket: net.Socket | null = null;
  private tunnelCut: (() => void) | null = null;
  private phase = Phase.Idle;
  private deadline: number;
  private phaseStart = 0;
  /**
   * Requests in arrival order; the first is the one being answered. NO_REQUESTS when empty: an
   * array that held a request keeps a 17-slot store (184 bytes with itself), and an idle
   * keep-alive connection should cost no more than it must.
   */
  private queue: ClientRequest[] = NO_REQUESTS;
  /** The request whose body the parser is currently reading. */
  private reading: ClientRequest | null = null;
  /** An Upgrade request whose head was just parsed: dispatched once its read is done. */
  private pendingUpgrade: ClientRequest | null = null;
  /** The start of an incomplete head's request line, until its end is seen (checkRequestLine). */
  private partialLine: string | null = null;
  /** A request framed by Content-Length completed in the current read. */
  private lengthBodyEnded = false;
  private state = State.Open;
  /** No further request will be read (upgrade, CONNECT, parse error, HTTP/1.0 close). */
  private noMore = false;
  /**
   * The last request said Connection: close (or was HTTP/1.0 without keep-alive): the client
   * sends nothing after it. Not set by a broken request, whose client may still be sending.
   */
  private saidClose = false;
  private readPaused = false;
  /** An error answer owed after the queued requests (see failRequest). */
  private pendingError: SwitchyardError | null = null;
  /** The request answered by pendingError, when its head had come in (for the access log). */
  private broken: ClientRequest | null = null;
  private corked = false;
  /**
   * On an h2c listener, until the first read: where a connection that opens with HTTP/2's
   * preface goes (server.ts hands it to http2-front.ts).
   */
  h2c: ((socket: net.Socket) => void) | null = null;

  constructor(
    private readonly transport: ClientTransport,
    private readonly limits: ClientLimits,
    private readonly owner: ClientConnectionOwner,
    private readonly listener: RequestListener,
    /** Until the first request: keep-alive's idle time, or longer where a TLS handshake comes first. */
    firstWaitMs = limits.keepAliveTimeout,
  ) {
    this.deadline = Date.now() + firstWaitMs;
    transport.start(this);
  }

  get remoteAddress(): string | undefined {
    return this.transport.remoteAddress;
  }

  get tlsSession(): TlsSession | null {
    return this.transport.tlsSession;
  }

  // TransportSink: what the socket tells us.

  onData(data: Buffer): void {
    // Lingering: our last answer is out, and what the client still sends is read only to be dropped.
    if (this.state !== State.Open) return;
    if (this.h2c !== null && this.takeHttp2(data)) return;
    let parser = this.parser;
    if (parser === null) {
      parser = takeParser(this, this.limits.maxHeaderSize);
      this.parser = parser;
    }
    const continuesHead = this.phase === Phase.Head;
    this.lengthBodyEnded = false;
    if (this.phase === Phase.Idle) {
      // Between requests, a byte other than CR or LF starts the next one: llhttp would say so
      // through its message-begin callback, at a cost (parser-pool.ts says what it saves).
      const first = data[0];
      if (first !== 13 && first !== 10) {
        this.onParserMessageBegin();
        parser[HTTPParser.kOnMessageBegin] = undefined;
      } else {
        parser[HTTPParser.kOnMessageBegin] = MESSAGE_BEGIN;
      }
    }
    this.executing = true;
    const ret = parser.execute(data);
    this.executing = false;
    this.afterExecute(ret, data);
    // A head still incomplete at the end of a read (never on the fast path): see checkRequestLine.
    if (this.phase === Phase.Head && this.state === State.Open && typeof ret === 'number')
      this.checkRequestLine(data, continuesHead);
    this.releaseParserIfIdle();
  }

  /**
   * llhttp takes a request line without a version (`GET /path`) for HTTP/0.9 and then waits for
   * header lines that such a client never sends: it would hang until server.headersTimeout.
   * Once the line of an incomplete head is in, a missing version is answered with 400 at once.
   * The line is found after the last blank line of this read (the end of the head before it) or
   * carried over from earlier reads; after a request with a Content-Length body completed in the
   * same read, where the line starts is unknown, and the head timeout still applies.
   */
  private checkRequestLine(data: Buffer, continuesHead: boolean): void {
    let text: string;
    if (continuesHead) {
      if (this.partialLine === null) return; // this head's line was already checked
      text = this.partialLine + data.toString('latin1', 0, this.limits.maxHeaderSize);
    } else {
      if (this.lengthBodyEnded) return;
      const blank = data.lastIndexOf('\r\n\r\n');
      const from = blank === -1 ? 0 : blank + 4;
      text = data.toString('latin1', from, from + this.limits.maxHeaderSize);
    }
    let start = 0;
    while (start < text.length && (text.charCodeAt(start) === 13 || text.charCodeAt(start) === 10)) start++;
    const eol = text.indexOf('\n', start);
    if (eol === -1) {
      this.partialLine = text.slice(start);
      return;
    }
    this.partialLine = null;
    const line = text.slice(start, text.charCodeAt(eol - 1) === 13 ? eol - 1 : eol);
    if (!/ [A-Za-z]+\/\d\.\d$/.test(line))
      this.failRequest(new BadRequestError('request line without an HTTP version'));
  }

  /**
   * A client's FIN means it is gone, as nginx (499) and node:http take it: what it asked for is
   * abandoned, and upstream exchanges for it are aborted.
   */
  onEnd(): void {
    this.destroy();
  }

  onDrain(): void {
    if (this.state === State.Open) this.queue[0]?.onDrain?.();
  }

  get idle(): boolean {
    return this.queue.length === 0 && this.phase === Phase.Idle;
  }

  /** A tunnel, or a response already streaming: what a reload lets run on for timeouts.streamDrain. */
  get longLived(): boolean {
    if (this.state === State.Tunnel) return true;
    const current = this.queue[0];
    return current !== undefined && current.headersSent && !current.finished;
  }

  /** Called by the server's sweep. */
  checkDeadline(now: number): void {
    if (this.state === State.Closed || this.state === State.Tunnel || now < this.deadline) return;
    if (this.state === State.Lingering) {
      this.destroy();
      return;
    }
    switch (this.phase) {
      case Phase.Idle:
        if (this.queue.length === 0) this.destroy(); // keep-alive timeout: nothing to say
        return;
      case Phase.Head:
      case Phase.Body:
        this.failRequest(
          this.phase === Phase.Head
            ? new RequestTimeoutError('head', this.limits.headersTimeout)
            : new RequestTimeoutError('request', this.limits.requestTimeout),
        );
        return;
      case Phase.Done:
        return;
    }
  }

  /**
   * Drain: a busy connection closes after its current response (which says Connection: close).
   * An idle one gets at most `graceMs` more: a request arriving meanwhile is answered, with
   * Connection: close. Closing it at once would race a request the client may be sending now,
   * and that request would meet a reset.
   */
  drainIdle(graceMs: number): void {
    if (this.idle && this.state === State.Open) this.deadline = Math.min(this.deadline, Date.now() + graceMs);
  }

  /**
   * ALPN chose h2 before any request: the socket goes to an HTTP/2 session (http2-front.ts),
   * and this object only counts it until it closes, as for a tunnel.
   */
  handOverSession(): net.Socket {
    this.state = State.Tunnel;
    this.releaseParser();
    const socket = this.transport.detach();
    this.tunnelSocket = socket;
    socket.on('error', () => undefined);
    socket.once('close', () => this.onClose());
    return socket;
  }

  /**
   * RFC 9113 §3.3: a client with prior knowledge opens with the preface ("PRI * HTTP/2.0..."),
   * which no HTTP/1.1 request starts with. Its socket goes to an HTTP/2 session, the bytes read
   * so far put back in front (they may be the shared read buffer's: copied).
   */
  private takeHttp2(data: Buffer): boolean {
    const toHttp2 = this.h2c!;
    this.h2c = null;
    const n = Math.min(data.length, H2_PREFACE.length);
    if (n < 4 || data.compare(H2_PREFACE, 0, n, 0, n) !== 0) return false;
    const socket = this.handOverSession();
    // Not flowing, or the bytes put back would be emitted to nobody before node:http2 reads them.
    socket.pause();
    socket.unshift(Buffer.from(data));
    toHttp2(socket);
    return true;
  }

  /** For ClientRequest.takeSocket: stop parsing and give the socket to a tunnel. */
  handOver(req: ClientRequest): { socket: net.Socket; head: Buffer } {
    if (this.queue[0] === req) this.unqueue(0);
    this.state = State.Tunnel;
    this.reading = null;
    this.uncork();
    this.releaseParser();
    const socket = this.transport.detach();
    this.tunnelSocket = socket;
    // The tunnel owns the socket now; this object only counts it until it closes (or a drain
    // runs out of time and cuts it).
    socket.on('error', () => undefined);
    socket.once('close', () => this.onClose());
    // Reads were stopped while the upgrade waited; a paused stream would never restart them.
    if (this.readPaused) {
      this.readPaused = false;
      socket.resume();
    }
    return { socket, head: req.upgradeHead ?? Buffer.alloc(0) };
  }

  /** A chunked body grew past server.maxBodySize: 413 (or a cut, if the response began), then close. */
  bodyTooLarge(req: ClientRequest): boolean {
    const max = this.limits.maxBodySize;
    if (max === 0 || req.bytesIn <= max || this.reading !== req) return false;
    this.failRequest(new BodyTooLargeError(max));
    return true;
  }

  keepAliveAfter(req: ClientRequest): boolean {
    // When nothing more will be read, only the last response owed says close: requests queued
    // behind this one, or an error answer owed after them, still go out on this connection.
    const last = this.queue.length <= 1 && this.pendingError === null;
    return req.clientKeepAlive && !req.isUpgrade && !this.owner.draining && !(this.noMore && last);
  }

  // Writing, for ClientRequest.

  writeResponseHead(head: string): void {
    // Held back until flush(): the upstream's current read is handled first, so the head and the
    // first body bytes leave in one write.
    if (!this.corked) {
      this.corked = true;
      this.transport.cork();
    }
    this.transport.write(head);
  }

  write(chunk: Buffer): boolean {
    return this.transport.write(chunk);
  }

  writeChunk(chunk: Buffer): boolean {
    return writeChunk(this.transport, chunk);
  }

  writeRaw(s: string): void {
    this.transport.write(s);
  }

  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.transport.uncork();
  }

  /** Every removal of one request goes here, so an emptied queue always goes back to NO_REQUESTS. */
  private unqueue(index: number): void {
    if (index === 0) this.queue.shift();
    else this.queue.splice(index, 1);
    if (this.queue.length === 0) this.queue = NO_REQUESTS;
  }

  private takeQueue(): ClientRequest[] {
    const queue = this.queue;
    this.queue = NO_REQUESTS;
    return queue;
  }

  finishRequest(req: ClientRequest, closeAfter: boolean): void {
    this.uncork();
    if (this.queue[0] !== req) return;
    this.unqueue(0);
    if (this.reading === req && !req.bodyComplete) {
      // Answered before its body was read (an early error or an upstream's early response):
      // the unread rest would be taken for the next request, so this connection ends here.
      closeAfter = true;
    }
    if (closeAfter || this.state !== State.Open || this.owner.draining) {
      this.endConnection();
      return;
    }
    // An idle connection keeps nothing of the request it answered: thousands of idle keep-alive
    // connections would otherwise each hold a request, its headers and its exchange.
    if (this.reading === req) this.reading = null;
    req.onAbort = null;
    req.onDrain = null;
    if (this.queue.length === 0 && this.phase === Phase.Idle) {
      this.deadline = Date.now() + this.limits.keepAliveTimeout;
    }
    if (this.readPaused && !(this.reading?.readingPaused ?? false)) this.resumeReading();
    this.dispatchNext();
    this.releaseParserIfIdle();
  }

  destroy(): void {
    if (this.state === State.Closed) return;
    if (this.tunnelSocket !== null) {
      // A tunnel that knows how to say goodbye (a WebSocket's 1001 close frame) ends itself.
      if (this.tunnelCut !== null) {
        const cut = this.tunnelCut;
        this.tunnelCut = null;
        cut();
        return;
      }
      this.tunnelSocket.destroy();
    } else {
      this.transport.destroy();
    }
    this.onClose();
  }

  cutAfterWrites(req: ClientRequest): void {
    this.finishRequest(req, true);
  }

  reset(): void {
    if (this.state === State.Closed || this.tunnelSocket !== null) {
      this.destroy();
      return;
    }
    this.transport.reset();
    this.onClose();
  }

  /** The tunnel's own way to end when the connection must be cut (drain timeout). */
  onTunnelCut(cut: () => void): void {
    this.tunnelCut = cut;
  }

  pauseReading(): void {
    if (this.readPaused || this.state === State.Closed || this.state === State.Tunnel) return;
    this.readPaused = true;
    this.transport.setReading(false);
  }

  resumeReading(): void {
    if (!this.readPaused || this.state === State.Closed || this.state === State.Tunnel) return;
    this.readPaused = false;
    this.transport.setReading(true);
  }

  /**
   * Between requests, with nothing half-parsed: the parser goes back to the pool until the next
   * byte, also while the response is still on its way (a burst of thousands of clients waiting
   * for upstream connections then holds no parser each).
   */
  private releaseParserIfIdle(): void {
    if (this.parser !== null && !this.executing && this.phase === Phase.Idle && this.pendingUpgrade === null) {
      this.releaseParser();
    }
  }

  private releaseParser(): void {
    const parser = this.parser;
    if (parser === null) return;
    this.parser = null;
    // Mid-execute (a close from inside a callback): it goes back once the stack unwinds.
    if (this.executing) setImmediate(returnParser, parser);
    else returnParser(parser);
  }

  // Parsing.

  onParserHeaders(
    major: number,
    minor: number,
    raw: string[],
    methodIndex: number | undefined,
    target: string,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (this.state !== State.Open) return 1;
    const method = METHODS[methodIndex ?? -1] ?? 'GET';
    this.phase = Phase.Body;
    this.deadline = this.phaseStart + this.limits.requestTimeout;
    const req = new ClientRequest(this, method, target, raw, major, minor, keepAlive, upgrade);
    let tunnel = upgrade;
    if (upgrade && req.facts.upgrade !== null) {
      req.upgradeTo = allowedUpgrade(req.facts.upgrade, this.limits.upgradeProtocols);
      if (req.upgradeTo === null) {
        // Not allowed (h2c, say): an ordinary request, body and all, proxied without its Upgrade
        // so no protocol switch slips past routing and header rules (h2c smuggling). llhttp
        // still stops after it: nothing more is read, and the connection closes after the answer.
        tunnel = false;
        this.noMore = true;
      }
    }
    // A request without a body is complete with its head (below), and llhttp's message-complete
    // callback for it would find nothing to do.
    const hasBody = req.declaresBody;
    const parser = this.parser;
    if (parser !== null) parser[HTTPParser.kOnMessageComplete] = !tunnel && hasBody ? MESSAGE_COMPLETE : undefined;
    this.reading = req;
    if (this.queue === NO_REQUESTS) this.queue = [req];
    else this.queue.push(req);
    if (tunnel) {
      // llhttp stops at the end of an Upgrade or CONNECT head: what follows is another protocol.
      // It is dispatched from afterExecute, which knows where the head ended; if it is not
      // tunnelled, it is answered as a plain request and the connection closes after it.
      this.noMore = true;
      this.onParserMessageComplete();
      this.pauseReading();
      this.pendingUpgrade = req;
      return 0;
    } else {
      if (!keepAlive) {
        this.noMore = true;
        this.saidClose = true;
      }
      // A request that declares no body (RFC 9112 §6.3) is complete with its head, so an answer
      // given right away is not an early one that would leave body bytes unread.
      if (!hasBody) this.onParserMessageComplete();
    }
    if (this.queue.length === 1) this.dispatchNext();
    else if (this.queue.length >= MAX_PIPELINED) this.pauseReading();
    return 0;
  }

  onParserMessageComplete(): void {
    // A request's trailers are dropped (RFC 9110 §6.5.1 lets a proxy discard them): none of our
    // upstreams is asked to expect them.
    if (this.parser !== null) takeTrailers(this.parser);
    if (this.state !== State.Open) return;
    const req = this.reading;
    if (req === null || req.bodyComplete) return;
    this.phase = this.noMore ? Phase.Done : Phase.Idle;
    this.deadline = Date.now() + this.limits.keepAliveTimeout;
    // A request pipelined behind this one in the same read begins inside llhttp: it must say so.
    if (this.parser !== null) this.parser[HTTPParser.kOnMessageBegin] = MESSAGE_BEGIN;
    if (req.facts.contentLength !== null && req.facts.transferEncoding === null) this.lengthBodyEnded = true;
    req.bodyEnd();
  }

  private afterExecute(ret: number | ParseError, data: Buffer): void {
    const upgrade = this.pendingUpgrade;
    if (upgrade !== null && typeof ret === 'number') {
      this.pendingUpgrade = null;
      upgrade.upgradeHead = Buffer.from(data.subarray(ret));
      if (this.queue.length === 1) this.dispatchNext();
      return;
    }
    if (typeof ret === 'number' || this.state !== State.Open) return;
    if (ret.code === 'HPE_PAUSED_UPGRADE' || ret.code === 'HPE_PAUSED') return;
    if (ret.code === 'HPE_CLOSED_CONNECTION') {
      // Bytes after a request that said Connection: close; they are not a request.
      this.pauseReading();
      return;
    }
    this.failRequest(
      ret.code === 'HPE_HEADER_OVERFLOW'
        ? new HeadersTooLargeError(this.limits.maxHeaderSize)
        : new BadRequestError(`invalid request: ${ret.reason ?? ret.code}`),
    );
  }

  /**
   * The client broke the protocol, or was too slow. Requests already complete and queued ahead
   * of the broken one are still answered, in order; then the error answer, then close.
   */
  private failRequest(err: SwitchyardError): void {
    this.noMore = true;
    this.saidClose = false;
    this.pauseReading();
    // Only a request whose head completed is in the queue; a broken head never got there.
    const broken = this.phase === Phase.Body ? this.reading : null;
    this.broken = broken;
    this.reading = null;
    this.phase = Phase.Done;
    if (broken !== null) {
      if (broken === this.queue[0] && broken.headersSent) {
        // Its response has begun: it can only be cut.
        this.destroy();
        return;
      }
      this.unqueue(this.queue.indexOf(broken));
      broken.abort();
    }
    this.pendingError = err;
    if (this.queue.length === 0) this.dispatchNext();
  }

  private dispatchNext(): void {
    const next = this.queue[0];
    if (next !== undefined) {
      this.listener(next);
      return;
    }
    if (this.pendingError !== null) {
      const err = this.pendingError;
      this.pendingError = null;
      const answer = errorResponse(err);
      this.transport.write(
        `HTTP/1.1 ${answer.status} ${answer.reason}\r\n${answer.headerLines}Connection: close\r\n\r\n${answer.body}`,
      );
      const broken = this.broken;
      this.broken = null;
      this.owner.answeredError(this, err, broken);
    }
    if (this.noMore) this.endConnection();
  }

  /**
   * The last response is out: send FIN, then keep reading (and discarding) until the client
   * closes or LINGER_MS pass. Destroying at once could make the kernel answer unread client bytes
   * with a reset that discards the response before the client reads it (nginx lingers likewise).
   */
  private endConnection(): void {
    if (this.state !== State.Open) return;
    // Linger only when the client may still be sending: a request or body not read to its end,
    // or requests queued behind the last answer. Otherwise close once the response is flushed.
    const mayBeSending = this.phase === Phase.Head || this.phase === Phase.Body || this.queue.length > 0;
    this.state = State.Lingering;
    for (const req of this.takeQueue()) req.abort();
    this.reading = null;
    this.uncork();
    if (!mayBeSending) {
      // A client that said close (and, not sending, was read to the end) sends nothing more: no
      // half-close step.
      if (this.transport.end(this.saidClose ? EndHow.Close : EndHow.FinThenClose)) this.onClose();
      return;
    }
    this.transport.end(EndHow.Fin);
    this.deadline = Date.now() + LINGER_MS;
    this.resumeReading();
  }

  /** The socket is gone (from the transport, or from destroy()). */
  onClose(): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    for (const req of this.takeQueue()) req.abort();
    this.reading = null;
    this.releaseParser();
    this.owner.removeClient(this);
  }

  // llhttp's callbacks, through the parser pool (parser-pool.ts).

  onParserMessageBegin(): void {
    if (this.state !== State.Open) return;
    this.phase = Phase.Head;
    this.partialLine = null;
    this.phaseStart = Date.now();
    this.deadline = this.phaseStart + this.limits.headersTimeout;
  }

  onParserBody(chunk: Buffer): void {
    if (this.state === State.Open) this.reading?.bodyChunk(chunk);
  }
}
