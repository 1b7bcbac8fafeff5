/**
 * Every answer switchyard gives itself, whoever gives it: the handler's 404/502/503/504 and the
 * client connection's own 400/408/413/431 take the same status line, fields and body from here.
 */
import { errorBody, STATUS_TEXT, type SwitchyardError } from '../errors';
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
    reason: STATUS_TEXT[err.status] ?? 'Error',
    headerLines: `${plainTextHeaders(Buffer.byteLength(body))}${extra}`,
    body,
  };
}

/** The header lines of every answer the proxy gives itself: a short, uncacheable text body. */
export function plainTextHeaders(length: number): string {
  return `Date: ${httpDate()}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${length}\r\nCache-Control: no-store\r\n`;
}
