/**
 * One proxied request, as named phases:
 *
 *   route → pick upstream → prepare headers → forward → relay response
 *                                                     ↘ fail (502/503/504, or abort once bytes flowed)
 *
 * Each request is one ProxyExchange object that is also the upstream connection's ResponseSink;
 * its only per-request closures are the three callbacks it hands out (connection, drain, abort).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { validRequestId, type AccessLog } from '../ops/access-log';
import type { RequestMetrics } from '../ops/metrics';
import { ClientAbortedError, SwitchyardError } from '../errors';
import type { BodyFraming, ResponseSink, UpstreamConnection } from '../upstream/connection';
import type { UpstreamPool, Waiter } from '../upstream/pool';
import { findHeader, type ClientRequest } from './client-connection';
import { buildRequestHead, buildResponseHead, TrustedProxies } from './headers';
import { checkRequest } from './request-checks';
import { openTunnel } from './upgrade';

export interface HandlerOptions {
  readonly pools: readonly UpstreamPool[];
  readonly preserveHost: boolean;
  readonly trustedProxies: readonly string[];
  /** 'https' when the listener terminates TLS. */
  readonly proto: 'http' | 'https';
  readonly logger: Logger;
  /** Pre-formatted header lines added to every upstream request (demo mode only). */
  readonly extraRequestHeaders?: string;
  readonly accessLog?: AccessLog | null;
  readonly metrics?: RequestMetrics | null;
  /** server.maxBodySize; 0 for no limit. */
  readonly maxBodySize: number;
  /** For Upgrade tunnels: timeouts.connect, .responseHeader and .idle. */
  readonly tunnel: { connectTimeout: number; responseHeaderTimeout: number; idleTimeout: number };
}

/** A stale pooled connection is replayed at most this often, each time on a fresh connection. */
const MAX_REPLAYS = 1;

export class ProxyHandler {
  readonly pools: readonly UpstreamPool[];
  private readonly preserveHost: boolean;
  private readonly trusted: TrustedProxies;
  private readonly proto: 'http' | 'https';
  readonly logger: Logger;
  private readonly extra: string | undefined;
  readonly accessLog: AccessLog | null;
  readonly metrics: RequestMetrics | null;
  readonly maxBodySize: number;
  readonly tunnel: { connectTimeout: number; responseHeaderTimeout: number; idleTimeout: number };
  private next = 0;

  constructor(options: HandlerOptions) {
    this.pools = options.pools;
    this.preserveHost = options.preserveHost;
    this.trusted = new TrustedProxies(options.trustedProxies);
    this.proto = options.proto;
    this.logger = options.logger;
    this.extra = options.extraRequestHeaders;
    this.accessLog = options.accessLog ?? null;
    this.metrics = options.metrics ?? null;
    this.maxBodySize = options.maxBodySize;
    this.tunnel = options.tunnel;
  }

  readonly handle = (req: ClientRequest): void => {
    // route: refuse what llhttp let through but no upstream may see (request-checks.ts); then
    // origin-form targets pass as they are, and anything else is refused or normalised here.
    const problem = checkRequest(req, this.maxBodySize);
    const path = problem ?? routeTarget(req);
    if (typeof path !== 'string') {
      const startedAt = performance.now();
      respondError(req, path, problem !== null);
      this.account(req, requestIdFor(req), startedAt, undefined, undefined, path.code);
      return;
    }
    // pick upstream
    const pool = this.pick();
    if (req.isUpgrade && req.facts.upgrade !== null) {
      this.upgrade(req, pool, path);
      return;
    }
    new ProxyExchange(this, req, pool, path).start();
  };

  /** An Upgrade request: a tunnel of its own (upgrade.ts), with the same forwarding headers. */
  private upgrade(req: ClientRequest, pool: UpstreamPool, path: string): void {
    const startedAt = performance.now();
    const reqId = requestIdFor(req);
    openTunnel(req, {
      target: pool.target,
      head: this.requestHead(req, pool, path, reqId, null, req.facts.upgrade!),
      ...this.tunnel,
      onError: (err) => respondError(req, err, true),
      onDone: (status, err) => {
        if (err !== undefined) {
          this.logger[err.status >= 500 ? 'warn' : 'debug']({ code: err.code, upstream: pool.target.origin, url: req.url }, 'upgrade failed');
        }
        req.status = status;
        this.account(req, reqId, startedAt, undefined, pool.target.origin, err?.code);
      },
    });
  }

  /** prepare headers: the upstream request head, the same for exchanges and tunnels. */
  requestHead(
    req: ClientRequest, pool: UpstreamPool, path: string, requestId: string,
    bodyLength: number | 'chunked' | null, upgrade?: string,
  ): string {
    const clientAddress = req.remoteAddress;
    return buildRequestHead({
      requestId, method: req.method, path, rawHeaders: req.rawHeaders,
      host: this.preserveHost ? (req.facts.host ?? pool.target.authority) : pool.target.authority,
      clientAddress, clientTrusted: this.trusted.has(clientAddress), proto: this.proto, bodyLength,
      ...(this.extra !== undefined ? { extra: this.extra } : {}),
      ...(upgrade !== undefined ? { upgrade } : {}),
    });
  }

  /** A request is over, however it ended: count it and log it. */
  account(
    req: ClientRequest, reqId: string, startedAt: number, upstreamMs: number | undefined,
    upstream: string | undefined, error: string | undefined,
  ): void {
    this.metrics?.record(req.aborted ? 499 : req.status, upstream, performance.now() - startedAt, upstreamMs);
    if (this.accessLog !== null) {
      logAccess(this.accessLog, req, reqId, startedAt, upstreamMs === undefined ? undefined : micros(upstreamMs), upstream, error);
    }
  }

  /** Round robin across the configured upstreams. */
  private pick(): UpstreamPool {
    const pools = this.pools;
    if (pools.length === 1) return pools[0]!;
    const pool = pools[this.next]!;
    this.next = (this.next + 1) % pools.length;
    return pool;
  }
}

class ProxyExchange implements ResponseSink {
  private conn: UpstreamConnection | null = null;
  private waiter: Waiter | null = null;
  private readonly head: string;
  private readonly body: ClientRequest | null;
  private readonly framing: BodyFraming | null;
  private replays = 0;
  private done = false;
  private readonly startedAt = performance.now();
  private headAt = 0;
  private readonly reqId: string;

  constructor(
    private readonly handler: ProxyHandler,
    private readonly req: ClientRequest,
    private readonly pool: UpstreamPool,
    path: string,
  ) {
    // prepare headers
    const length = requestBodyLength(req);
    const hasBody = length === 'chunked' || (length !== null && length > 0);
    this.body = hasBody ? req : null;
    this.framing = length === 'chunked' ? 'chunked' : hasBody ? 'length' : null;
    this.reqId = requestIdFor(req);
    this.head = handler.requestHead(req, pool, path, this.reqId, length);
    req.onAbort = this.onClientAbort;
    req.onDrain = this.onClientDrain;
  }

  start(): void {
    this.waiter = this.pool.acquire(this.onConnection, this.replays > 0);
  }

  // forward
  private readonly onConnection = (err: SwitchyardError | null, conn: UpstreamConnection | null): void => {
    this.waiter = null;
    if (this.done) {
      // The client left while we waited: the connection is untouched, so it goes straight back.
      if (conn !== null) this.pool.release(conn);
      return;
    }
    if (err !== null) {
      this.fail(err);
      return;
    }
    this.conn = conn!;
    conn!.send(this.head, this.body, this.framing, this.req.method === 'HEAD', this);
  };

  // relay response
  onHead(status: number, reason: string, rawHeaders: string[]): void {
    // llhttp has already refused heads with bytes that may not appear in a field, so the
    // upstream's lines go to the client as they came, less the hop-by-hop ones.
    this.headAt = performance.now();
    const head = buildResponseHead(rawHeaders);
    this.req.writeHead(status, reason, head.lines, head.contentLength);
  }

  onData(chunk: Buffer): boolean {
    return this.req.write(chunk);
  }

  flush(): void {
    this.req.flush();
  }

  onEnd(): void {
    this.conn = null;
    this.done = true;
    this.req.end();
    this.finished(undefined);
  }

  onError(err: SwitchyardError, replayable: boolean): void {
    this.conn = null;
    if (replayable && this.body === null && this.replays < MAX_REPLAYS && !this.done) {
      // The pooled connection had been closed by the upstream before our request reached it.
      this.replays++;
      this.start();
      return;
    }
    this.fail(err);
  }

  private readonly onClientDrain = (): void => {
    this.conn?.resume();
  };

  private readonly onClientAbort = (): void => {
    if (this.done) return;
    // The client disconnected before the response completed: abandon the upstream exchange.
    this.done = true;
    this.waiter?.cancel();
    this.waiter = null;
    this.conn?.abort();
    this.conn = null;
    const err = new ClientAbortedError();
    this.log(err);
    this.finished(err.code);
  };

  // fail
  private fail(err: SwitchyardError): void {
    if (this.done) return;
    this.done = true;
    this.log(err);
    respondError(this.req, err);
    this.finished(err.code);
  }

  private finished(error: string | undefined): void {
    this.handler.account(this.req, this.reqId, this.startedAt,
      this.headAt === 0 ? undefined : this.headAt - this.startedAt, this.pool.target.origin, error);
  }

  private log(err: SwitchyardError): void {
    const level = err.status === 499 ? 'debug' : 'warn';
    this.handler.logger[level]({
      code: err.code, status: err.status, upstream: this.pool.target.origin,
      method: this.req.method, url: this.req.url, msg: err.message,
    }, 'request failed');
  }
}

/**
 * The error answer: a short text body naming the status and the stable code, nothing internal.
 * If bytes of a response already went out, ending it normally would pass a truncated body off as
 * complete, so the client connection is cut instead (respond() does that).
 */
function respondError(req: ClientRequest, err: SwitchyardError, close = false): void {
  if (err.status === 499) return;
  const text = STATUS_TEXT[err.status] ?? 'Error';
  req.respond(err.status, text, `${err.status} ${text} (${err.code})\n`,
    err.status === 405 ? 'Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n' : '', close);
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 405: 'Method Not Allowed', 413: 'Content Too Large', 417: 'Expectation Failed', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

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
  return new SwitchyardError('SWY_ERR_BAD_TARGET', 400, `request target ${JSON.stringify(url.slice(0, 64))} is not supported`);
}

/**
 * How the client framed its body. llhttp and request-checks have already refused conflicting or
 * malformed framing, so a Transfer-Encoding here is chunked and a Content-Length a plain number.
 */
function requestBodyLength(req: ClientRequest): number | 'chunked' | null {
  const f = req.facts;
  if (f.transferEncoding !== null) return 'chunked';
  return f.contentLength === null ? null : Number(f.contentLength);
}

/** The client's X-Request-Id when it is plain and short, otherwise a new one. */
function requestIdFor(req: ClientRequest): string {
  const given = req.facts.requestId;
  return validRequestId(given) ? given : randomUUID();
}

function micros(ms: number): number {
  return Math.round(ms * 1000);
}

function logAccess(
  accessLog: AccessLog, req: ClientRequest, reqId: string, startedAt: number,
  upstreamUs: number | undefined, upstream: string | undefined, error: string | undefined,
): void {
  accessLog.log({
    reqId, remote: req.remoteAddress, method: req.method, path: req.url, httpVersion: `1.${req.httpMinor}`,
    status: req.aborted ? 499 : req.status, bytesIn: req.bytesIn, bytesOut: req.bytesOut,
    durationUs: micros(performance.now() - startedAt), upstreamUs, upstream, error,
    // Only the combined format shows these; JSON lines stay lean.
    referer: accessLog.format === 'combined' ? findHeader(req.rawHeaders, 'referer') ?? undefined : undefined,
    userAgent: accessLog.format === 'combined' ? findHeader(req.rawHeaders, 'user-agent') ?? undefined : undefined,
  });
}
