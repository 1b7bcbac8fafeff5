/**
 * Traffic mirroring (a route's `mirror`, docs/load-testing.md): a sampled share of the route's
 * requests is copied to a shadow pool. The copy leaves once the client's body is complete (it is
 * buffered up to `maxBodySize`), on a connection of the shadow pool, under its own timeout; the
 * shadow's answer is read and thrown away, or compared with the main one. Nothing of it can touch
 * the main exchange: copies under way are bounded (`maxInFlight`), and one past the bound is
 * dropped and counted, never queued behind the client.
 */
import { createHash, type Hash } from 'node:crypto';
import type { MirrorConfig } from '../config/schema';
import type { SwitchyardError } from '../errors';
import { findHeader } from '../http1/fields';
import { BodyTee, type BodyTarget, type RequestBody } from '../io/body';
import { RarelyLogged, type Logger } from '../log';
import type { UpstreamChannel, UpstreamTarget, ResponseSink } from '../upstream/connection';
import type { Waiter } from '../upstream/connection-pool';
import type { Member, UpstreamPool } from '../upstream/pool';
import type { ClientRequest } from './client-request';
import type { HeaderEdit } from './headers';
import { newRequestId } from './request-id';

/** The field that tells a shadow it got a copy: the main request's id. */
export const MIRROR_HEADER = 'X-Switchyard-Mirror';

/** What a copy needs from the handler: the same upstream request head the main exchange sent. */
export interface MirrorContext {
  requestHead(
    req: ClientRequest,
    target: UpstreamTarget,
    path: string,
    requestId: string,
    bodyLength: number | 'chunked' | null,
    edit: HeaderEdit | null,
  ): string;
}

/** How each copy ended, for /metrics: switchyard_mirror_requests_total{route,outcome}. */
export type MirrorOutcome = 'answered' | 'failed' | 'timeout' | 'dropped' | 'too_large' | 'incomplete';

export interface MirrorCounters {
  count(route: string, outcome: MirrorOutcome): void;
  compared(route: string, match: boolean): void;
}

/** One answer, as far as the comparison looks at it. */
interface Observed {
  status: number;
  headers: Array<string | null>;
  hash: string | null;
}

export class Mirror {
  inFlight = 0;
  /** The same counts as /metrics, for this worker and route. */
  readonly counts: Record<MirrorOutcome | 'match' | 'mismatch', number> = {
    answered: 0,
    failed: 0,
    timeout: 0,
    dropped: 0,
    too_large: 0,
    incomplete: 0,
    match: 0,
    mismatch: 0,
  };
  private readonly threshold: number;
  /** The response fields compared (lower case); null when nothing is compared. */
  readonly compareHeaders: readonly string[] | null;
  /** Whether the bodies' hashes are compared. */
  readonly compareBody: boolean;
  private readonly diffs: RarelyLogged;

  constructor(
    readonly route: string,
    readonly config: MirrorConfig,
    readonly pool: UpstreamPool,
    readonly edit: HeaderEdit | null,
    readonly counters: MirrorCounters | null,
    readonly logger: Logger,
  ) {
    this.threshold = config.percent / 100;
    this.compareHeaders = config.compare === undefined ? null : config.compare.headers.map((h) => h.toLowerCase());
    this.compareBody = config.compare?.body === true;
    this.diffs = new RarelyLogged(logger);
  }

  /**
   * At the start of an exchange: a copy of this request, or null when it is not sampled (or
   * cannot be taken: counted). `length` is the request body's declared length.
   */
  start(
    ctx: MirrorContext,
    req: ClientRequest,
    path: string,
    reqId: string,
    length: number | 'chunked' | null,
  ): MirrorCopy | null {
    if (this.threshold < 1 && Math.random() >= this.threshold) return null;
    if (typeof length === 'number' && length > this.config.maxBodySize) {
      this.count('too_large');
      return null;
    }
    if (this.inFlight >= this.config.maxInFlight) {
      this.count('dropped');
      return null;
    }
    this.inFlight++;
    return new MirrorCopy(this, ctx, req, path, reqId, length !== null && length !== 0);
  }

  count(outcome: MirrorOutcome): void {
    this.counts[outcome]++;
    this.counters?.count(this.route, outcome);
  }

  matched(): void {
    this.counts.match++;
    this.counters?.compared(this.route, true);
  }

  differ(mainId: string, shadowId: string, diff: string): void {
    this.counts.mismatch++;
    this.counters?.compared(this.route, false);
    this.diffs.warn(
      `mirror ${this.route}`,
      { event: 'mirror-diff', route: this.route, reqId: mainId, shadowReqId: shadowId, diff },
      'mirror: the shadow answered differently',
    );
  }
}

/**
 * One copy: it tees the client's body as the main exchange reads it, then goes to the shadow as a
 * ResponseSink of its own.
 */
export class MirrorCopy extends BodyTee implements ResponseSink {
  private chunks: Buffer[] = [];
  private size = 0;
  private bodyDone: boolean;
  private sent = false;
  private over = false;
  private timer: NodeJS.Timeout | null = null;
  private waiter: Waiter | null = null;
  private channel: UpstreamChannel | null = null;
  private member: Member | null = null;
  private readonly shadowId = newRequestId();
  private mainHash: Hash | null = null;
  private shadowHash: Hash | null = null;
  private main: Observed | null = null;
  private shadow: Observed | null = null;
  /** The main answer will not be compared (it failed, or no comparison is configured). */
  private mainGone: boolean;

  constructor(
    private readonly mirror: Mirror,
    private readonly ctx: MirrorContext,
    private readonly req: ClientRequest,
    private readonly path: string,
    private readonly reqId: string,
    hasBody: boolean,
  ) {
    super(req);
    this.bodyDone = !hasBody;
    this.mainGone = mirror.compareHeaders === null;
    if (this.bodyDone) this.send();
  }

  // The main exchange's request body passes through here.

  protected copy(chunk: Buffer): void {
    if (this.bodyDone || this.over) return;
    this.size += chunk.length;
    if (this.size > this.mirror.config.maxBodySize) {
      this.chunks = [];
      this.finish('too_large');
    } else {
      this.chunks.push(Buffer.from(chunk));
    }
  }

  protected copied(): void {
    if (this.bodyDone) return;
    this.bodyDone = true;
    this.send();
  }

  // The main answer, for the comparison.

  mainHead(status: number, rawHeaders: string[]): void {
    if (this.mainGone) return;
    this.main = { status, headers: this.fields(rawHeaders), hash: null };
    if (this.mirror.compareBody) this.mainHash = createHash('sha256');
  }

  mainData(chunk: Buffer): void {
    this.mainHash?.update(chunk);
  }

  /** The main exchange is over: `ok` when its answer was relayed whole. */
  mainDone(ok: boolean): void {
    if (!this.bodyDone) {
      // The client's body never came whole: there is nothing complete to copy.
      this.finish('incomplete');
      return;
    }
    if (this.mainGone) return;
    if (!ok || this.main === null) {
      this.mainGone = true;
      return;
    }
    this.main.hash = this.mainHash?.digest('hex') ?? null;
    this.compare();
  }

  // The shadow's side.

  private send(): void {
    if (this.over || this.sent) return;
    this.sent = true;
    const mirror = this.mirror;
    const member = mirror.pool.pick(null, null);
    if (member === null) {
      this.finish('failed');
      return;
    }
    this.member = member;
    member.inflight++;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.finish('timeout');
    }, mirror.config.timeout);
    this.waiter = member.connections.acquire((err, channel) => {
      this.waiter = null;
      if (this.over) {
        if (channel !== null) member.connections.release(channel);
        return;
      }
      if (err !== null) {
        this.finish('failed', err);
        return;
      }
      this.channel = channel;
      const head = this.ctx.requestHead(
        this.req,
        member.target,
        this.path,
        this.shadowId,
        this.size === 0 ? null : this.size,
        mirror.edit,
      );
      const marked = `${head.slice(0, -2)}${MIRROR_HEADER}: ${this.reqId}\r\n\r\n`;
      channel!.send(
        marked,
        this.size === 0 ? null : new BufferedBody(this.chunks),
        this.size === 0 ? null : 'length',
        this.req.method === 'HEAD',
        this,
      );
    });
  }

  onInformational(): void {}

  onHead(status: number, _reason: string, rawHeaders: string[]): void {
    if (this.mirror.compareHeaders === null) return;
    this.shadow = { status, headers: this.fields(rawHeaders), hash: null };
    if (this.mirror.compareBody) this.shadowHash = createHash('sha256');
  }

  onData(chunk: Buffer): boolean {
    this.shadowHash?.update(chunk);
    return true;
  }

  onTrailers(): void {}

  flush(): void {}

  onEnd(): void {
    this.channel = null;
    if (this.shadow !== null) this.shadow.hash = this.shadowHash?.digest('hex') ?? null;
    this.finish('answered');
    this.compare();
  }

  onError(err: SwitchyardError): void {
    this.channel = null;
    this.finish('failed', err);
  }

  private fields(raw: readonly string[]): Array<string | null> {
    return (this.mirror.compareHeaders ?? []).map((name) => findHeader(raw, name));
  }

  /** Once both answers are in: equal, or a mismatch counted and logged with a short diff. */
  private compare(): void {
    const main = this.main;
    const shadow = this.shadow;
    if (this.mainGone || main === null || shadow === null || !this.over) return;
    if (main.hash === null && this.mirror.compareBody && this.mainHash !== null) return; // main body still running
    this.mainGone = true;
    const diff: string[] = [];
    if (main.status !== shadow.status) diff.push(`status ${main.status} ≠ ${shadow.status}`);
    (this.mirror.compareHeaders ?? []).forEach((name, i) => {
      if (main.headers[i] !== shadow.headers[i])
        diff.push(`${name} ${JSON.stringify(main.headers[i])} ≠ ${JSON.stringify(shadow.headers[i])}`);
    });
    if (main.hash !== shadow.hash) diff.push(`body sha256 ${main.hash?.slice(0, 12)}… ≠ ${shadow.hash?.slice(0, 12)}…`);
    if (diff.length === 0) this.mirror.matched();
    else this.mirror.differ(this.reqId, this.shadowId, diff.join('; '));
  }

  /** The copy is over, however: its slot is free, its connection let go, its outcome counted. */
  private finish(outcome: MirrorOutcome, err?: SwitchyardError): void {
    if (this.over) return;
    this.over = true;
    this.chunks = [];
    const mirror = this.mirror;
    mirror.inFlight--;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.waiter?.cancel();
    this.waiter = null;
    this.channel?.abort();
    this.channel = null;
    if (this.member !== null) {
      this.member.inflight--;
      if (err?.countsAgainstMember === true) mirror.pool.reportFailure(this.member);
    }
    if (outcome !== 'answered') this.shadow = null;
    mirror.count(outcome);
    if (err !== undefined)
      mirror.logger.debug(
        { route: mirror.route, code: err.code, shadowReqId: this.shadowId },
        'mirror: the copy failed',
      );
  }
}

/** A body held whole: given to the shadow at once (it is at most `maxBodySize`). */
class BufferedBody implements RequestBody {
  constructor(private readonly chunks: readonly Buffer[]) {}

  pipeTo(target: BodyTarget): void {
    for (const c of this.chunks) target.onBodyChunk(c);
    target.onBodyEnd();
  }

  unpipe(): void {}
  pause(): void {}
  resume(): void {}
}
