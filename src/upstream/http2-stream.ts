/**
 * One exchange on a stream of an upstream HTTP/2 session (http2-pool.ts): the request head the
 * handler built for HTTP/1.1 becomes HTTP/2 fields (RFC 9113 §8.3: the request line and Host
 * become pseudo-headers, connection-specific fields are left out), the body streams with flow
 * control as backpressure, and the answer comes back to the same ResponseSink an HTTP/1.1
 * connection feeds, trailers included.
 *
 * Whether a failed stream may be sent again follows the HTTP/1.1 rules (exchange-phase.ts), with
 * HTTP/2's own certainty added: a stream the member refused (REFUSED_STREAM) or that a GOAWAY
 * left unprocessed (an id past its last) never reached the application (RFC 9113 §8.7), so it
 * goes to another session whatever its method, as a request on a stale keep-alive connection does
 * (but not once body bytes left: those are gone).
 */
import { STATUS_CODES } from 'node:http';
import * as http2 from 'node:http2';
import {
  UpstreamHeadersTimeoutError,
  UpstreamIdleTimeoutError,
  UpstreamResetError,
  GrpcDeadlineError,
  toSwitchyardError,
  type SwitchyardError,
} from '../errors';
import { releaseBody, type BodyTarget, type RequestBody } from '../io/body';
import { addHeadFields, CONNECTION_SPECIFIC } from '../http1/http2-fields';
import type { BodyFraming, ConnectionTimeouts, ResponseSink, UpstreamChannel } from './connection';
import { ExchangePhase, retryHint, RetryHint } from './exchange-phase';
import type { UpstreamTarget } from './target';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;

/** Left out of a request to an HTTP/2 upstream: connection-specific fields (RFC 9113 §8.2.2); TE is sent as "trailers" only. */
const NOT_FORWARDED: ReadonlySet<string> = new Set([...CONNECTION_SPECIFIC, 'te', 'http2-settings']);

/** gRPC's timeout units (PROTOCOL-HTTP2.md): hours, minutes, seconds, milli-, micro-, nanoseconds. */
const GRPC_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/** What a stream needs of its session (http2-pool.ts's UpstreamSession). */
export interface StreamSession {
  readonly session: http2.ClientHttp2Session;
  readonly connected: boolean;
  /** Why the session ended, when it did. */
  readonly failure: SwitchyardError | null;
  /** A GOAWAY's last stream id: streams past it were never processed. */
  readonly lastStreamId: number | null;
  /** Run `fn` once the connection is up. */
  whenConnected(fn: () => void): void;
  /** A stream is over, however it ended: its place on the session is free. */
  give(): void;
}

export class Http2Exchange implements UpstreamChannel, BodyTarget {
  private stream: http2.ClientHttp2Stream | null = null;
  private sink: ResponseSink | null = null;
  private body: RequestBody | null = null;
  private bodyPiped = false;
  private phase = ExchangePhase.Connecting;
  private ended = false;
  private returned = false;
  private error: SwitchyardError | null = null;
  private deadline: NodeJS.Timeout | null = null;

  constructor(
    private readonly session: StreamSession,
    private readonly target: UpstreamTarget,
    private readonly timeouts: ConnectionTimeouts,
  ) {}

  send(
    head: string,
    body: RequestBody | null,
    _framing: BodyFraming | null,
    _isHead: boolean,
    sink: ResponseSink,
  ): void {
    this.sink = sink;
    const { fields, grpcTimeout } = requestFields(head, this.target.tls === null ? 'http' : 'https');
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.session.request(fields, { endStream: body === null });
    } catch (err) {
      // The session closed under us (GOAWAY, a failed socket) before this stream was made.
      this.fail(this.session.failure ?? toSwitchyardError(err), RetryHint.Unsent);
      return;
    }
    this.stream = stream;
    if (this.session.connected) this.phase = ExchangePhase.HeadSent;
    else this.session.whenConnected(() => this.phase === ExchangePhase.Connecting && this.sent());
    // Re-armed by every frame on the stream, as the HTTP/1.1 connection's deadline is by each byte.
    stream.setTimeout(this.timeouts.responseHeader, () => this.timedOut());
    if (grpcTimeout !== null) {
      // gRPC's deadline bounds the whole call, as the client will enforce it anyway.
      this.deadline = setTimeout(() => this.fail(new GrpcDeadlineError(grpcTimeout), RetryHint.Never), grpcTimeout);
    }
    stream.on('headers', (h: http2.IncomingHttpHeaders) => {
      const status = Number(h[':status']);
      // 100 Continue is this hop's business; 103 and the rest go on (RFC 9110 §15.2).
      if (status > 100 && status < 200) this.sink?.onInformational(status, STATUS_CODES[status] ?? '', rawFields(h));
    });
    stream.on('response', (h: http2.IncomingHttpHeaders) => {
      const status = Number(h[':status']);
      this.phase = ExchangePhase.ReadingBody;
      stream.setTimeout(this.timeouts.idle, () => this.timedOut());
      this.sink?.onHead(status, STATUS_CODES[status] ?? '', rawFields(h));
    });
    stream.on('data', (chunk: Buffer) => {
      const s = this.sink;
      if (s === null) return;
      if (!s.onData(chunk)) stream.pause();
      s.flush();
    });
    stream.on('trailers', (h: http2.IncomingHttpHeaders) => this.sink?.onTrailers(rawFields(h)));
    // Node ends the readable side of a stream that was reset or lost with its session too: only
    // an end without a reset code is the upstream's END_STREAM.
    stream.on('end', () => {
      if (!stream.closed || stream.rstCode === NGHTTP2_NO_ERROR) this.complete();
    });
    stream.on('drain', () => this.body?.resume());
    stream.on('error', (err: Error) => {
      // A stream made before its session's connect failed says so with the socket's error as cause.
      this.error ??= this.session.failure ?? toSwitchyardError(err.cause ?? err);
    });
    stream.once('close', () => this.closed(stream));
    if (body === null) return;
    this.body = body;
    // The body (and the client's 100 Continue) waits for a live session, so that a member that is
    // down costs the client nothing and the request can go elsewhere.
    if (this.session.connected) this.pipeBody();
    else this.session.whenConnected(() => this.body !== null && !this.bodyPiped && this.pipeBody());
  }

  private sent(): void {
    this.phase = ExchangePhase.HeadSent;
  }

  private pipeBody(): void {
    this.bodyPiped = true;
    this.body!.pipeTo(this);
  }

  onBodyChunk(chunk: Buffer): void {
    const stream = this.stream;
    if (stream === null || this.body === null) return;
    if (this.phase < ExchangePhase.BodySent) this.phase = ExchangePhase.BodySent;
    if (!stream.write(chunk)) this.body.pause();
  }

  onBodyEnd(): void {
    if (this.body === null) return;
    this.stream?.end();
    this.detachBody();
  }

  private detachBody(): void {
    const body = this.body;
    if (body === null) return;
    this.body = null;
    releaseBody(body, this.bodyPiped);
  }

  resume(): void {
    this.stream?.resume();
  }

  /** The client left: the stream is cancelled (or, never used, handed back). */
  abort(): void {
    this.sink = null;
    this.detachBody();
    const stream = this.stream;
    if (stream === null) this.giveBack();
    else if (!stream.closed) stream.close(NGHTTP2_CANCEL);
  }

  private complete(): void {
    if (this.ended) return;
    this.ended = true;
    this.phase = ExchangePhase.Done;
    this.clearDeadline();
    const sink = this.sink;
    this.sink = null;
    // An answer before the whole request: what is left of the body is not wanted (RFC 9113 §8.1).
    if (this.body !== null) {
      this.detachBody();
      this.stream?.close(NGHTTP2_NO_ERROR);
    }
    sink?.onEnd();
  }

  private timedOut(): void {
    this.fail(
      this.phase === ExchangePhase.ReadingBody
        ? new UpstreamIdleTimeoutError(this.timeouts.idle)
        : new UpstreamHeadersTimeoutError(this.timeouts.responseHeader),
      RetryHint.Never,
    );
  }

  /** The stream closed: complete, or failed with what its error, rstCode or session say. */
  private closed(stream: http2.ClientHttp2Stream): void {
    this.giveBack();
    if (this.ended || this.sink === null) return;
    const id = stream.id;
    const refused =
      stream.rstCode === NGHTTP2_REFUSED_STREAM ||
      id === undefined ||
      (this.session.lastStreamId !== null && id > this.session.lastStreamId);
    const err =
      this.error ??
      this.session.failure ??
      new UpstreamResetError(
        refused ? 'upstream refused the stream' : `upstream reset the stream (HTTP/2 error code ${stream.rstCode})`,
      );
    // A refused stream is the upstream letting a session go, as a closed keep-alive connection is
    // for HTTP/1.1: sent again once, on another session, whatever the method and retry settings,
    // unless body bytes already left (they are the client's, and gone).
    let hint: RetryHint;
    if (!this.session.connected) hint = RetryHint.Unsent;
    else if (refused && this.phase < ExchangePhase.BodySent) hint = RetryHint.Stale;
    else hint = retryHint(this.phase, false, err);
    this.fail(err, hint);
  }

  private fail(err: SwitchyardError, hint: RetryHint): void {
    this.clearDeadline();
    const sink = this.sink;
    this.sink = null;
    this.detachBody();
    const stream = this.stream;
    if (stream !== null && !stream.closed) stream.close(NGHTTP2_CANCEL);
    else if (stream === null) this.giveBack();
    sink?.onError(err, hint);
  }

  private giveBack(): void {
    if (this.returned) return;
    this.returned = true;
    this.clearDeadline();
    this.session.give();
  }

  private clearDeadline(): void {
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = null;
  }
}

/** Response fields as HTTP/1.1 raw headers (name, value, ...), pseudo-headers left out. */
function rawFields(h: http2.IncomingHttpHeaders): string[] {
  const raw: string[] = [];
  for (const name of Object.keys(h)) {
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const v = h[name];
    if (Array.isArray(v)) for (const one of v) raw.push(name, one);
    else if (v !== undefined) raw.push(name, String(v));
  }
  return raw;
}

/**
 * The HTTP/1.1 head the handler built ("METHOD path HTTP/1.1\r\nName: value\r\n...") as HTTP/2
 * request fields, and the gRPC deadline it carries, if any.
 */
export function requestFields(
  head: string,
  scheme: 'http' | 'https',
): { fields: http2.OutgoingHttpHeaders; grpcTimeout: number | null } {
  const fields: http2.OutgoingHttpHeaders = {
    ':scheme': scheme,
    // Trailers are relayed (gRPC's status travels in them).
    te: 'trailers',
  };
  const first = addHeadFields(head, fields, NOT_FORWARDED);
  const sp1 = first.indexOf(' ');
  fields[':method'] = first.slice(0, sp1);
  fields[':path'] = first.slice(sp1 + 1, first.lastIndexOf(' '));
  // The handler's head has exactly one Host: HTTP/2 carries it as :authority.
  const host = fields.host;
  if (host !== undefined) {
    fields[':authority'] = host;
    delete fields.host;
  }
  const timeout = fields['grpc-timeout'];
  const grpcTimeout =
    timeout === undefined
      ? null
      : parseGrpcTimeout(String(Array.isArray(timeout) ? timeout[timeout.length - 1] : timeout));
  return { fields, grpcTimeout };
}

/** `grpc-timeout: 1S`, `250m`: milliseconds (at least 1), or null when malformed. */
export function parseGrpcTimeout(value: string): number | null {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return null;
  return Math.max(1, Math.ceil(Number(m[1]) * GRPC_UNITS[m[2]]));
}
