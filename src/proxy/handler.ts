/**
 * The request handler, one per listener, fed by the client side with each request in turn:
 *
 *   validate → route → pick upstream → prepare headers → forward → relay | fail
 *
 * This file holds the first two phases, the request head every upstream gets (prepare headers,
 * shared with Upgrade tunnels) and the accounting of every request however it ended; the phases
 * from pick upstream on are one ProxyExchange's (exchange.ts).
 */
import { performance } from 'node:perf_hooks';
import {
  BadRequestError,
  ClientAbortedError,
  FaultAbortError,
  FaultResetError,
  NoHealthyUpstreamError,
  NoRouteError,
  UpstreamHeadersTimeoutError,
  SwitchyardError,
} from '../errors';
import { plainTextHeaders } from '../http1/error-response';
import { findHeader } from '../http1/fields';
import { RarelyLogged, type Logger } from '../log';
import type { AccessLog } from '../ops/access-log';
import type { RequestMetrics } from '../ops/metrics';
import type { UpstreamTarget } from '../upstream/connection';
import type { ClientRequest } from './client-request';
import { ProxyExchange, type ExchangeContext } from './exchange';
import { hashKeyFor } from './hash-key';
import { buildRequestHead, TrustedProxies, viaFor, type HeaderEdit } from './headers';
import { newRequestId, requestIdFor } from './request-id';
import { validateRequest } from './request-validation';
import type { BodyContext } from './response-body';
import { normalizePath, type Route, type Router } from './router';
import { openTunnel } from './upgrade';
import type { AcmeResponder } from './acme-responder';
import type { FaultPlan, Faults } from './faults';

/** RFC 8555 §8.3: where a CA fetches an HTTP-01 challenge. */
const ACME_CHALLENGE = '/.well-known/acme-challenge/';

/** A Host field that names a host: a DNS name, IPv4 or [IPv6], and an optional port. */
const HOST = /^([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])\.?(?::\d{1,5})?$/;

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
  /** A redirecting listener: every request gets a 308 to https on this port. */
  readonly redirect?: { readonly port: number } | null;
  /** With `acme`: the HTTP-01 challenge answers the primary published. */
  readonly acme?: AcmeResponder | null;
  /** An HTTPS listener's Strict-Transport-Security value (tls.hsts); null for none. */
  readonly hsts?: string | null;
  /** The worker's injected faults (faults.ts), shared by its listeners. */
  readonly faults?: Faults | null;
}

export class ProxyHandler implements ExchangeContext {
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
  private redirect: { readonly port: number } | null;
  private readonly acme: AcmeResponder | null;
  private readonly hsts: string | null;
  /** Per route index, its response edits with this listener's Strict-Transport-Security added. */
  private readonly hstsEdits: Array<HeaderEdit | null> = [];
  /** The failure log, at most a line a second per upstream and code. */
  readonly failures: RarelyLogged;
  private readonly faults: Faults | null;

  constructor(options: HandlerOptions) {
    this.faults = options.faults ?? null;
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
    this.redirect = options.redirect ?? null;
    this.acme = options.acme ?? null;
    this.hsts = options.proto === 'https' ? (options.hsts ?? null) : null;
  }

  /**
   * relay: the route's response edits, with Strict-Transport-Security on an HTTPS listener when
   * the route or the listener asks for it (RFC 6797 §7.2: never over plain HTTP). A
   * Strict-Transport-Security from the upstream gives way to it.
   */
  responseEdit(route: Route): HeaderEdit | null {
    if (this.proto !== 'https') return route.responseEdit;
    const cached = this.hstsEdits[route.index];
    if (cached !== undefined) return cached;
    const value = route.hsts === undefined ? this.hsts : route.hsts;
    const own = route.responseEdit;
    let merged = own;
    // `hsts: false` on the route means none: the upstream's own is taken away too.
    if ((value !== null || route.hsts === null) && own?.drop.has('strict-transport-security') !== true) {
      merged = {
        drop: new Set([...(own?.drop ?? []), 'strict-transport-security']),
        lines: `${own?.lines ?? ''}${value === null ? '' : `Strict-Transport-Security: ${value}\r\n`}`,
        host: own?.host ?? null,
      };
    }
    this.hstsEdits[route.index] = merged;
    return merged;
  }

  /** validate → route → the exchange (exchange.ts) or, for an allowed Upgrade, a tunnel. */
  readonly handle = (req: ClientRequest): void => {
    const target = validateRequest(req, this.maxBodySize);
    if (typeof target !== 'string') {
      this.refuse(req, target.err, target.close);
      return;
    }
    if (this.acme !== null && target.startsWith(ACME_CHALLENGE) && this.answerChallenge(req, target)) return;
    if (this.redirect !== null) {
      this.redirectToHttps(req, target);
      return;
    }
    const path = normalizePath(target);
    const route = this.route(req, path);
    if (route === null) return;
    const upstreamPath = route.rewritePath(path);
    if (req.upgradeTo !== null) {
      this.upgrade(req, route, upstreamPath);
      return;
    }
    if (this.faults?.active === true) {
      const plan = this.faults.plan(route, path, req.method, req.rawHeaders, req.remoteAddress);
      if (plan !== null) {
        if (plan instanceof SwitchyardError) this.refuse(req, plan, false);
        else this.injectFaults(req, route, upstreamPath, plan, performance.now());
        return;
      }
    }
    new ProxyExchange(this, req, route, upstreamPath, null).start();
  };

  /**
   * Request-side faults: the delay, then an abort, a reset or a stall instead of the upstream;
   * otherwise the exchange, with the response-side faults.
   */
  private injectFaults(req: ClientRequest, route: Route, path: string, plan: FaultPlan, startedAt: number): void {
    req.fault = plan.mark;
    if (plan.delay > 0) {
      const delay = plan.delay;
      plan.delay = 0;
      this.hold(req, delay, startedAt, () => this.injectFaults(req, route, path, plan, startedAt));
      return;
    }
    if (plan.reset) {
      const err = new FaultResetError();
      req.status = err.status;
      req.reset();
      this.account(req, requestIdFor(req), startedAt, undefined, undefined, err.code);
    } else if (plan.abort !== 0) {
      this.refuse(req, new FaultAbortError(plan.abort), false, startedAt);
    } else if (plan.stall) {
      // What a client sees of an upstream that never answers: the head timeout's 504.
      const ms = this.tunnel.responseHeaderTimeout;
      this.hold(req, ms, startedAt, () => this.refuse(req, new UpstreamHeadersTimeoutError(ms), false, startedAt));
    } else {
      new ProxyExchange(this, req, route, path, plan.response).start();
    }
  }

  /** `then` after `ms`, unless the client leaves first (then counted as a 499). */
  private hold(req: ClientRequest, ms: number, startedAt: number, then: () => void): void {
    const timer = setTimeout(() => {
      req.onAbort = null;
      then();
    }, ms);
    req.onAbort = () => {
      clearTimeout(timer);
      this.account(req, requestIdFor(req), startedAt, undefined, undefined, new ClientAbortedError().code);
    };
  }

  /**
   * A redirecting listener (`redirect: https`): 308 to the same host and target over https, so
   * the method and body are kept. ACME HTTP-01 challenge paths are not redirected: a CA fetches
   * them over plain HTTP. The Host must be a plain host name or address, so that no request can
   * turn the redirect towards somewhere else.
   */
  private redirectToHttps(req: ClientRequest, target: string): void {
    const startedAt = performance.now();
    const path = normalizePath(target);
    if (path.startsWith(ACME_CHALLENGE)) {
      this.refuse(req, new NoRouteError(req.facts.host, path), false);
      return;
    }
    const m = HOST.exec(req.facts.host ?? '');
    if (m === null) {
      this.refuse(req, new BadRequestError('no host name to redirect to'), false);
      return;
    }
    const port = this.redirect!.port === 443 ? '' : `:${this.redirect!.port}`;
    const location = `https://${m[1].toLowerCase()}${port}${target}`;
    req.respond(308, 'Permanent Redirect', `${plainTextHeaders(0)}Location: ${location}\r\n`, '');
    this.account(req, requestIdFor(req), startedAt, undefined, undefined, undefined);
  }

  /**
   * RFC 8555 §8.3: the key authorization of a pending HTTP-01 challenge, as text/plain. False
   * for a token this worker does not know: the request then goes where any other would (an
   * upstream may run its own ACME client).
   */
  private answerChallenge(req: ClientRequest, target: string): boolean {
    const token = target.slice(ACME_CHALLENGE.length).split('?')[0];
    const answer = this.acme!.keyAuthorization(token);
    if (answer === undefined) return false;
    const startedAt = performance.now();
    req.respond(200, 'OK', plainTextHeaders(Buffer.byteLength(answer)), answer);
    this.account(req, requestIdFor(req), startedAt, undefined, undefined, undefined);
    return true;
  }

  /** The HTTPS port a redirect names, once known (an HTTPS listener on port 0 learns it when listening). */
  setRedirectPort(port: number): void {
    if (this.redirect !== null) this.redirect = { port };
  }

  // route

  /** The route for the request's host, path, method and fields; answered with 404 when none. */
  private route(req: ClientRequest, path: string): Route | null {
    const route = this.router.match(req.facts.host, path, req.method, req.rawHeaders);
    if (route === null) this.refuse(req, new NoRouteError(req.facts.host, path), false);
    return route;
  }

  /** Answered by the proxy itself, before any upstream was involved. */
  private refuse(req: ClientRequest, err: SwitchyardError, close: boolean, startedAt = performance.now()): void {
    req.respondError(err, close);
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
      onError: (err) => req.respondError(err, true),
      onDone: (status, err) => {
        if (err !== undefined) {
          if (err.countsAgainstMember) pool.reportFailure(member);
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

  /** prepare headers: the upstream request head, the same for exchanges and tunnels (exchange.ts calls it). */
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
      extra: this.extra === undefined ? undefined : this.extra + demoTlsLine(req),
      upgrade,
      via: viaFor(req.httpMajor, req.httpMinor),
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
      httpMajor: req?.httpMajor,
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

/** Demo mode: the page shows the connection's TLS version and whether its session was resumed. */
function demoTlsLine(req: ClientRequest): string {
  const s = req.tlsSession;
  return s === null ? '' : `X-Switchyard-TLS: ${s.version}, ${s.resumed ? 'resumed session' : 'full handshake'}\r\n`;
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
  const tls = req.tlsSession;
  accessLog.log({
    reqId,
    remote: req.remoteAddress,
    method: req.method,
    path: req.url,
    httpMajor: req.httpMajor,
    httpMinor: req.httpMinor,
    status: req.aborted ? 499 : req.status,
    bytesIn: req.bytesIn,
    bytesOut: req.bytesOut,
    durationUs,
    upstreamUs,
    upstream,
    error,
    tls: tls?.version,
    tlsResumed: tls?.resumed,
    fault: req.fault ?? undefined,
    // Only the combined format shows these; JSON lines stay lean.
    referer: accessLog.format === 'combined' ? (findHeader(req.rawHeaders, 'referer') ?? undefined) : undefined,
    userAgent: accessLog.format === 'combined' ? (findHeader(req.rawHeaders, 'user-agent') ?? undefined) : undefined,
  });
}
