/**
 * Who is in each pool and who is healthy, decided in one place.
 *
 * In the cluster this runs in the primary: it resolves DNS pools, runs the active checks, counts
 * the failures workers report (passive checks), and sends every worker the same snapshot, so no
 * two workers disagree about a member and a member is checked once, not once per worker. An
 * in-process ProxyServer (tests, embedding) runs its own. It needs no proxy code: URLs, probes
 * and timers.
 *
 * A member is healthy when its active check is passing (members start passing: a new pool takes
 * traffic at once) and it is not ejected by the passive check.
 */
import { errField, type Logger } from '../log';
import type { MemberConfig, PoolConfig } from '../config/schema';
import { NO_RECORDS, resolveMembers } from './dns';
import { probe } from './health-check';
import { targetFromConfig, type UpstreamTarget } from './target';

export interface MemberSnapshot extends MemberConfig {
  healthy: boolean;
}

/** Pool name → its members now. Plain data: it crosses IPC as JSON. */
export type MembershipSnapshot = Record<string, MemberSnapshot[]>;

/** How soon a failed DNS lookup is tried again. */
const DNS_RETRY_MS = 5_000;
/** How long start() waits for the first DNS answers before workers start anyway. */
const DNS_START_WAIT_MS = 5_000;

class MemberHealth {
  activeUp = true;
  private passes = 0;
  private fails = 0;
  /** Timestamps of recent failures (passive check). */
  failures: number[] = [];
  ejectedUntil = 0;
  checkTimer: NodeJS.Timeout | null = null;
  ejectTimer: NodeJS.Timeout | null = null;
  private target: UpstreamTarget | null = null;

  constructor(readonly config: MemberConfig) {}

  /** Built on first use: it reads the CA file, once. */
  get upstreamTarget(): UpstreamTarget {
    return (this.target ??= targetFromConfig(this.config));
  }

  get healthy(): boolean {
    return this.activeUp && this.ejectedUntil === 0;
  }

  /** Record one active check; true when the verdict changed. */
  checked(ok: boolean, rise: number, fall: number): boolean {
    if (ok) {
      this.fails = 0;
      if (this.activeUp) return false;
      if (++this.passes >= rise) {
        this.activeUp = true;
        this.passes = 0;
        return true;
      }
      return false;
    }
    this.passes = 0;
    if (!this.activeUp) return false;
    if (++this.fails >= fall) {
      this.activeUp = false;
      this.fails = 0;
      return true;
    }
    return false;
  }

  stop(): void {
    if (this.checkTimer !== null) clearTimeout(this.checkTimer);
    if (this.ejectTimer !== null) clearTimeout(this.ejectTimer);
    this.checkTimer = null;
    this.ejectTimer = null;
  }
}

class PoolMembership {
  members = new Map<string, MemberHealth>();
  private dnsTimer: NodeJS.Timeout | null = null;
  stopped = false;

  constructor(
    readonly name: string,
    readonly config: PoolConfig,
    private readonly owner: Membership,
  ) {
    for (const m of config.members ?? []) this.members.set(m.url, new MemberHealth(m));
  }

  start(): Promise<void> {
    for (const m of this.members.values()) this.scheduleCheck(m, 0);
    return this.config.dns === undefined ? Promise.resolve() : this.resolve();
  }

  private async resolve(): Promise<void> {
    const dns = this.config.dns!;
    let next = dns.interval ?? DNS_RETRY_MS;
    try {
      const answer = await resolveMembers(dns);
      next = answer.refreshMs;
      this.setMembers(answer.members);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (NO_RECORDS.has(code)) {
        // The name exists no more, or has no such records: that is an answer, not an outage.
        this.setMembers([]);
      } else {
        // Could not ask: keep the members we know rather than empty the pool on a DNS hiccup.
        this.owner.logger.warn(
          { pool: this.name, name: dns.name, code, err: errField(err) },
          'DNS lookup for pool members failed',
        );
      }
    }
    if (this.stopped) return;
    this.dnsTimer = setTimeout(() => void this.resolve(), next);
    this.dnsTimer.unref();
  }

  private setMembers(configs: MemberConfig[]): void {
    if (this.stopped) return;
    const urls = new Set(configs.map((c) => c.url));
    let changed = false;
    for (const [url, m] of this.members) {
      if (!urls.has(url)) {
        m.stop();
        this.members.delete(url);
        changed = true;
      }
    }
    for (const c of configs) {
      if (this.members.has(c.url)) continue;
      const m = new MemberHealth(c);
      this.members.set(c.url, m);
      this.scheduleCheck(m, 0);
      changed = true;
    }
    if (changed) {
      this.owner.logger.info({ pool: this.name, members: [...this.members.keys()] }, 'pool members changed (DNS)');
      this.owner.changed(this);
    }
  }

  private scheduleCheck(m: MemberHealth, delay: number): void {
    const hc = this.config.healthCheck;
    if (hc === undefined || this.stopped) return;
    m.checkTimer = setTimeout(() => {
      void probe(m.upstreamTarget, hc).then((ok) => {
        if (this.stopped || this.members.get(m.config.url) !== m) return;
        if (m.checked(ok, hc.rise, hc.fall)) {
          this.owner.logger.warn(
            { pool: this.name, upstream: m.config.url, healthy: m.activeUp },
            `upstream ${m.activeUp ? 'passes' : 'fails'} its health check`,
          );
          this.owner.changed(this);
        }
        this.scheduleCheck(m, hc.interval);
      });
    }, delay);
    m.checkTimer.unref();
  }

  /** A worker saw this member fail: eject it after `failures` within `window`. */
  reportFailure(url: string, now: number): void {
    const m = this.members.get(url);
    const p = this.config.passive;
    if (m === undefined || p.failures === 0 || m.ejectedUntil !== 0) return;
    // As nginx does: the only member is never ejected. Ejecting it would turn a brief outage
    // into a full cool-down of 503s after the upstream is back (retries cannot go elsewhere).
    if (this.members.size === 1) return;
    m.failures.push(now);
    while (m.failures.length > 0 && m.failures[0] <= now - p.window) m.failures.shift();
    if (m.failures.length < p.failures) return;
    m.failures = [];
    m.ejectedUntil = now + p.cooldown;
    this.owner.logger.warn(
      { pool: this.name, upstream: url, cooldownMs: p.cooldown },
      `upstream ejected after ${p.failures} failures within ${p.window} ms`,
    );
    m.ejectTimer = setTimeout(() => {
      m.ejectTimer = null;
      m.ejectedUntil = 0;
      if (this.stopped || this.members.get(url) !== m) return;
      this.owner.logger.info({ pool: this.name, upstream: url }, 'upstream back from ejection: trying it again');
      this.owner.changed(this);
    }, p.cooldown);
    m.ejectTimer.unref();
    this.owner.changed(this);
  }

  snapshot(): MemberSnapshot[] {
    return [...this.members.values()].map((m) => ({ ...m.config, healthy: m.healthy }));
  }

  stop(): void {
    this.stopped = true;
    if (this.dnsTimer !== null) clearTimeout(this.dnsTimer);
    for (const m of this.members.values()) m.stop();
  }
}

export class Membership {
  private readonly pools = new Map<string, PoolMembership>();
  private listeners: Array<(s: MembershipSnapshot) => void> = [];

  constructor(
    pools: Readonly<Record<string, PoolConfig>>,
    readonly logger: Logger,
  ) {
    for (const [name, config] of Object.entries(pools)) this.pools.set(name, new PoolMembership(name, config, this));
  }

  /** Starts checks and DNS; resolves once the first DNS answers are in (or after a bounded wait). */
  async start(): Promise<void> {
    const first = Promise.all([...this.pools.values()].map((p) => p.start()));
    let timer: NodeJS.Timeout | undefined;
    const wait = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, DNS_START_WAIT_MS);
    });
    await Promise.race([first, wait]);
    clearTimeout(timer);
  }

  /** `listener` gets the pools that changed (a partial snapshot); snapshot() gives them all. */
  onChange(listener: (s: MembershipSnapshot) => void): void {
    this.listeners.push(listener);
  }

  snapshot(): MembershipSnapshot {
    const s: MembershipSnapshot = {};
    for (const [name, p] of this.pools) s[name] = p.snapshot();
    return s;
  }

  reportFailure(pool: string, url: string): void {
    this.pools.get(pool)?.reportFailure(url, Date.now());
  }

  /**
   * @internal: a pool's picture changed. Listeners get that pool alone: with thousands of pools,
   * one member's flapping check must not resend them all (a worker applies what it is given).
   */
  changed(pool: PoolMembership): void {
    const s: MembershipSnapshot = { [pool.name]: pool.snapshot() };
    for (const l of this.listeners) l(s);
  }

  stop(): void {
    for (const p of this.pools.values()) p.stop();
    this.listeners = [];
  }
}
