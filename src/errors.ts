/**
 * Every failure switchyard reports has a stable code (never reused, never renamed) and the HTTP
 * status a client should see for it. Logs and tests match on `code`, never on message text.
 */
import { STATUS_CODES } from 'node:http';

export class SwitchyardError extends Error {
  readonly code: string;
  readonly status: number;
  /** For 503s: seconds the client is told to wait (Retry-After). */
  retryAfter: number | null = null;

  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }

  /** Whether the failure says something about the upstream member (passive health), not the client. */
  get countsAgainstMember(): boolean {
    return false;
  }
}

/** A failure of the upstream member itself: it counts towards ejecting it (passive health). */
export class MemberFailure extends SwitchyardError {
  override get countsAgainstMember(): boolean {
    return true;
  }
}

/** A config file, flag or value that does not fit the schema. Never reaches a client. */
export class ConfigError extends SwitchyardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_CONFIG', 500, message, options);
  }
}

/** TCP connect to the upstream failed (refused, unreachable, DNS). */
export class UpstreamConnectError extends MemberFailure {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_UPSTREAM_CONNECT', 502, message, options);
  }
}

/** The upstream's certificate did not verify, or the TLS handshake failed. */
export class UpstreamTlsError extends MemberFailure {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_UPSTREAM_TLS', 502, message, options);
  }
}

/** The upstream closed or reset the connection before a complete response. */
export class UpstreamResetError extends MemberFailure {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_UPSTREAM_RESET', 502, message, options);
  }
}

/** The upstream sent bytes that are not a valid HTTP/1.1 response. */
export class UpstreamProtocolError extends MemberFailure {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_UPSTREAM_PROTOCOL', 502, message, options);
  }
}

export class UpstreamConnectTimeoutError extends MemberFailure {
  constructor(ms: number) {
    super('SWY_ERR_UPSTREAM_CONNECT_TIMEOUT', 504, `upstream connect timed out after ${ms} ms`);
  }
}

export class UpstreamHeadersTimeoutError extends MemberFailure {
  constructor(ms: number) {
    super('SWY_ERR_UPSTREAM_HEADERS_TIMEOUT', 504, `upstream sent no response head within ${ms} ms`);
  }
}

export class UpstreamIdleTimeoutError extends MemberFailure {
  constructor(ms: number) {
    super('SWY_ERR_UPSTREAM_IDLE_TIMEOUT', 504, `upstream connection idle for ${ms} ms mid-exchange`);
  }
}

/** A gRPC call's own deadline (its grpc-timeout field) ran out before the upstream finished. */
export class GrpcDeadlineError extends SwitchyardError {
  constructor(ms: number) {
    super('SWY_ERR_GRPC_DEADLINE', 504, `the call's grpc-timeout of ${ms} ms ran out`);
  }
}

/** An Upgrade tunnel carried no byte either way for timeouts.idle. */
export class TunnelIdleError extends SwitchyardError {
  constructor(ms: number) {
    super('SWY_ERR_TUNNEL_IDLE', 504, `tunnel idle for ${ms} ms`);
  }
}

/** Every pooled connection was busy and the request waited in the queue too long. */
export class PoolQueueTimeoutError extends SwitchyardError {
  constructor(ms: number) {
    super('SWY_ERR_POOL_QUEUE_TIMEOUT', 503, `no upstream connection became free within ${ms} ms`);
    this.retryAfter = 1;
  }
}

/** Every pooled connection was busy and the queue was already full: refused at once. */
export class PoolQueueFullError extends SwitchyardError {
  constructor(max: number) {
    super('SWY_ERR_POOL_QUEUE_FULL', 503, `${max} requests already wait for an upstream connection`);
    this.retryAfter = 1;
  }
}

/** No route matched the request's host, path, method and headers. */
export class NoRouteError extends SwitchyardError {
  constructor(host: string | null, path: string) {
    super(
      'SWY_ERR_NO_ROUTE',
      404,
      `no route matches host ${JSON.stringify((host ?? '').slice(0, 255))} and path ${JSON.stringify(path.slice(0, 255))}`,
    );
  }
}

/** Every member of the route's pool is down (health checks or ejection), or it has none. */
export class NoHealthyUpstreamError extends SwitchyardError {
  constructor(pool: string, retryAfter: number) {
    super('SWY_ERR_NO_HEALTHY_UPSTREAM', 503, `no healthy upstream in pool ${JSON.stringify(pool)}`);
    this.retryAfter = retryAfter;
  }
}

/** A response transform threw, returned something other than a body, or its module did not load. */
export class TransformFailedError extends SwitchyardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SWY_ERR_TRANSFORM_FAILED', 502, message, options);
  }
}

/** A response transform ran past its route's transform.timeout (its thread is replaced). */
export class TransformTimeoutError extends SwitchyardError {
  constructor(ms: number) {
    super('SWY_ERR_TRANSFORM_TIMEOUT', 502, `response transform took longer than ${ms} ms`);
  }
}

/** The transform queue was full and transformPool.onOverload is "reject". */
export class TransformOverloadedError extends SwitchyardError {
  constructor() {
    super('SWY_ERR_TRANSFORM_OVERLOADED', 503, 'the transform queue is full');
    this.retryAfter = 1;
  }
}

/** The pool was closed (worker draining) while the request waited for a connection. */
export class PoolClosedError extends SwitchyardError {
  constructor() {
    super('SWY_ERR_POOL_CLOSED', 503, 'upstream pool is closed');
  }
}

/** Framing or fields a proxy must refuse; the connection closes after the answer. */
export class BadRequestError extends SwitchyardError {
  constructor(message: string) {
    super('SWY_ERR_BAD_REQUEST', 400, message);
  }
}

/** A request body over server.maxBodySize, declared or counted as it arrives. */
export class BodyTooLargeError extends SwitchyardError {
  constructor(limit: number) {
    super('SWY_ERR_BODY_TOO_LARGE', 413, `request body larger than server.maxBodySize (${limit} bytes)`);
  }
}

/** A request head over server.maxHeaderSize. */
export class HeadersTooLargeError extends SwitchyardError {
  constructor(limit: number) {
    super('SWY_ERR_HEADERS_TOO_LARGE', 431, `request head larger than server.maxHeaderSize (${limit} bytes)`);
  }
}

/** The client took longer than server.headersTimeout for its head, or server.requestTimeout in all. */
export class RequestTimeoutError extends SwitchyardError {
  constructor(what: 'head' | 'request', ms: number) {
    super('SWY_ERR_REQUEST_TIMEOUT', 408, `the client sent no complete ${what} within ${ms} ms`);
  }
}

/** The client went away before the exchange finished; nobody is left to answer (nginx's 499). */
export class ClientAbortedError extends SwitchyardError {
  constructor() {
    super('SWY_ERR_CLIENT_ABORTED', 499, 'client closed the connection');
  }
}

/** An injected fault answered with the status it names (docs/load-testing.md). */
export class FaultAbortError extends SwitchyardError {
  constructor(status: number) {
    super('SWY_ERR_FAULT_ABORT', status, `an injected fault answered ${status}`);
  }
}

/**
 * An injected fault cut the client connection: reset it, or closed it after part of the body.
 * Nothing more is sent; the access log and metrics show 444 (nginx's "closed without a
 * response") unless the upstream's head had gone out.
 */
export abstract class FaultCutError extends SwitchyardError {
  /** Reset (RST) rather than closed once what was written is out. */
  abstract readonly reset: boolean;
}

export class FaultResetError extends FaultCutError {
  readonly reset = true;
  constructor() {
    super('SWY_ERR_FAULT_RESET', 444, 'an injected fault reset the connection');
  }
}

export class FaultPartialError extends FaultCutError {
  readonly reset = false;
  constructor() {
    super('SWY_ERR_FAULT_PARTIAL', 444, 'an injected fault cut the response body');
  }
}

/** Map any thrown value to a SwitchyardError, so the fail phase has one shape to handle. */
export function toSwitchyardError(err: unknown): SwitchyardError {
  if (err instanceof SwitchyardError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const code = e?.code ?? '';
  const msg = e?.message ?? String(err);
  if (
    code === 'ECONNREFUSED' ||
    code === 'ENOTFOUND' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'EAI_AGAIN' ||
    code === 'EADDRNOTAVAIL'
  ) {
    return new UpstreamConnectError(msg, { cause: err });
  }
  if (
    code.startsWith('ERR_TLS') ||
    code.startsWith('ERR_SSL') ||
    code.includes('CERT') ||
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
    code === 'HOSTNAME_MISMATCH'
  ) {
    return new UpstreamTlsError(msg, { cause: err });
  }
  if (code.startsWith('HPE_')) return new UpstreamProtocolError(msg, { cause: err });
  return new UpstreamResetError(msg, { cause: err });
}

/** Reason phrases of the statuses switchyard answers with itself. */
export const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Content Too Large',
  417: 'Expectation Failed',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * The body of every answer switchyard gives itself: the status and the stable code, and for a
 * 404 which request found no route (the operator's first question). Nothing internal.
 */
/** The reason phrase for a status: ours, else Node's list (an injected fault may name any). */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? STATUS_CODES[status] ?? 'Error';
}

export function errorBody(err: SwitchyardError): string {
  const detail = err.status === 404 ? `: ${err.message}` : '';
  return `${err.status} ${statusText(err.status)} (${err.code})${detail}\n`;
}
