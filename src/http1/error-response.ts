/**
 * Every answer switchyard gives itself, whoever gives it: the handler's 404/502/503/504 and the
 * client connection's own 400/408/413/431 take the same status line, fields and body from here.
 */
import { errorBody, statusText, type SwitchyardError } from '../errors';
import { httpDate } from './date';

export interface ErrorResponse {
  readonly status: number;
  readonly reason: string;
  /** "Name: value\r\n" lines, Content-Length included; no Connection field (the caller's). */
  readonly headerLines: string;
  readonly body: string;
}

export function errorResponse(err: SwitchyardError): ErrorResponse {
  const body = errorBody(err);
  let extra = '';
  if (err.status === 405) extra = 'Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n';
  else if (err.retryAfter !== null) extra = `Retry-After: ${err.retryAfter}\r\n`;
  return {
    status: err.status,
    reason: statusText(err.status),
    headerLines: `${plainTextHeaders(Buffer.byteLength(body))}${extra}`,
    body,
  };
}

/**
 * gRPC's status codes for the proxy's own failures (gRPC's http-grpc-status-mapping.md, with
 * timeouts as DEADLINE_EXCEEDED rather than UNAVAILABLE: the call's time ran out either way).
 */
function grpcStatus(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 404:
    case 405:
      return 12; // UNIMPLEMENTED
    case 408:
    case 504:
      return 4; // DEADLINE_EXCEEDED
    case 413:
    case 431:
      return 8; // RESOURCE_EXHAUSTED
    case 429:
    case 502:
    case 503:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/**
 * The proxy's own failure as a gRPC client expects it: HTTP 200 and a "trailers-only" head whose
 * grpc-status and grpc-message say what went wrong (gRPC's PROTOCOL-HTTP2.md), not an HTML or
 * text page the client could only call UNKNOWN.
 */
export function grpcErrorResponse(err: SwitchyardError): ErrorResponse {
  // grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself.
  const message = `${err.code}: ${err.message}`.replace(/[^\x20-\x24\x26-\x7e]/g, (c) =>
    Array.from(Buffer.from(c), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
  return {
    status: 200,
    reason: 'OK',
    headerLines:
      `Date: ${httpDate()}\r\nContent-Type: application/grpc\r\nGrpc-Status: ${grpcStatus(err.status)}\r\n` +
      `Grpc-Message: ${message}\r\nContent-Length: 0\r\n`,
    body: '',
  };
}

/** The header lines of every answer the proxy gives itself: a short, uncacheable text body. */
export function plainTextHeaders(length: number): string {
  return `Date: ${httpDate()}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${length}\r\nCache-Control: no-store\r\n`;
}
