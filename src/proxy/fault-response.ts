/**
 * Response-side faults (faults.ts plans them): between the upstream's answer and the exchange
 * that relays it, this sink holds the head (delay), throws the answer away (abort), paces the body
 * (bandwidth), cuts it short (partial) or withholds it (stall). The upstream is held back by the
 * same flow control as a slow client: onData returns false until the body may go on.
 */
import { performance } from 'node:perf_hooks';
import {
  FaultAbortError,
  FaultPartialError,
  FaultResetError,
  UpstreamIdleTimeoutError,
  type FaultCutError,
  type SwitchyardError,
} from '../errors';
import type { ResponseSink } from '../upstream/connection';
import type { RetryHint } from '../upstream/exchange-phase';
import type { ResponseFaults } from './faults';

/** What the sink needs of the exchange it stands in front of (exchange.ts). */
export interface FaultTarget extends ResponseSink {
  /** The upstream's part is over (its connection went back to the pool): forget it, keep the client's. */
  upstreamDone(): void;
  /** After upstreamDone: the client's response ends (or a body filter finishes it). */
  finishResponse(): void;
  fail(err: SwitchyardError): void;
  /** The client connection is cut (reset, or closed after a partial body); nothing more is sent. */
  cut(err: FaultCutError): void;
  resumeUpstream(): void;
}

/** Pacing never waits less than this between writes: a timer per byte at low rates would be absurd. */
const MIN_PACE_MS = 10;
/** A paced write carries at most this share of a second's budget (smooth rather than bursty). */
const PACE_SLICES = 20;

export class FaultyResponse implements ResponseSink {
  /** Events after a held or paced one, in order: body chunks (copies) and the end. */
  private readonly queue: Array<Buffer | (() => void)> = [];
  private holding = false;
  private stalled = false;
  private over = false;
  private timer: NodeJS.Timeout | null = null;
  /** Body bytes relayed so far. */
  private sent = 0;
  private pacedSince = 0;

  constructor(
    private readonly target: FaultTarget,
    private readonly faults: ResponseFaults,
    private readonly idleMs: number,
  ) {}

  /** The exchange is over (failed, aborted, cut): timers stop, nothing queued is relayed. */
  stop(): void {
    this.over = true;
    this.queue.length = 0;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  onInformational(status: number, reason: string, rawHeaders: string[]): void {
    this.target.onInformational(status, reason, rawHeaders);
  }

  onHead(status: number, reason: string, rawHeaders: string[]): void {
    const f = this.faults;
    if (f.reset) {
      this.target.cut(new FaultResetError());
      return;
    }
    if (f.abort !== 0) {
      this.target.fail(new FaultAbortError(f.abort));
      return;
    }
    if (f.delay > 0) {
      this.holding = true;
      this.queue.push(() => this.relayHead(status, reason, rawHeaders));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.holding = false;
        this.drain();
      }, f.delay);
      return;
    }
    this.relayHead(status, reason, rawHeaders);
  }

  private relayHead(status: number, reason: string, rawHeaders: string[]): void {
    this.target.onHead(status, reason, rawHeaders);
    if (this.faults.stall) {
      this.stalled = true;
      // The head goes out now: the client is to wait on a body that does not come.
      this.target.flush();
      const ms = this.idleMs;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.target.fail(new UpstreamIdleTimeoutError(ms));
      }, ms);
    } else if (this.faults.partial === 0) {
      this.target.flush();
      this.target.cut(new FaultPartialError());
    }
  }

  onData(chunk: Buffer): boolean {
    if (this.over || this.stalled) return false;
    if (this.holding || this.queue.length > 0) {
      // The chunk may be a view of a read buffer the next read reuses.
      this.queue.push(Buffer.from(chunk));
      return false;
    }
    return this.relayData(chunk);
  }

  /** True when the upstream may go on reading. */
  private relayData(chunk: Buffer): boolean {
    const f = this.faults;
    let body = chunk;
    let last = false;
    if (f.partial >= 0 && this.sent + body.length >= f.partial) {
      body = body.subarray(0, f.partial - this.sent);
      last = true;
    }
    if (f.bandwidth > 0 && !last) return this.pace(body);
    this.sent += body.length;
    const more = body.length === 0 || this.target.onData(body);
    if (last) {
      this.target.flush();
      this.target.cut(new FaultPartialError());
      return false;
    }
    return more;
  }

  /** bandwidth: what the rate allows now goes out, the rest waits for its time. */
  private pace(chunk: Buffer): boolean {
    const rate = this.faults.bandwidth;
    const now = performance.now();
    if (this.pacedSince === 0) this.pacedSince = now - 1000 / PACE_SLICES;
    const budget = Math.floor((rate * (now - this.pacedSince)) / 1000) - this.sent;
    const take = Math.min(chunk.length, Math.max(0, Math.min(budget, Math.ceil(rate / PACE_SLICES))));
    if (take > 0) {
      this.sent += take;
      this.target.onData(chunk.subarray(0, take));
      this.target.flush();
    }
    if (take === chunk.length) return true;
    this.queue.unshift(Buffer.from(chunk.subarray(take)));
    // Until the next slice's worth is due; the budget is reckoned from the clock, so waits that
    // overshoot do not slow the average.
    const wait = Math.max(MIN_PACE_MS, Math.ceil((Math.min(chunk.length - take, rate / PACE_SLICES) / rate) * 1000));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.drain();
    }, wait);
    return false;
  }

  /** Relays what was queued, until something holds again; then lets the upstream go on. */
  private drain(): void {
    while (!this.over && !this.holding && this.timer === null && this.queue.length > 0) {
      const next = this.queue.shift()!;
      if (typeof next === 'function') next();
      else if (this.stalled) continue;
      else if (!this.relayData(next)) {
        if (this.timer !== null || this.over) return;
      }
    }
    if (!this.over && this.queue.length === 0 && this.timer === null) {
      this.target.flush();
      this.target.resumeUpstream();
    }
  }

  onTrailers(rawTrailers: string[]): void {
    if (this.over) return;
    if (this.holding || this.queue.length > 0) this.queue.push(() => this.target.onTrailers(rawTrailers));
    else if (!this.stalled) this.target.onTrailers(rawTrailers);
  }

  onEnd(): void {
    // The upstream connection is free now, whatever the client still waits for: the exchange must
    // not hold on to it (a later abort would reach whoever uses it next).
    this.target.upstreamDone();
    if (this.over || this.stalled) return;
    if (this.holding || this.queue.length > 0) this.queue.push(() => this.target.finishResponse());
    else this.target.finishResponse();
  }

  flush(): void {
    if (!this.over && !this.holding && this.queue.length === 0) this.target.flush();
  }

  onError(err: SwitchyardError, hint: RetryHint): void {
    if (this.holding || this.stalled || this.sent > 0) this.stop();
    this.target.onError(err, hint);
  }
}
