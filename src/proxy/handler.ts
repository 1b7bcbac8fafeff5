/**
 * One proxied request, as named phases:
 *
 *   route → pick upstream → prepare headers → forward → relay response
 *                ↑                              ↘ fail (502/503/504, or abort once bytes flowed)
 *                └── retry, on another member, while nothing has reached the client
 *
 * Each request is one ProxyExchange object that is also the upstream connection's ResponseSink;
 * its only per-request closures are the three callbacks it hands out (connection, drain, abort).
 */
import { performance } from 'node:perf_hooks';
import { errField, RarelyLogged, type Logger } from '../log';
import { validRequestId, type AccessLog } from '../ops/access-log';
import type { RequestMetrics } from '../ops/metrics';
import {
  ClientAbortedError,
  NoHealthyUpstreamError,
  NoRouteError,
  PoolClosedError,
  PoolQueueFullError,
  SwitchyardError,
} from '../errors';
import {
  RetryHint,
  type BodyFraming,
  type ResponseSink,
  type UpstreamConnection,
  type UpstreamTarget,
} from '../upstream/connection';
import type { Member, UpstreamPool } from '../upstream/pool';
import type { Waiter } from '../upstream/connection-pool';
import { findHeader } from '../http1/fields';
import type { ClientRequest } from './client-request';
import { buildInterimHead, buildRequestHead, buildResponseHead, TrustedProxies, type HeaderEdit } from './headers';
import { checkRequest } from './request-checks';
import { newRequestId } from './request-id';
import { normalizePath, type Route, type Router } from './router';
import { planBody, type BodyContext, type BodyFilter, type FilterSink } from './response-body';
import { openTunnel } from './upgrade';

export interface HandlerOptions {
  readonly router: Router;
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
  /** The transform pool and its settings, when some route transforms or compresses. */
  readonly body?: BodyContext | null;
}

/** A stale pooled connection is replayed at most this often, each time on a fresh connection. */
const MAX_REPLAYS = 1;

/** Safe to send twice (RFC 9110 §9.2.2), when no body went with them. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** Failures that say something about the member (passive health), not about the client. */
const MEMBER_FAILURES = new Set([
  'SWY_ERR_UPSTREAM_CONNECT',
  'SWY_ERR_UPSTREAM_CONNECT_TIMEOUT',
  'SWY_ERR_UPSTREAM_TLS',
  'SWY_ERR_UPSTREAM_RESET',
  'SWY_ERR_UPSTREAM_PROTOCOL',
  'SWY_ERR_UPSTREAM_HEADERS_TIMEOUT',
  'SWY_ERR_UPSTREAM_IDLE_TIMEOUT',
]);

export class ProxyHandler {
  readonly router: Router;
  private readonly preserveHost: boolean;
  private readonly trusted: TrustedProxies;
  readonly proto: 'http' | 'https';
  readonly logger: Logger;
  private readonly extra: string | undefined;
  readonly accessLog: AccessLog | null;
  readonly metrics: RequestMetrics | null;
  readonly maxBodySize: number;
  readonly tunnel: { connectTimeout: number; responseHeaderTimeout: number; idleTimeout: number };
  readonly body: BodyContext | null;
  /** The failure log, at most a line a second per upstream and code. */
  readonly failures: RarelyLogged;

  constructor(options: HandlerOptions) {
    this.failures = new RarelyLogged(options.logger);
    this.router = options.router;
    this.preserveHost = options.preserveHost;
    this.trusted = new TrustedProxies(options.trustedProxies);
    this.proto = options.proto;
    this.logger = options.logger;
    this.extra = options.extraRequestHeaders;
    this.accessLog = options.accessLog ?? null;
    this.metrics = options.metrics ?? null;
    this.maxBodySize = options.maxBodySize;
    this.tunnel = options.tunnel;
    this.body = options.body ?? null;
  }

  readonly handle = (req: ClientRequest): void => {
    // Refuse what llhttp let through but no upstream may see (request-checks.ts); then
    // origin-form targets pass as they are, and anything else is refused or normalised here.
    const problem = checkRequest(req, this.maxBodySize);
    const target = problem ?? routeTarget(req);
    if (typeof target !== 'string') {
      this.refuse(req, target, problem !== null);
      return;
    }
    const path = normalizePath(target);
    // route
    const route = this.router.match(req.facts.host, path, req.method, req.rawHeaders);
    if (route === null) {
      this.refuse(req, new NoRouteError(req.facts.host, path), false);
      return;
    }
    const upstreamPath = route.rewritePath(path);
    if (req.upgradeTo !== null) {
      this.upgrade(req, route, upstreamPath);
      return;
    }
    new ProxyExchange(this, req, route, upstreamPath).start();
  };

  /** Answered by the proxy itself, before any upstream was involved. */
  private refuse(req: ClientRequest, err: SwitchyardError, close: boolean): void {
    const startedAt = performance.now();
    respondError(req, err, close);
    this.account(req, requestIdFor(req), startedAt, undefined, undefined, err.code);
  }

  /** An Upgrade request: a tunnel of its own (upgrade.ts), with the same forwarding headers. */
  private upgrade(req: ClientRequest, route: Route, path: string): void {
    const startedAt = performance.now();
    const reqId = requestIdFor(req);
    // pick upstream: tunnels are not retried (the client's first bytes may already be in flight).
    const pool = route.pool;
    const member = pool.pick(hashKeyFor(req, pool), null);
    if (member === null) {
      this.refuse(req, new NoHealthyUpstreamError(pool.name, pool.retryAfter), false);
      return;
    }
    openTunnel(req, {
      target: member.target,
      head: this.requestHead(req, member.target, path, reqId, null, route.requestEdit, req.upgradeTo!),
      ...this.tunnel,
      onError: (err) => respondError(req, err, true),
      onDone: (status, err) => {
        if (err !== undefined) {
          if (MEMBER_FAILURES.has(err.code)) pool.reportFailure(member);
          this.logger[err.status >= 500 ? 'warn' : 'debug'](
            { code: err.code, upstream: member.target.origin, url: req.url },
            'upgrade failed',
          );
        }
        req.status = status;
        this.account(req, reqId, startedAt, undefined, member.target.origin, err?.code);
      },
    });
  }

  /** prepare headers: the upstream request head, the same for exchanges and tunnels. */
  requestHead(
    req: ClientRequest,
    target: UpstreamTarget,
    path: string,
    requestId: string,
    bodyLength: number | 'chunked' | null,
    edit: HeaderEdit | null,
    upgrade?: string,
  ): string {
    const clientAddress = req.remoteAddress;
    return buildRequestHead({
      requestId,
      method: req.method,
      path,
      rawHeaders: req.rawHeaders,
      host: this.preserveHost ? (req.facts.host ?? target.authority) : target.authority,
      clientAddress,
      clientTrusted: this.trusted.has(clientAddress),
      proto: this.proto,
      bodyLength,
      edit,
      extra: this.extra,
      upgrade,
    });
  }

  /**
   * An answer the client connection gave itself, to a request too broken or slow to reach the
   * handler (400, 408, 413, 431): counted and logged like any other, with what is known of it.
   */
  accountConnectionError(remote: string | undefined, err: SwitchyardError, req: ClientRequest | null): void {
    this.metrics?.record(err.status, undefined, 0, undefined);
    this.accessLog?.log({
      reqId: req === null ? newRequestId() : requestIdFor(req),
      remote,
      method: req?.method ?? '-',
      path: req?.url ?? '-',
      httpMinor: req?.httpMinor ?? 1,
      status: err.status,
      bytesIn: req?.bytesIn ?? 0,
      bytesOut: 0,
      durationUs: 0,
      upstreamUs: undefined,
      upstream: undefined,
      error: err.code,
      referer: undefined,
      userAgent: undefined,
    });
  }

  /** A request is over, however it ended: count it and log it. */
  account(
    req: ClientRequest,
    reqId: string,
    startedAt: number,
    upstreamMs: number | undefined,
    upstream: string | undefined,
    error: string | undefined,
  ): void {
    const durationMs = performance.now() - startedAt;
    this.metrics?.record(req.aborted ? 499 : req.status, upstream, durationMs, upstreamMs);
    if (this.accessLog !== null) {
      logAccess(
        this.accessLog,
        req,
        reqId,
        micros(durationMs),
        upstreamMs === undefined ? undefined : micros(upstreamMs),
        upstream,
        error,
      );
    }
  }
}

class ProxyExchange implements ResponseSink, FilterSink {
  private conn: UpstreamConnection | null = null;
  /** A transform or compression that owns the response body (response-body.ts), if any. */
  private filter: BodyFilter | null = null;
  private waiter: Waiter | null = null;
  private member: Member | null = null;
  /** Whether `member.inflight` counts this exchange now. */
  private counted = false;
  private tried: Member[] | null = null;
  private attempts = 0;
  private head = '';
  private readonly length: number | 'chunked' | null;
  private readonly body: ClientRequest | null;
  private readonly framing: BodyFraming | null;
  private replays = 0;
  /** An interim response reached the client: another member's answer cannot follow it. */
  private interimSent = false;
  private done = false;
  private readonly startedAt = performance.now();
  private headAt = 0;
  private readonly reqId: string;
  private readonly pool: UpstreamPool;
  private key: string | null | undefined = undefined;

  constructor(
    private readonly handler: ProxyHandler,
    private readonly req: ClientRequest,
    private readonly route: Route,
    private readonly path: string,
  ) {
    const length = requestBodyLength(req);
    const hasBody = length === 'chunked' || (length !== null && length > 0);
    this.length = length;
    this.body = hasBody ? req : null;
    this.framing = length === 'chunked' ? 'chunked' : hasBody ? 'length' : null;
    this.reqId = requestIdFor(req);
    this.pool = route.pool;
    req.onAbort = this.onClientAbort;
    req.onDrain = this.onClientDrain;
  }

  start(): void {
    // pick upstream
    const member = this.pool.pick(this.hashKey(), null);
    if (member === null) {
      this.fail(new NoHealthyUpstreamError(this.pool.name, this.pool.retryAfter));
      return;
    }
    this.attempt(member, false);
  }

  private hashKey(): string | null {
    if (this.key === undefined) this.key = hashKeyFor(this.req, this.pool);
    return this.key;
  }

  /** One try on one member; `fresh` skips its idle connections (a replay after a stale one). */
  private attempt(member: Member, fresh: boolean): void {
    this.member = member;
    this.attempts++;
    member.inflight++;
    this.counted = true;
    // prepare headers (per member: the Host header is the member's own)
    this.head = this.handler.requestHead(
      this.req,
      member.target,
      this.path,
      this.reqId,
      this.length,
      this.route.requestEdit,
    );
    this.waiter = member.connections.acquire(this.onConnection, fresh);
  }

  private uncount(): void {
    if (this.counted) {
      this.counted = false;
      this.member!.inflight--;
    }
  }

  // forward
  private readonly onConnection = (err: SwitchyardError | null, conn: UpstreamConnection | null): void => {
    this.waiter = null;
    if (this.done) {
      // The client left while we waited: the connection is untouched, so it goes straight back.
      if (conn !== null) this.member!.connections.release(conn);
      return;
    }
    if (err !== null) {
      // A closed pool (its member left) or a full queue sent nothing anywhere: another member
      // may take it. A queue timeout has already used the client's patience.
      this.onError(
        err,
        err instanceof PoolClosedError || err instanceof PoolQueueFullError ? RetryHint.Unsent : RetryHint.Never,
      );
      return;
    }
    this.conn = conn!;
    conn!.send(this.head, this.body, this.framing, this.req.method === 'HEAD', this);
  };

  // relay response
  onInformational(status: number, reason: string, rawHeaders: string[]): void {
    // HTTP/1.0 clients know no interim responses (RFC 9110 §15.2).
    if (this.req.httpMinor === 0) return;
    this.interimSent = true;
    this.req.writeInterim(status, reason, buildInterimHead(rawHeaders));
  }

  onHead(status: number, reason: string, rawHeaders: string[]): void {
    // llhttp has already refused heads with bytes that may not appear in a field, so the
    // upstream's lines go to the client as they came, less the hop-by-hop ones.
    this.headAt = performance.now();
    if (status >= 500 && this.pool.on5xxFails) this.pool.reportFailure(this.member!);
    const route = this.route;
    const body = this.handler.body;
    if (body !== null && (route.transform !== null || route.compress !== null)) {
      const plan = planBody(
        route.transform,
        route.compress,
        body,
        this.req,
        findHeader(this.req.rawHeaders, 'accept-encoding'),
        status,
        reason,
        rawHeaders,
        this,
      );
      if (plan !== null) {
        if (plan.raw !== null) this.sendHead(status, reason, plan.raw);
        this.filter = plan.filter;
        return;
      }
    }
    this.sendHead(status, reason, rawHeaders);
  }

  /** The client's response head from upstream-style fields, with the route's edits. */
  sendHead(status: number, reason: string, raw: string[]): void {
    const route = this.route;
    const head = buildResponseHead(
      raw,
      route.responseEdit,
      route.rewriteLocation ? (v) => this.rewriteLocation(v) : null,
    );
    this.req.writeHead(status, reason, head.lines, head.contentLength);
  }

  onData(chunk: Buffer): boolean {
    return this.filter === null ? this.req.write(chunk) : this.filter.data(chunk);
  }

  write(chunk: Buffer): boolean {
    return this.req.write(chunk);
  }

  flush(): void {
    this.req.flush();
  }

  onEnd(): void {
    this.conn = null;
    this.uncount();
    if (this.filter !== null) {
      // The filter finishes the response (end() or fail()) when its work is done.
      this.filter.end();
      return;
    }
    this.end();
  }

  /** The response is complete. */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.req.end();
    this.finished(undefined);
  }

  resumeUpstream(): void {
    this.conn?.resume();
  }

  onError(err: SwitchyardError, hint: RetryHint): void {
    this.conn = null;
    this.uncount();
    const member = this.member!;
    if (hint !== RetryHint.Stale && MEMBER_FAILURES.has(err.code)) this.pool.reportFailure(member);
    if (this.done) return;
    const next = this.retryOn(member, hint);
    if (next === null) {
      this.fail(err);
      return;
    }
    this.handler.logger.debug(
      { code: err.code, upstream: member.target.origin, next: next.target.origin, url: this.req.url },
      'retrying',
    );
    this.attempt(next, next === member);
  }

  /** The member for another try, or null when this failure must reach the client. */
  private retryOn(member: Member, hint: RetryHint): Member | null {
    if (this.interimSent) return null;
    switch (hint) {
      case RetryHint.Never:
        return null;
      case RetryHint.Stale:
        // The upstream had closed an idle keep-alive connection: not the member's fault, and
        // nothing was processed. Once, on a fresh connection, whatever the retry settings.
        if (this.replays >= MAX_REPLAYS) return null;
        this.replays++;
        return member;
      case RetryHint.SentNoBody:
        if (!this.pool.retries.idempotent || !IDEMPOTENT.has(this.req.method)) return null;
        break;
      case RetryHint.Unsent:
        break;
    }
    const retries = this.pool.retries;
    if (this.attempts >= retries.attempts || performance.now() - this.startedAt >= retries.timeout) return null;
    (this.tried ??= []).push(member);
    return this.pool.pick(this.hashKey(), this.tried);
  }

  /**
   * rewriteLocation: a redirect to the member itself (`http://10.0.0.5:3000/x`) becomes one to the
   * host the client asked for, with the route's path rewrite undone.
   */
  private rewriteLocation(value: string): string {
    const origin = this.member!.target.origin;
    let path: string;
    if (value.startsWith(origin) && (value.length === origin.length || '/?#'.includes(value[origin.length]))) {
      path = value.slice(origin.length);
      if (path === '' || path[0] !== '/') path = `/${path}`;
    } else if (value.charCodeAt(0) === 47 /* / */ && value.charCodeAt(1) !== 47) {
      return this.route.unrewritePath(value);
    } else {
      return value;
    }
    const host = this.req.facts.host ?? this.member!.target.authority;
    return `${this.handler.proto}://${host}${this.route.unrewritePath(path)}`;
  }

  private readonly onClientDrain = (): void => {
    if (this.filter !== null) this.filter.clientDrained();
    else this.conn?.resume();
  };

  private readonly onClientAbort = (): void => {
    if (this.done) return;
    // The client disconnected before the response completed: abandon the upstream exchange.
    this.done = true;
    this.uncount();
    this.filter?.abort();
    this.waiter?.cancel();
    this.waiter = null;
    this.conn?.abort();
    this.conn = null;
    const err = new ClientAbortedError();
    this.log(err);
    this.finished(err.code);
  };

  // fail
  fail(err: SwitchyardError): void {
    if (this.done) return;
    this.done = true;
    this.uncount();
    this.filter?.abort();
    this.conn?.abort();
    this.conn = null;
    this.log(err);
    respondError(this.req, err);
    this.finished(err.code);
  }

  private finished(error: string | undefined): void {
    this.handler.account(
      this.req,
      this.reqId,
      this.startedAt,
      this.headAt === 0 ? undefined : this.headAt - this.startedAt,
      this.member?.target.origin,
      error,
    );
  }

  private log(err: SwitchyardError): void {
    const fields = {
      code: err.code,
      status: err.status,
      upstream: this.member?.target.origin,
      pool: this.pool.name,
      attempts: this.attempts,
      method: this.req.method,
      url: this.req.url,
      err: errField(err),
    };
    if (err.status === 499) this.handler.logger.debug(fields, 'request failed');
    // During an outage every request fails alike: a line a second per upstream and code, with a count.
    else this.handler.failures.warn(`${err.code} ${fields.upstream ?? fields.pool}`, fields, 'request failed');
  }
}

/** The value the hash policy hashes, or null (no such header or cookie: round robin instead). */
function hashKeyFor(req: ClientRequest, pool: UpstreamPool): string | null {
  const source = pool.hash;
  if (source === null) return null;
  switch (source.kind) {
    case 'ip':
      return req.remoteAddress ?? null;
    case 'header':
      return findHeader(req.rawHeaders, source.name);
    case 'cookie':
      return cookieValue(req.rawHeaders, source.name);
  }
}

function cookieValue(raw: readonly string[], name: string): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length !== 6 || raw[i].toLowerCase() !== 'cookie') continue;
    for (const pair of raw[i + 1].split(';')) {
      const eq = pair.indexOf('=');
      if (eq !== -1 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return null;
}

/** The error answer (errorResponse); a client that went away (499) gets none. */
function respondError(req: ClientRequest, err: SwitchyardError, close = false): void {
  if (err.status !== 499) req.respondError(err, close);
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
  return validRequestId(given) ? given : newRequestId();
}

function micros(ms: number): number {
  return Math.round(ms * 1000);
}

function logAccess(
  accessLog: AccessLog,
  req: ClientRequest,
  reqId: string,
  durationUs: number,
  upstreamUs: number | undefined,
  upstream: string | undefined,
  error: string | undefined,
): void {
  accessLog.log({
    reqId,
    remote: req.remoteAddress,
    method: req.method,
    path: req.url,
    httpMinor: req.httpMinor,
    status: req.aborted ? 499 : req.status,
    bytesIn: req.bytesIn,
    bytesOut: req.bytesOut,
    durationUs,
    upstreamUs,
    upstream,
    error,
    // Only the combined format shows these; JSON lines stay lean.
    referer: accessLog.format === 'combined' ? (findHeader(req.rawHeaders, 'referer') ?? undefined) : undefined,
    userAgent: accessLog.format === 'combined' ? (findHeader(req.rawHeaders, 'user-agent') ?? undefined) : undefined,
  });
}
