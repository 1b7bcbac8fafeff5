/**
 * A worker's keep-alive pool for one upstream: idle connections are reused most-recently-used
 * first (warm sockets stay warm, the rest expire), new ones are opened up to `maxConnections`, and
 * requests past that wait in a FIFO queue bounded in length (`maxQueue`) and in time
 * (`queueTimeout`).
 */
import { PoolClosedError, PoolQueueFullError, PoolQueueTimeoutError, type SwitchyardError } from '../errors';
import {
  UpstreamConnection,
  type UpstreamChannel,
  type UpstreamConnectionOwner,
  type ConnectionTimeouts,
  type UpstreamTarget,
} from './connection';

export interface PoolOptions {
  readonly maxConnections: number;
  readonly queueTimeout: number;
  readonly maxQueue: number;
  readonly timeouts: ConnectionTimeouts;
}

export type AcquireCallback = (err: SwitchyardError | null, conn: UpstreamChannel | null) => void;

/**
 * How a member's requests reach it, per worker: keep-alive HTTP/1.1 connections (ConnectionPool)
 * or multiplexed HTTP/2 sessions (http2-pool.ts). Both lend a channel per exchange, queue past
 * their limit within maxQueue and queueTimeout, and take back a channel an exchange left unused.
 */
export interface MemberConnections {
  readonly target: UpstreamTarget;
  /** `fresh`: not on a connection that was idle (a replay after a stale one). */
  acquire(cb: AcquireCallback, fresh?: boolean): Waiter | null;
  /** A channel lent and not used: its client left before the exchange began. */
  release(conn: UpstreamChannel): void;
  stats(): PoolStats;
  close(): void;
}

/** A queued acquire; `cancel()` when the client leaves first. */
export interface Waiter {
  cancel(): void;
}

interface QueueEntry extends Waiter {
  cb: AcquireCallback | null;
  timer: NodeJS.Timeout | null;
}

/**
 * Requests waiting for a member's connection (or HTTP/2 stream), first come first served,
 * bounded in length (`maxQueue`: past it, refused at once) and in time (`queueTimeout`).
 */
export class WaitQueue {
  private readonly entries: QueueEntry[] = [];

  constructor(
    private readonly maxQueue: number,
    private readonly queueTimeout: number,
  ) {}

  get length(): number {
    return this.entries.length;
  }

  /** Queue `cb`; answered at once with PoolQueueFullError when the queue is full. */
  add(cb: AcquireCallback): Waiter | null {
    if (this.entries.length >= this.maxQueue) {
      cb(new PoolQueueFullError(this.maxQueue), null);
      return null;
    }
    const entry: QueueEntry = {
      cb,
      timer: null,
      cancel: () => {
        settle(entry);
        const i = this.entries.indexOf(entry);
        if (i !== -1) this.entries.splice(i, 1);
      },
    };
    entry.timer = setTimeout(() => {
      const waiting = entry.cb;
      entry.cancel();
      waiting?.(new PoolQueueTimeoutError(this.queueTimeout), null);
    }, this.queueTimeout);
    this.entries.push(entry);
    return entry;
  }

  /** The longest-waiting callback, its timer stopped; undefined when none waits. */
  next(): AcquireCallback | undefined {
    const entry = this.entries.shift();
    return entry === undefined ? undefined : (settle(entry) ?? undefined);
  }

  /** Every waiter gets `err` (the pool closed). */
  failAll(err: SwitchyardError): void {
    for (const entry of this.entries.splice(0)) settle(entry)?.(err, null);
  }
}

export interface PoolStats {
  open: number;
  idle: number;
  pending: number;
}

export class ConnectionPool implements MemberConnections, UpstreamConnectionOwner {
  private readonly idleConns: UpstreamConnection[] = [];
  /** Every open connection, for the deadline sweep. */
  private readonly all = new Set<UpstreamConnection>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sweepEvery: number;
  private readonly queue: WaitQueue;
  private open = 0;
  private closed = false;
  private tlsSession: Buffer | null = null;
  private readonly onTlsSession: ((s: Buffer) => void) | null;

  constructor(
    readonly target: UpstreamTarget,
    private readonly options: PoolOptions,
  ) {
    this.queue = new WaitQueue(options.maxQueue, options.queueTimeout);
    // Resuming the last TLS session skips a full handshake on each new connection.
    this.onTlsSession =
      target.tls === null
        ? null
        : (s: Buffer) => {
            this.tlsSession = s;
          };
    // A timeout fires at most one sweep late: a quarter of the shortest one, within 10 ms..1 s.
    const t = options.timeouts;
    const shortest = Math.min(t.connect, t.responseHeader, t.idle, t.keepAlive);
    this.sweepEvery = Math.min(1000, Math.max(10, Math.floor(shortest / 4)));
  }

  private sweep = (): void => {
    const now = Date.now();
    for (const conn of this.all) conn.checkDeadline(now);
    if (this.all.size === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  };

  stats(): PoolStats {
    return { open: this.open, idle: this.idleConns.length, pending: this.queue.length };
  }

  /**
   * Calls back synchronously when a connection is at hand, else later. `fresh` skips idle
   * connections: a replay after a stale keep-alive socket must not meet another stale one.
   */
  acquire(cb: AcquireCallback, fresh = false): Waiter | null {
    if (this.closed) {
      cb(new PoolClosedError(), null);
      return null;
    }
    if (!fresh) {
      const conn = this.idleConns.pop();
      if (conn !== undefined) {
        conn.reuse();
        cb(null, conn);
        return null;
      }
    }
    if (this.open < this.options.maxConnections) {
      cb(null, this.connect());
      return null;
    }
    return this.queue.add(cb);
  }

  /** A connection whose exchange ended cleanly: hand it to the next waiter, or park it. */
  release(conn: UpstreamConnection): void {
    if (this.closed) {
      conn.close();
      return;
    }
    const next = this.queue.next();
    if (next !== undefined) {
      conn.reuse();
      next(null, conn);
      return;
    }
    conn.park();
    this.idleConns.push(conn);
  }

  /** A connection closed for good: forget it, and let a waiter open a new one in its place. */
  remove(conn: UpstreamConnection): void {
    this.open--;
    this.all.delete(conn);
    const i = this.idleConns.indexOf(conn);
    if (i !== -1) this.idleConns.splice(i, 1);
    if (!this.closed && this.queue.length > 0 && this.open < this.options.maxConnections) {
      this.queue.next()!(null, this.connect());
    }
  }

  /** Stop lending: close idle connections and fail waiters. Busy ones close when their exchange ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const conn of this.idleConns.splice(0)) conn.close();
    this.queue.failAll(new PoolClosedError());
  }

  private connect(): UpstreamConnection {
    this.open++;
    const target =
      this.tlsSession === null || this.target.tls === null
        ? this.target
        : { ...this.target, tls: { ...this.target.tls, session: this.tlsSession } };
    const conn = new UpstreamConnection(target, this, this.options.timeouts, this.onTlsSession);
    this.all.add(conn);
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(this.sweep, this.sweepEvery);
      this.sweepTimer.unref();
    }
    return conn;
  }
}

/** A queued acquire is answered at most once: its timer is stopped and its callback handed back. */
function settle(entry: QueueEntry): AcquireCallback | null {
  const cb = entry.cb;
  if (entry.timer !== null) clearTimeout(entry.timer);
  entry.cb = null;
  return cb;
}
