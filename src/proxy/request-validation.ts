/**
 * Every check a request passes before it is routed, in one place: what llhttp (strict mode) lets
 * through and a proxy must not (each answered, then the connection closed, since whatever framing
 * follows cannot be trusted; docs/hardening.md), then what this proxy does not serve (an Expect
 * other than 100-continue, CONNECT, a target that is neither origin- nor absolute-form).
 */
import { BadRequestError, BodyTooLargeError, SwitchyardError } from '../errors';
import { isPlainChunked } from '../http1/parser';
import type { ClientRequest } from './client-request';

/** Why a request is answered by the proxy itself; `close`: its framing cannot be trusted. */
export interface Refusal {
  readonly err: SwitchyardError;
  readonly close: boolean;
}

/**
 * The request target to send upstream (origin-form), or why the request is refused.
 * `maxBodySize` 0 means no limit.
 */
export function validateRequest(req: ClientRequest, maxBodySize: number): string | Refusal {
  const problem = framingProblem(req, maxBodySize);
  if (problem !== null) return { err: problem, close: true };
  const target = routeTarget(req);
  return typeof target === 'string' ? target : { err: target, close: false };
}

/** The first problem with `req`'s version or framing, or null. */
function framingProblem(req: ClientRequest, maxBodySize: number): SwitchyardError | null {
  const problem = req.httpMajor === 2 ? http2Problem(req) : http1Problem(req);
  if (problem !== null) return problem;
  const contentLength = req.facts.contentLength === null ? -1 : Number(req.facts.contentLength);
  return maxBodySize > 0 && contentLength > maxBodySize ? new BodyTooLargeError(maxBodySize) : null;
}

/** nghttp2 has checked an HTTP/2 stream's framing, and http2-front.ts its pseudo-headers and Host. */
function http2Problem(req: ClientRequest): SwitchyardError | null {
  return req.facts.hosts === 0 ? new BadRequestError('HTTP/2 request without :authority or Host') : null;
}

function http1Problem(req: ClientRequest): SwitchyardError | null {
  if (req.httpMajor !== 1) {
    // llhttp parses a bare "GET /" as HTTP/0.9; nothing behind a proxy should see one.
    return new BadRequestError(`HTTP/${req.httpMajor}.${req.httpMinor} is not supported`);
  }
  const { hosts, transferEncoding: te, transferEncodingFields: teFields } = req.facts;
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
  return null;
}

/**
 * The request target to send upstream, or the error to answer with. Absolute-form targets
 * (`GET http://other.example/x`) are reduced to their path so that no upstream is ever asked for
 * another host; the client's Host header decides the route, as in origin-form.
 */
function routeTarget(req: ClientRequest): string | SwitchyardError {
  const expect = req.facts.expect;
  if (expect !== null && expect.toLowerCase() !== '100-continue') {
    return new SwitchyardError('SWY_ERR_EXPECTATION_FAILED', 417, 'only Expect: 100-continue is supported');
  }
  const url = req.url;
  if (url.charCodeAt(0) === 47 /* / */) return url;
  if (req.method === 'CONNECT') {
    return new SwitchyardError('SWY_ERR_METHOD_NOT_ALLOWED', 405, 'CONNECT is not supported by a reverse proxy');
  }
  if (/^https?:\/\//i.test(url)) {
    try {
      const u = new URL(url);
      return u.pathname + u.search;
    } catch {
      // fall through to 400
    }
  }
  return new SwitchyardError(
    'SWY_ERR_BAD_TARGET',
    400,
    `request target ${JSON.stringify(url.slice(0, 64))} is not supported`,
  );
}

/**
 * How the client framed its body. llhttp and framingProblem have already refused conflicting or
 * malformed framing, so a Transfer-Encoding here is chunked and a Content-Length a plain number.
 */
export function requestBodyLength(req: ClientRequest): number | 'chunked' | null {
  const f = req.facts;
  if (f.transferEncoding !== null) return 'chunked';
  return f.contentLength === null ? null : Number(f.contentLength);
}
