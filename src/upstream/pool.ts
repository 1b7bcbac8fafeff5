/**
 * A worker's view of one named pool: its members (each with its own keep-alive connection pool),
 * which of them are healthy, how many requests each has in flight, and the selection policy.
 *
 * Membership and health are decided elsewhere (membership.ts, in the primary or in-process) and
 * arrive as snapshots, so every worker routes by the same picture. This file only applies them.
 */
import type { PoolConfig } from '../config/schema';
import type { MemberSnapshot } from './membership';
import { ConnectionPool, type MemberConnections, type PoolOptions } from './connection-pool';
import { Http2Pool } from './http2-pool';
import { createSelector, hashString, type Selector } from './selection';
import { targetFromConfig, type UpstreamTarget } from './target';

export class Member {
  inflight = 0;
  healthy: boolean;
  readonly id: number;

  constructor(
    readonly url: string,
    public weight: number,
    healthy: boolean,
    readonly connections: MemberConnections,
  ) {
    this.healthy = healthy;
    this.id = hashString(url);
  }

  get target(): UpstreamTarget {
    return this.connections.target;
  }
}

export type HashSource = { kind: 'ip' } | { kind: 'header'; name: string } | { kind: 'cookie'; name: string };

export class UpstreamPool {
  members: Member[] = [];
  private available: boolean[] = [];
  private readonly selector: Selector;
  readonly hash: HashSource | null;
  readonly retries: PoolConfig['retries'];
  /** Seconds a client is told to wait when no member is up. */
  readonly retryAfter: number;
  private readonly countsFailures: boolean;

  constructor(
    readonly name: string,
    readonly config: PoolConfig,
    private readonly poolOptions: PoolOptions,
    private readonly onFailure: (pool: string, url: string) => void,
  ) {
    this.selector = createSelector(config.policy);
    this.hash = config.policy === 'hash' ? parseHashKey(config.hashKey) : null;
    this.retries = config.retries;
    const wait = Math.min(config.passive.cooldown, config.healthCheck?.interval ?? Infinity);
    this.retryAfter = Math.max(1, Math.ceil(wait / 1000));
    this.countsFailures = config.passive.failures > 0;
  }

  get on5xxFails(): boolean {
    return this.countsFailures && this.config.passive.on5xx;
  }

  /** The next member for a request, skipping unhealthy ones and those in `tried`; null if none. */
  pick(key: string | null, tried: readonly Member[] | null): Member | null {
    const members = this.members;
    if (members.length === 1) {
      const only = members[0];
      return only.healthy && (tried === null || !tried.includes(only)) ? only : null;
    }
    const available = this.available;
    for (let i = 0; i < members.length; i++) {
      const m = members[i];
      available[i] = m.healthy && (tried === null || !tried.includes(m));
    }
    const i = this.selector.pick(members, available, key);
    return i === -1 ? null : members[i];
  }

  /** A failure the passive health check counts (connect error, reset, timeout, or a 5xx if on5xx). */
  reportFailure(member: Member): void {
    // The only member is never ejected (membership.ts): no need to tell the primary each time.
    if (this.countsFailures && this.members.length > 1) this.onFailure(this.name, member.url);
  }

  /** Apply the primary's picture: new members get a pool, departed ones close when idle. */
  apply(snapshot: readonly MemberSnapshot[]): void {
    const byUrl = new Map(this.members.map((m) => [m.url, m]));
    const next: Member[] = [];
    for (const s of snapshot) {
      let m = byUrl.get(s.url);
      if (m === undefined) {
        const options =
          s.maxConnections === undefined ? this.poolOptions : { ...this.poolOptions, maxConnections: s.maxConnections };
        const target = targetFromConfig(s);
        const connections = target.http2 ? new Http2Pool(target, options) : new ConnectionPool(target, options);
        m = new Member(s.url, s.weight, s.healthy, connections);
      } else {
        byUrl.delete(s.url);
        m.healthy = s.healthy;
        m.weight = s.weight;
      }
      next.push(m);
    }
    for (const gone of byUrl.values()) gone.connections.close();
    this.members = next;
    this.available = new Array<boolean>(next.length).fill(false);
  }

  close(): void {
    for (const m of this.members) m.connections.close();
  }
}

function parseHashKey(spec: string): HashSource {
  if (spec === 'ip') return { kind: 'ip' };
  const colon = spec.indexOf(':');
  const kind = spec.slice(0, colon);
  const name = spec.slice(colon + 1);
  return kind === 'header' ? { kind: 'header', name: name.toLowerCase() } : { kind: 'cookie', name };
}
