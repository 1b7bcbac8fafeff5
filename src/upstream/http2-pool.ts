/**
 * A worker's HTTP/2 sessions to one upstream member (an h2c:// origin, or https:// with `http2`):
 * many exchanges multiplexed over few connections. A session takes streams up to the member's
 * SETTINGS_MAX_CONCURRENT_STREAMS; past that on every session, another is opened (up to
 * `maxConnections` sessions), and past that too, requests wait in a FIFO queue bounded like the
 * HTTP/1.1 pool's (`maxQueue`, `queueTimeout`).
 *
 * A session that received GOAWAY, or whose socket failed, takes no new streams: its streams the
 * member never processed fail as not sent (http2-stream.ts), so the exchange tries them again on
 * another session. An idle session closes after `timeouts.keepAlive`.
 */
import * as http2 from 'node:http2';
import { PoolClosedError, UpstreamConnectTimeoutError, toSwitchyardError, type SwitchyardError } from '../errors';
import { formatHostPort } from '../config/schema';
import type { UpstreamChannel } from './connection';
import {
  WaitQueue,
  type AcquireCallback,
  type MemberConnections,
  type PoolOptions,
  type PoolStats,
  type Waiter,
} from './connection-pool';
import { Http2Exchange, type StreamSession } from './http2-stream';
import type { UpstreamTarget } from './target';

/** Streams a session takes before the member's SETTINGS say how many it allows (RFC 9113 §6.5.2 suggests ≥ 100). */
const STREAMS_BEFORE_SETTINGS = 100;

/** One HTTP/2 connection to the member, and how many of its streams are in use. */
export class UpstreamSession implements StreamSession {
  active = 0;
  /** STREAMS_BEFORE_SETTINGS until the member's SETTINGS say how many it allows. */
  limit = STREAMS_BEFORE_SETTINGS;
  /** No new streams: GOAWAY came, the socket failed, or the pool closed. */
  closing = false;
  connected = false;
  /** Why the session ended, for its streams' errors. */
  failure: SwitchyardError | null = null;
  /** A GOAWAY's last stream id: streams past it were never processed. */
  lastStreamId: number | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private waiting: Array<() => void> | null = null;

  constructor(
    readonly session: http2.ClientHttp2Session,
    private readonly keepAliveMs: number,
    /** Told when a stream is over: its place may go to a waiting request. */
    private readonly onFree: () => void,
  ) {}

  get usable(): boolean {
    return !this.closing && this.active < this.limit;
  }

  /** Run `fn` once the connection is up (streams made before wait for it). */
  whenConnected(fn: () => void): void {
    (this.waiting ??= []).push(fn);
  }

  onConnect(): void {
    this.connected = true;
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting !== null) for (const fn of waiting) fn();
  }

  take(): void {
    this.active++;
    if (this.idleTimer !== null) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  /** A stream is over; an idle session waits `keepAlive` for the next before it closes. */
  give(): void {
    this.active--;
    if (this.active === 0 && !this.closing) {
      this.idleTimer = setTimeout(() => {
        this.closing = true;
        this.session.close();
      }, this.keepAliveMs);
      this.idleTimer.unref();
    }
    this.onFree();
  }

  stop(): void {
    this.closing = true;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

export class Http2Pool implements MemberConnections {
  private readonly sessions: UpstreamSession[] = [];
  private readonly queue: WaitQueue;
  private closed = false;
  private readonly authority: string;

  constructor(
    readonly target: UpstreamTarget,
    private readonly options: PoolOptions,
  ) {
    this.queue = new WaitQueue(options.maxQueue, options.queueTimeout);
    this.authority = `${target.tls === null ? 'http' : 'https'}://${formatHostPort(target.host, target.port)}`;
  }

  stats(): PoolStats {
    let idle = 0;
    for (const s of this.sessions) if (s.active === 0) idle++;
    return { open: this.sessions.length, idle, pending: this.queue.length };
  }

  /** A stream on the least busy open session, a new session, or a place in the queue. */
  acquire(cb: AcquireCallback): Waiter | null {
    if (this.closed) {
      cb(new PoolClosedError(), null);
      return null;
    }
    const session = this.available();
    if (session !== null) {
      cb(null, this.lend(session));
      return null;
    }
    return this.queue.add(cb);
  }

  /** A stream lent but never used (its client left first). */
  release(conn: UpstreamChannel): void {
    (conn as Http2Exchange).abort();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Open streams finish: close() sends GOAWAY and ends the session when they have.
    for (const s of this.sessions) {
      s.stop();
      s.session.close();
    }
    this.queue.failAll(new PoolClosedError());
  }

  private lend(session: UpstreamSession): Http2Exchange {
    session.take();
    return new Http2Exchange(session, this.target, this.options.timeouts);
  }

  /** The open session with the most room, or a new one while under maxConnections; null when full. */
  private available(): UpstreamSession | null {
    let best: UpstreamSession | null = null;
    for (const s of this.sessions) {
      if (s.usable && (best === null || s.active < best.active)) best = s;
    }
    if (best !== null) return best;
    if (this.sessions.length < this.options.maxConnections) return this.connect();
    return null;
  }

  /** Waiting requests take the places free now. */
  private readonly dispatch = (): void => {
    while (this.queue.length > 0 && !this.closed) {
      const session = this.available();
      if (session === null) return;
      this.queue.next()!(null, this.lend(session));
    }
  };

  private connect(): UpstreamSession {
    const t = this.options.timeouts;
    const session = http2.connect(this.authority, {
      ...(this.target.tls ?? {}),
      settings: { enablePush: false },
    });
    const s = new UpstreamSession(session, t.keepAlive, this.dispatch);
    this.sessions.push(s);
    const connectTimer = setTimeout(() => {
      s.failure = new UpstreamConnectTimeoutError(t.connect);
      session.destroy();
    }, t.connect);
    session.once('connect', () => {
      clearTimeout(connectTimer);
      s.onConnect();
    });
    session.on('remoteSettings', (settings: http2.Settings) => {
      s.limit = Math.max(1, Math.min(settings.maxConcurrentStreams ?? STREAMS_BEFORE_SETTINGS, 10_000));
      this.dispatch();
    });
    // GOAWAY: streams past its last id fail as refused (http2-stream.ts); none new go here, and
    // a new session may take its place while its open streams finish.
    session.on('goaway', (_code: number, lastStreamId: number) => {
      s.lastStreamId = lastStreamId;
      this.retire(s);
    });
    session.on('error', (err: Error) => {
      s.failure ??= toSwitchyardError(err);
    });
    session.once('close', () => {
      clearTimeout(connectTimer);
      this.retire(s);
      this.dispatch();
    });
    return s;
  }

  private retire(s: UpstreamSession): void {
    s.stop();
    const i = this.sessions.indexOf(s);
    if (i !== -1) this.sessions.splice(i, 1);
  }
}
