/**
 * What llhttp (strict mode) lets through and a proxy must not: checked before anything of the
 * request reaches an upstream. Each failure is answered and the connection closed, since
 * whatever framing follows cannot be trusted. See the README's hardening table.
 */
import { BadRequestError, BodyTooLargeError, type SwitchyardError } from '../errors';
import { isPlainChunked } from '../http1/parser';
import type { ClientRequest } from './client-request';

/** The first problem with `req`, or null. `maxBodySize` 0 means no limit. */
export function checkRequest(req: ClientRequest, maxBodySize: number): SwitchyardError | null {
  if (req.httpMajor !== 1) {
    // llhttp parses a bare "GET /" as HTTP/0.9; nothing behind a proxy should see one.
    return new BadRequestError(`HTTP/${req.httpMajor}.${req.httpMinor} is not supported`);
  }
  const { hosts, transferEncoding: te, transferEncodingFields: teFields } = req.facts;
  const contentLength = req.facts.contentLength === null ? -1 : Number(req.facts.contentLength);
  // RFC 9112 §3.2: exactly one Host in HTTP/1.1; never two.
  if (hosts > 1) return new BadRequestError('more than one Host header');
  if (hosts === 0 && req.httpMinor >= 1) return new BadRequestError('HTTP/1.1 request without a Host header');
  if (teFields > 0) {
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
    if (req.httpMinor === 0) return new BadRequestError('Transfer-Encoding in an HTTP/1.0 request');
    if (!isPlainChunked(teFields, te)) {
      return new BadRequestError(`Transfer-Encoding ${JSON.stringify(te)} is not supported; only "chunked"`);
    }
  }
  if (maxBodySize > 0 && contentLength > maxBodySize) return new BodyTooLargeError(maxBodySize);
  return null;
}
