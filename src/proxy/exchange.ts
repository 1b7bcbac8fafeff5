/**
 * One proxied request on its way to an upstream and back, as named phases:
 *
 *   pick upstream → prepare headers → forward → relay
 *        ↑                                  ↘ fail (502/503/504, or a cut once bytes flowed)
 *        └── retry, on another member, while nothing has reached the client
 *
 * Each request is one ProxyExchange, which is also the upstream connection's ResponseSink; its
 * only per-request closures are the three callbacks it hands out (connection, drain, abort).
 */
import { performance } from 'node:perf_hooks';
import { errField, type Logger, type RarelyLogged } from '../log';
import {
  ClientAbortedError,
  type FaultCutError,
  NoHealthyUpstreamError,
  PoolClosedError,
  PoolQueueFullError,
  type SwitchyardError,
} from '../errors';
import { findHeader } from '../http1/fields';
import type { RequestBody } from '../io/body';
import type { BodyFraming, ResponseSink, UpstreamChannel } from '../upstream/connection';
import type { Waiter } from '../upstream/connection-pool';
import { RetryHint } from '../upstream/exchange-phase';
import type { Member, UpstreamPool } from '../upstream/pool';
import type { ClientRequest } from './client-request';
import { hashKeyFor } from './hash-key';
import { buildInterimHead, buildResponseHead, relayableTrailers, VIA, viaFor, type HeaderEdit } from './headers';
import { requestIdFor } from './request-id';
import { requestBodyLength } from './request-validation';
import { planBody, type BodyContext, type BodyFilter, type FilterSink } from './response-body';
import type { Route } from './router';
import { FaultyResponse, type FaultTarget } from './fault-response';
import type { ResponseFaults } from './faults';
import type { MirrorContext, MirrorCopy } from './mirror';
import type { Capture } from './recorder';

/** This hop's Via entry on an answer an HTTP/2 upstream gave. */
const VIA_HTTP2 = viaFor(2, 0);

/** A stale pooled connection is replayed at most this often, each time on a fresh connection. */
const MAX_REPLAYS = 1;

/** Safe to send twice (RFC 9110 §9.2.2), when no body went with them. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** What an exchange needs from the handler that started it. */
export interface ExchangeContext extends MirrorContext {
  readonly proto: 'http' | 'https';
  readonly logger: Logger;
  /** The failure log, at most a line a second per upstream and code. */
  readonly failures: RarelyLogged;
  readonly body: BodyContext | null;
  /** timeouts.idle, which a response-side stall runs into. */
  readonly tunnel: { readonly idleTimeout: number };
  /** The route's response edits as this listener applies them (Strict-Transport-Security). */
  responseEdit(route: Route): HeaderEdit | null;
  account(
    req: ClientRequest,
    reqId: string,
    startedAt: number,
    upstreamMs: number | undefined,
    upstream: string | undefined,
    error: string | undefined,
  ): void;
}

export class ProxyExchange implements ResponseSink, FilterSink, FaultTarget {
  private conn: UpstreamChannel | null = null;
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
  private readonly body: RequestBody | null;
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
  /** Response-side injected faults stand between the upstream and this exchange; null for none. */
  private readonly faulty: FaultyResponse | null;
  /** This request's copy to the route's shadow pool, when it is mirrored. */
  private readonly mirror: MirrorCopy | null;
  /** This exchange's line in the route's recording, when it is recorded. */
  private readonly capture: Capture | null;

  constructor(
    private readonly handler: ExchangeContext,
    private readonly req: ClientRequest,
    private readonly route: Route,
    private readonly path: string,
    faults: ResponseFaults | null,
  ) {
    this.faulty = faults === null ? null : new FaultyResponse(this, faults, handler.tunnel.idleTimeout);
    const length = requestBodyLength(req);
    const hasBody = length === 'chunked' || (length !== null && length > 0);
    this.length = length;
    this.reqId = requestIdFor(req);
    this.mirror = route.mirror?.start(handler, req, path, this.reqId, length) ?? null;
    this.capture = route.recorder?.start(req, this.mirror ?? req, handler.proto, this.reqId) ?? null;
    // A mirrored or recorded body passes through the copy on its way to the upstream.
    this.body = hasBody ? (this.capture ?? this.mirror ?? req) : null;
    this.framing = length === 'chunked' ? 'chunked' : hasBody ? 'length' : null;
    this.pool = route.pool;
    req.onAbort = this.onClientAbort;
    req.onDrain = this.onClientDrain;
  }

  /** pick upstream → prepare headers → forward; relay or fail follow from the upstream's answer. */
  start(): void {
    const member = this.pickUpstream();
    if (member === null) {
      this.fail(new NoHealthyUpstreamError(this.pool.name, this.pool.retryAfter));
      return;
    }
    this.attempt(member, false);
  }

  // pick upstream

  /** A member of the route's pool that this request has not tried yet; null when none is up. */
  private pickUpstream(): Member | null {
    return this.pool.pick(this.hashKey(), this.tried);
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
    this.head = this.prepareHeaders(member);
    this.waiter = member.connections.acquire(this.onConnection, fresh);
  }

  // prepare headers

  /** The upstream request head, per member: the Host header is the member's own. */
  private prepareHeaders(member: Member): string {
    return this.handler.requestHead(
      this.req,
      member.target,
      this.path,
      this.reqId,
      this.length,
      this.route.requestEdit,
    );
  }

  private uncount(): void {
    if (this.counted) {
      this.counted = false;
      this.member!.inflight--;
    }
  }

  // forward

  private readonly onConnection = (err: SwitchyardError | null, conn: UpstreamChannel | null): void => {
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
    this.forward(conn!);
  };

  /** The request goes out on `conn`; the upstream's answer comes back through the relay methods. */
  private forward(conn: UpstreamChannel): void {
    this.conn = conn;
    conn.send(this.head, this.body, this.framing, this.req.method === 'HEAD', this.faulty ?? this);
  }

  // relay

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
    this.mirror?.mainHead(status, rawHeaders);
    this.capture?.head(rawHeaders);
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
      this.handler.responseEdit(route),
      route.rewriteLocation ? (v) => this.rewriteLocation(v) : null,
      this.member!.target.http2 ? VIA_HTTP2 : VIA,
    );
    this.req.writeHead(status, reason, head.lines, head.contentLength);
  }

  onData(chunk: Buffer): boolean {
    this.mirror?.mainData(chunk);
    return this.filter === null ? this.req.write(chunk) : this.filter.data(chunk);
  }

  write(chunk: Buffer): boolean {
    return this.req.write(chunk);
  }

  flush(): void {
    this.req.flush();
  }

  onTrailers(rawTrailers: string[]): void {
    // A transform or compression changed the body the trailers describe: they are dropped.
    if (this.filter === null) this.req.trailers = relayableTrailers(rawTrailers);
  }

  onEnd(): void {
    this.upstreamDone();
    this.finishResponse();
  }

  upstreamDone(): void {
    this.conn = null;
    this.uncount();
  }

  finishResponse(): void {
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
    if (hint !== RetryHint.Stale && err.countsAgainstMember) this.pool.reportFailure(member);
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
    return this.pickUpstream();
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
    this.faulty?.stop();
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

  /** The exchange ends here, the upstream side let go; false when it had already ended. */
  private giveUp(): boolean {
    if (this.done) return false;
    this.done = true;
    this.uncount();
    this.faulty?.stop();
    this.filter?.abort();
    this.conn?.abort();
    this.conn = null;
    return true;
  }

  fail(err: SwitchyardError): void {
    if (!this.giveUp()) return;
    this.log(err);
    this.req.respondError(err);
    this.finished(err.code);
  }

  /** An injected fault cuts the client connection: reset before any byte, or closed mid-body. */
  cut(err: FaultCutError): void {
    if (!this.giveUp()) return;
    if (!this.req.headersSent) this.req.status = err.status;
    if (err.reset) this.req.reset();
    else this.req.cutAfterWrites();
    this.finished(err.code);
  }

  private finished(error: string | undefined): void {
    this.mirror?.mainDone(error === undefined);
    this.capture?.done(
      performance.now() - this.startedAt,
      this.headAt === 0 ? undefined : this.headAt - this.startedAt,
      error,
    );
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
