/**
 * Selection policies: which member of a pool takes the next request. Each is a function of the
 * members' state (weight, in-flight requests, availability) plus, for the rotating ones, a small
 * cursor the policy keeps itself. No sockets, no clock: tests drive them with plain objects.
 *
 * `available[i]` is false for a member that is unhealthy or was already tried for this request;
 * every policy returns -1 when no member is available.
 */
import type { Policy } from '../config/schema';

export interface Candidate {
  readonly weight: number;
  /** Requests in flight to this member, from this worker. */
  readonly inflight: number;
  /** A stable hash of the member's identity (its URL), for consistent hashing. */
  readonly id: number;
}

export interface Selector {
  /** `key`: the request's hash key (hash policy only); null falls back to round robin. */
  pick(members: readonly Candidate[], available: readonly boolean[], key: string | null): number;
}

export function createSelector(policy: Policy, random: () => number = Math.random): Selector {
  switch (policy) {
    case 'round-robin':
      return new RoundRobin();
    case 'weighted-round-robin':
      return new SmoothWeightedRoundRobin();
    case 'least-connections':
      return new LeastConnections();
    case 'random-two':
      return new RandomTwo(random);
    case 'hash':
      return new RendezvousHash();
  }
}

export class RoundRobin implements Selector {
  private next = 0;

  pick(members: readonly Candidate[], available: readonly boolean[]): number {
    const n = members.length;
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n;
      if (available[i]) {
        this.next = (i + 1) % n;
        return i;
      }
    }
    return -1;
  }
}

/**
 * nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c, so a
 * heavy member never takes a burst. The running weights reset when the member list changes.
 */
export class SmoothWeightedRoundRobin implements Selector {
  private current: number[] = [];

  pick(members: readonly Candidate[], available: readonly boolean[]): number {
    if (this.current.length !== members.length) this.current = new Array<number>(members.length).fill(0);
    let total = 0;
    let best = -1;
    for (let i = 0; i < members.length; i++) {
      if (!available[i]) continue;
      const w = members[i].weight;
      total += w;
      this.current[i] += w;
      if (best === -1 || this.current[i] > this.current[best]) best = i;
    }
    if (best !== -1) this.current[best] -= total;
    return best;
  }
}

/** Fewest requests in flight relative to weight; ties rotate so equal members share evenly. */
export class LeastConnections implements Selector {
  private next = 0;

  pick(members: readonly Candidate[], available: readonly boolean[]): number {
    const n = members.length;
    let best = -1;
    let bestLoad = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n;
      if (!available[i]) continue;
      const m = members[i];
      const load = m.inflight / m.weight;
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    if (best !== -1) this.next = (best + 1) % n;
    return best;
  }
}

/** Two members at random, the less loaded one wins (Mitzenmacher's power of two choices). */
export class RandomTwo implements Selector {
  constructor(private readonly random: () => number) {}

  pick(members: readonly Candidate[], available: readonly boolean[]): number {
    let count = 0;
    for (let i = 0; i < members.length; i++) if (available[i]) count++;
    if (count === 0) return -1;
    const a = this.nth(available, Math.floor(this.random() * count));
    if (count === 1) return a;
    // The second draw is from the others, so the two are distinct.
    let r = Math.floor(this.random() * (count - 1));
    const ra = this.rank(available, a);
    if (r >= ra) r++;
    const b = this.nth(available, r);
    const ma = members[a];
    const mb = members[b];
    return mb.inflight / mb.weight < ma.inflight / ma.weight ? b : a;
  }

  private nth(available: readonly boolean[], n: number): number {
    for (let i = 0; i < available.length; i++) if (available[i] && n-- === 0) return i;
    return -1;
  }

  private rank(available: readonly boolean[], index: number): number {
    let r = 0;
    for (let i = 0; i < index; i++) if (available[i]) r++;
    return r;
  }
}

/**
 * Weighted rendezvous (highest random weight) hashing: each member scores the key, the highest
 * score wins. Adding or removing a member moves only the keys that member wins or held (about
 * 1/n of them); everyone else's member is unchanged, with no ring to rebuild. Without a key
 * (header or cookie absent) the request goes round robin.
 */
export class RendezvousHash implements Selector {
  private readonly fallback = new RoundRobin();

  pick(members: readonly Candidate[], available: readonly boolean[], key: string | null): number {
    if (key === null) return this.fallback.pick(members, available);
    const h = hashString(key);
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i < members.length; i++) {
      if (!available[i]) continue;
      const m = members[i];
      // A uniform draw in (0, 1) from key and member; -w / ln(u) makes the win chance ∝ weight.
      const u = (mix(h ^ m.id) + 0.5) / 4294967296;
      const score = -m.weight / Math.log(u);
      if (score > bestScore) {
        best = i;
        bestScore = score;
      }
    }
    return best;
  }
}

/** FNV-1a, 32 bits. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** MurmurHash3's finaliser: spreads every input bit over the output. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
