/**
 * One keep-alive connection to an upstream and the HTTP/1.1 exchanges over it, one at a time.
 *
 * The request head goes out as one string. llhttp parses each response head (and chunked bodies);
 * a body framed by Content-Length is counted off in JS instead, because Node's llhttp binding
 * copies every body chunk into an ArrayBuffer of its own, and freeing those dominated the
 * scavenges on small responses. Plain TCP sockets read into the worker's
 * one read buffer (read-buffer.ts). Listeners and parser callbacks are bound once
 * per connection, not per request, which is most of what makes this cheaper than node:http's client.
 *
 * A connection goes back to the pool only when the exchange ended cleanly: the whole request was
 * written, the whole response was read, the upstream allowed keep-alive, and no stray byte
 * followed. Anything else destroys it, so no byte of one exchange can reach another.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import {
  SwitchyardError,
  UpstreamConnectTimeoutError,
  UpstreamHeadersTimeoutError,
  UpstreamIdleTimeoutError,
  UpstreamProtocolError,
  UpstreamResetError,
  toSwitchyardError,
} from '../errors';
import {
  createParser,
  HTTPParser,
  initParser,
  takeTrailers,
  writeChunk,
  type HTTPParserInstance,
  type Parser,
  type ParseError,
} from '../http1/parser';

import { responseFraming } from '../http1/response-framing';
import { releaseBody, type BodyTarget, type RequestBody } from '../io/body';
import { ExchangePhase, retryHint, type RetryHint } from './exchange-phase';
import { LARGE_CHUNK, takeChunk } from '../io/body-chunks';
import { readBuffer } from '../io/read-buffer';
import type { UpstreamTarget } from './target';
import { writeLatin1 } from '../io/stream-wrap';
import { deferWrite, shouldDefer, type DeferredWriter } from '../io/write-batch';

export type { UpstreamTarget };

export interface ConnectionTimeouts {
  readonly connect: number;
  readonly responseHeader: number;
  readonly idle: number;
  readonly keepAlive: number;
}

/** The receiving side of one exchange (the proxy handler implements it). */
export interface ResponseSink {
  /** An interim response (1xx other than 100 and 101), before the final one. */
  onInformational(status: number, reason: string, rawHeaders: string[]): void;
  /** The final (non-1xx) response head. */
  onHead(status: number, reason: string, rawHeaders: string[]): void;
  /** A body chunk. Return false to stop reading from the upstream until `resume()`. */
  onData(chunk: Buffer): boolean;
  /** A chunked response's trailer fields, before onEnd. */
  onTrailers(rawTrailers: string[]): void;
  onEnd(): void;
  /** The end of one upstream read: send on what was written so far. */
  flush(): void;
  /** `hint`: how far the exchange got, which decides whether it may be sent again. */
  onError(err: SwitchyardError, hint: RetryHint): void;
}

/**
 * One exchange's way to an upstream, as the handler sees it: an HTTP/1.1 connection (this file)
 * or a stream of an HTTP/2 session (http2-stream.ts).
 */
export interface UpstreamChannel {
  send(head: string, body: RequestBody | null, framing: BodyFraming | null, isHead: boolean, sink: ResponseSink): void;
  /** Continue reading the response after the sink returned false from onData. */
  resume(): void;
  abort(): void;
}

export interface UpstreamConnectionOwner {
  release(conn: UpstreamConnection): void;
  remove(conn: UpstreamConnection): void;
}

export type BodyFraming = 'length' | 'chunked';

const enum State {
  Busy,
  Idle,
  Closed,
}

const MAX_RESPONSE_HEADER_SIZE = 64 * 1024;
const LAST_CHUNK = '0\r\n\r\n';
/** llhttp's answer from a head callback: no body follows here, stop parsing (the body is ours). */
const HEAD_ONLY_STOP = 2;

/**
 * Body bytes from the worker's shared read buffer (read-buffer.ts), copied into memory the sink
 * may keep. allocUnsafe slices Node's 8 KiB pool for anything up to 4 KiB: one ArrayBuffer per
 * few hundred small responses instead of one each. Larger chunks take memory that the client
 * transport gives back once written (body-chunks.ts).
 */
function copyOut(from: Buffer, start: number, length: number): Buffer {
  const chunk = length > LARGE_CHUNK ? takeChunk(length) : Buffer.allocUnsafe(length);
  from.copy(chunk, 0, start, start + length);
  return chunk;
}

export class UpstreamConnection implements UpstreamChannel, BodyTarget, DeferredWriter {
  readonly socket: net.Socket;
  /** Exchanges completed on this connection; > 0 means it came from the pool. */
  completed = 0;

  private readonly parser: Parser;
  /**
   * The last head was answered with HEAD_ONLY_STOP, which leaves llhttp's upgrade flag set: the
   * parser must be initialised again before the next response (see initParser).
   */
  private parserStopped = false;
  /**
   * llhttp's message-complete and message-begin callbacks, each in the parser's slot only while
   * it has something to say: Node calls into JS for every slot that holds a function, and on a
   * response whose body is counted here neither does (a begin matters only after the final
   * response, as a byte nobody asked for). proxy/parser-pool.ts does the same on the client side.
   */
  private readonly onMessageComplete: () => void;
  private readonly onStrayMessage: () => void;
  private state = State.Busy;
  private connecting = true;
  private sink: ResponseSink | null = null;
  private body: RequestBody | null = null;
  private chunked = false;
  /** The body is attached only once connected: until then, a failed connect leaves it unread. */
  private bodyPiped = false;
  private requestDone = false;
  /** How far the current exchange got (exchange-phase.ts). */
  private phase = ExchangePhase.Connecting;
  private keepAlive = false;
  private skipBody = false;
  /** An interim (1xx) response is being read; the final one follows. */
  private informational = false;
  private poisoned = false;
  /** Bytes of a Content-Length body still to come, counted in JS; 0 when llhttp frames the body. */
  private bodyLeft = 0;
  private paused = false;
  /** A bodiless request's head, waiting for the end of the I/O phase (write-batch.ts). */
  private pendingHead: string | null = null;
  private readonly plainTcp: boolean;
  /** When the current phase times out (ms since epoch). */
  private deadline = 0;

  constructor(
    target: UpstreamTarget,
    private readonly owner: UpstreamConnectionOwner,
    private readonly timeouts: ConnectionTimeouts,
    onTlsSession: ((s: Buffer) => void) | null,
  ) {
    const socket =
      target.tls === null
        ? net.connect({
            host: target.host,
            port: target.port,
            noDelay: true,
            onread: { buffer: readBuffer, callback: (n: number) => this.onBytes(readBuffer, n, false) },
          })
        : tls.connect({ ...target.tls, host: target.host, port: target.port }).setNoDelay(true);
    this.socket = socket;
    this.plainTcp = target.tls === null;
    this.deadline = Date.now() + timeouts.connect;
    socket.once(target.tls === null ? 'connect' : 'secureConnect', () => {
      this.connecting = false;
      if (this.state === State.Busy) {
        if (this.phase === ExchangePhase.Connecting) this.phase = ExchangePhase.HeadSent;
        this.deadline =
          Date.now() + (this.phase >= ExchangePhase.ReadingBody ? timeouts.idle : timeouts.responseHeader);
      }
      if (this.body !== null && !this.bodyPiped && this.state === State.Busy) this.pipeBody();
    });
    // TLS reads arrive as Buffers of their own, which body chunks may keep without a copy.
    if (target.tls !== null) socket.on('data', (d: Buffer) => this.onBytes(d, d.length, true));
    if (onTlsSession !== null) socket.on('session', onTlsSession);
    socket.on('end', () => this.onSocketEnd());
    socket.on('error', (err) => this.fail(toSwitchyardError(err)));
    socket.on('close', () => this.fail(new UpstreamResetError('upstream closed the connection')));
    socket.on('drain', () => this.body?.resume());

    const parser = createParser(
      'response',
      MAX_RESPONSE_HEADER_SIZE,
      (_maj, _min, headers, _m, _u, status, reason, upgrade, keepAlive) =>
        this.onHeadersComplete(headers, status, reason, upgrade, keepAlive),
    );
    // Set only once the final response is complete (see below); a fresh connection waits for one.
    parser[HTTPParser.kOnMessageBegin] = undefined;
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => this.deliver(chunk);
    // Not called for a body counted here: HEAD_ONLY_STOP unsets it (onHeadersComplete).
    this.onMessageComplete = () => {
      const trailers = takeTrailers(parser);
      if (this.informational) {
        this.informational = false;
      } else if (this.phase === ExchangePhase.ReadingBody) {
        this.phase = ExchangePhase.Done;
        if (trailers !== null && this.sink !== null && !this.poisoned) this.sink.onTrailers(trailers);
        // A message starting after it, in the same read, is bytes nobody asked for.
        parser[HTTPParser.kOnMessageBegin] = this.onStrayMessage;
      }
    };
    this.onStrayMessage = () => {
      this.poisoned = true;
    };
    parser[HTTPParser.kOnMessageComplete] = this.onMessageComplete;
    this.parser = parser;
  }

  get idle(): boolean {
    return this.state === State.Idle;
  }

  /**
   * Start an exchange: write the head and stream `body` (the client request) with backpressure.
   * `bodyLength`: declared length, or null with `framing` 'chunked', or no body when body is null.
   */
  send(head: string, body: RequestBody | null, framing: BodyFraming | null, isHead: boolean, sink: ResponseSink): void {
    this.state = State.Busy;
    this.sink = sink;
    this.skipBody = isHead;
    this.requestDone = false;
    this.phase = this.connecting ? ExchangePhase.Connecting : ExchangePhase.HeadSent;
    this.informational = false;
    this.bodyLeft = 0;
    if (this.parserStopped) {
      this.parserStopped = false;
      initParser(this.parser, 'response', MAX_RESPONSE_HEADER_SIZE);
    }
    this.parser[HTTPParser.kOnMessageBegin] = undefined;
    this.parser[HTTPParser.kOnMessageComplete] = this.onMessageComplete;
    if (!this.connecting) this.deadline = Date.now() + this.timeouts.responseHeader;
    if (body === null) {
      this.requestDone = true;
      // Nothing else can be written before it: no body, and no other exchange until a response.
      if (!this.connecting && shouldDefer()) {
        this.pendingHead = head;
        deferWrite(this);
        return;
      }
    }
    // latin1: llhttp gave us the client's header bytes one char per byte; they go out unchanged.
    writeLatin1(this.socket, head, this.plainTcp);
    if (body === null) return;
    this.body = body;
    this.chunked = framing === 'chunked';
    this.bodyPiped = false;
    // Reading the body (and the client's 100 Continue) waits for a live upstream connection.
    if (!this.connecting) this.pipeBody();
  }

  private pipeBody(): void {
    this.bodyPiped = true;
    this.body!.pipeTo(this);
  }

  /** Continue reading the response after the sink returned false from onData. */
  resume(): void {
    if (this.state === State.Busy) this.resumeReading();
  }

  private pauseReading(): void {
    this.paused = true;
    this.socket.pause();
  }

  private resumeReading(): void {
    // Checked here: a Readable's resume() schedules a tick even when nothing was paused.
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  /** The end of the I/O phase (write-batch.ts). */
  flushDeferred(): void {
    const head = this.pendingHead;
    if (head === null) return;
    this.pendingHead = null;
    if (this.state === State.Busy) writeLatin1(this.socket, head, this.plainTcp);
  }

  /** The client went away: the exchange is abandoned and the connection cannot be trusted. */
  abort(): void {
    if (this.state === State.Closed) return;
    this.sink = null;
    this.close();
  }

  /** Close for good (pool shutdown, idle expiry). */
  close(): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    this.pendingHead = null;
    this.detachBody();
    this.socket.destroy();
    // close() deletes the C++ parser; it may be mid-execute, so let the stack unwind first.
    setImmediate(closeParser, this.parser);
    this.owner.remove(this);
  }

  /** Pool hands an idle connection out. */
  reuse(): void {
    this.state = State.Busy;
  }

  /** Pool parks the connection. */
  park(): void {
    this.state = State.Idle;
    this.deadline = Date.now() + this.timeouts.keepAlive;
  }

  onBodyChunk(chunk: Buffer): void {
    if (this.body === null) return;
    if (this.phase < ExchangePhase.BodySent) this.phase = ExchangePhase.BodySent;
    if (!this.connecting) this.deadline = Date.now() + this.timeouts.responseHeader;
    if (this.chunked && chunk.length === 0) return;
    const ok = this.chunked ? writeChunk(this.socket, chunk) : this.socket.write(chunk);
    if (!ok) this.body?.pause();
  }

  onBodyEnd(): void {
    if (this.body === null) return;
    if (this.chunked) this.socket.write(LAST_CHUNK);
    this.detachBody();
    this.requestDone = true;
  }

  private detachBody(): void {
    const body = this.body;
    if (body === null) return;
    this.body = null;
    releaseBody(body, this.bodyPiped);
  }

  private onHeadersComplete(
    raw: string[],
    status: number,
    reason: string,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    const sink = this.sink;
    if (sink === null || this.state !== State.Busy || this.poisoned) return 1;
    if (status < 200) {
      if (status === 101 || upgrade) {
        this.fail(new UpstreamProtocolError('upstream switched protocols without being asked to'));
        return 1;
      }
      // An interim response: the final one follows on the same exchange. 100 Continue is this
      // hop's business (the proxy answers the client's Expect itself); 103 Early Hints and the
      // rest are relayed (RFC 9110 §15.2).
      this.informational = true;
      if (status !== 100) sink.onInformational(status, reason, raw);
      return 0;
    }
    const framing = responseFraming(raw);
    if (typeof framing === 'string') {
      // Checked before anything reaches the client: its framing is not one we can trust.
      this.fail(new UpstreamProtocolError(framing));
      return 1;
    }
    this.phase = ExchangePhase.ReadingBody;
    this.keepAlive = keepAlive;
    if (!this.connecting) this.deadline = Date.now() + this.timeouts.idle;
    sink.onHead(status, reason, raw);
    if (this.skipBody) return 1;
    // 204 and 304 have no body whatever their Content-Length says: llhttp knows those rules.
    if (status === 204 || status === 304) return 0;
    if (framing <= 0) return 0;
    this.bodyLeft = framing;
    // llhttp calls message-complete at once after HEAD_ONLY_STOP: the body is counted here, and
    // onBytes completes the response.
    this.parser[HTTPParser.kOnMessageComplete] = undefined;
    this.parserStopped = true;
    return HEAD_ONLY_STOP;
  }

  /** A body chunk, from llhttp or counted here: on to the sink, or pause reading if it says so. */
  private deliver(chunk: Buffer): void {
    this.deadline = Date.now() + this.timeouts.idle;
    const sink = this.sink;
    if (sink !== null && !this.poisoned && !sink.onData(chunk)) this.pauseReading();
  }

  /**
   * One read: `length` bytes at the start of `data`. `owned`: the Buffer is this read's alone
   * (TLS), so body chunks may be views of it; otherwise it is the shared read buffer.
   * Returns false to stop reading (net's onread contract): after the sink asked for a pause.
   */
  private onBytes(data: Buffer, length: number, owned: boolean): boolean {
    if (this.state !== State.Busy) {
      // An idle connection that speaks unprompted is in an unknown state.
      this.close();
      return false;
    }
    let at = 0;
    while (at < length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, length - at);
        const chunk = owned ? data.subarray(at, at + n) : copyOut(data, at, n);
        at += n;
        this.bodyLeft -= n;
        if (this.bodyLeft === 0) this.phase = ExchangePhase.Done;
        this.deliver(chunk);
        // The sink may have aborted the exchange (its client went away).
        if (this.state !== State.Busy) return false;
      } else if (this.phase === ExchangePhase.Done) {
        // A byte after the end of a counted body: parseable or not, nobody asked for it.
        this.poisoned = true;
        break;
      } else {
        const ret = this.parser.execute(at === 0 && owned ? data : data.subarray(at, length));
        if (this.state !== State.Busy) return false;
        if (typeof ret !== 'number') {
          this.afterParse(ret);
          return false;
        }
        // llhttp parses all it is given unless a head handed the body to us.
        at = this.bodyLeft > 0 ? at + ret : length;
      }
    }
    this.afterParse(null);
    // Idle connections keep reading: EOF or an unprompted byte closes them.
    return !this.paused;
  }

  /** After a read: `err` if llhttp rejected what followed. */
  private afterParse(err: ParseError | null): void {
    if (err !== null && this.phase !== ExchangePhase.Done) {
      this.fail(new UpstreamProtocolError(`invalid response from upstream: ${err.reason ?? err.message}`));
      return;
    }
    // A complete response followed by stray bytes (parseable or not) is still complete;
    // completeResponse() then drops the connection instead of pooling it.
    if (err !== null) this.poisoned = true;
    if (this.phase === ExchangePhase.Done) this.completeResponse();
    else if (this.poisoned) this.fail(new UpstreamProtocolError('upstream sent bytes after the end of its response'));
    else this.sink?.flush();
  }

  private onSocketEnd(): void {
    if (this.state !== State.Busy) {
      this.close();
      return;
    }
    // EOF completes a response framed by connection close, and is an error for any other.
    const err = this.parser.finish();
    if (err !== undefined) {
      this.fail(new UpstreamResetError(`upstream closed the connection mid-response (${err.reason ?? err.message})`));
      return;
    }
    if (this.phase === ExchangePhase.Done) {
      this.keepAlive = false;
      this.completeResponse();
      return;
    }
    this.fail(
      new UpstreamResetError(
        this.phase >= ExchangePhase.ReadingBody
          ? 'upstream closed the connection mid-response'
          : 'upstream closed the connection before responding',
      ),
    );
  }

  /**
   * Called by the pool's sweep (one timer per pool instead of a timer re-armed per request).
   * `deadline` moves with every phase change and every body chunk either way, so each timeout
   * means "this long with no progress" in its phase.
   */
  checkDeadline(now: number): void {
    if (now >= this.deadline && this.state !== State.Closed) this.onTimeout();
  }

  private onTimeout(): void {
    if (this.state === State.Idle) {
      this.close();
      return;
    }
    if (this.phase === ExchangePhase.Connecting) this.fail(new UpstreamConnectTimeoutError(this.timeouts.connect));
    else if (this.phase < ExchangePhase.ReadingBody)
      this.fail(new UpstreamHeadersTimeoutError(this.timeouts.responseHeader));
    else this.fail(new UpstreamIdleTimeoutError(this.timeouts.idle));
  }

  private completeResponse(): void {
    const sink = this.sink;
    this.sink = null;
    this.detachBody();
    this.completed++;
    // An upstream that answered before reading the whole request (an early 413, say) leaves the
    // rest of that body on the wire, where the next exchange would find it: drop the connection.
    if (this.keepAlive && this.requestDone && !this.poisoned) {
      this.resumeReading();
      this.owner.release(this);
    } else {
      this.close();
    }
    sink?.onEnd();
  }

  private fail(err: SwitchyardError): void {
    if (this.state === State.Closed) return;
    const sink = this.sink;
    const hint = retryHint(this.phase, this.completed > 0, err);
    this.sink = null;
    this.close();
    sink?.onError(err, hint);
  }
}

function closeParser(parser: HTTPParserInstance): void {
  parser.close();
}
