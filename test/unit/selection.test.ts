/**
 * Selection policies as pure functions of member state: no sockets, plain objects.
 */
import assert from 'node:assert/strict';
import {
  createSelector,
  LeastConnections,
  RandomTwo,
  RendezvousHash,
  RoundRobin,
  SmoothWeightedRoundRobin,
  hashString,
  type Candidate,
  type Selector,
} from '../../src/upstream/selection';

function members(...spec: Array<Partial<Candidate> & { name: string }>): Array<Candidate & { name: string }> {
  return spec.map((s) => ({ weight: 1, inflight: 0, id: hashString(s.name), ...s }));
}

function counts(picks: number[], n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const p of picks) c[p]++;
  return c;
}

/** A seeded generator (mulberry32), so the random policy's tests are deterministic. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('selection policies (pure)', () => {
  const all3 = [true, true, true];

  it('round-robin takes members in turn and skips unavailable ones', () => {
    const rr: Selector = new RoundRobin();
    const ms = members({ name: 'a' }, { name: 'b' }, { name: 'c' });
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map(() => rr.pick(ms, all3, null)),
      [0, 1, 2, 0, 1, 2],
    );
    assert.deepEqual(
      [0, 1, 2, 3].map(() => rr.pick(ms, [true, false, true], null)),
      [0, 2, 0, 2],
    );
    assert.equal(rr.pick(ms, [false, false, false], null), -1);
  });

  it("weighted-round-robin gives each member its weight's share, interleaved (nginx smooth WRR)", () => {
    const wrr: Selector = new SmoothWeightedRoundRobin();
    const ms = members({ name: 'a', weight: 5 }, { name: 'b', weight: 1 }, { name: 'c', weight: 1 });
    const seq = Array.from({ length: 7 }, () => wrr.pick(ms, all3, null));
    assert.deepEqual(seq, [0, 0, 1, 0, 2, 0, 0]);
    const many = Array.from({ length: 700 }, () => wrr.pick(ms, all3, null));
    assert.deepEqual(counts(many, 3), [500, 100, 100]);
    // An unavailable heavy member leaves the others to share evenly.
    const without = Array.from({ length: 100 }, () => wrr.pick(ms, [false, true, true], null));
    assert.deepEqual(counts(without, 3), [0, 50, 50]);
  });

  it('least-connections picks the fewest in flight relative to weight, rotating among equals', () => {
    const lc: Selector = new LeastConnections();
    const busy = members({ name: 'a', inflight: 5 }, { name: 'b', inflight: 2 }, { name: 'c', inflight: 9 });
    assert.equal(lc.pick(busy, all3, null), 1);
    assert.equal(lc.pick(busy, [true, false, true], null), 0);
    const weighted = members(
      { name: 'a', inflight: 4, weight: 4 },
      { name: 'b', inflight: 2 },
      { name: 'c', inflight: 3 },
    );
    assert.equal(lc.pick(weighted, all3, null), 0); // 4/4 = 1 < 2
    const idle = members({ name: 'a' }, { name: 'b' }, { name: 'c' });
    assert.deepEqual(
      counts(
        Array.from({ length: 30 }, () => lc.pick(idle, all3, null)),
        3,
      ),
      [10, 10, 10],
    );
  });

  it('random-two never picks the busier of its two draws, and spreads load over all', () => {
    const p2c: Selector = new RandomTwo(seeded(42));
    const ms = members({ name: 'a', inflight: 100 }, { name: 'b', inflight: 0 }, { name: 'c', inflight: 50 });
    const picks = Array.from({ length: 3000 }, () => p2c.pick(ms, all3, null));
    const c = counts(picks, 3);
    // a, the busiest, loses every draw it is in; b wins every draw it is in (2/3 of them).
    assert.equal(c[0], 0);
    assert.ok(c[1] > 1800 && c[1] < 2200, `b got ${c[1]}`);
    assert.equal(c[1] + c[2], 3000);
    assert.equal(p2c.pick(ms, [false, false, true], null), 2);
    assert.equal(p2c.pick(ms, [false, false, false], null), -1);
    const even = members({ name: 'a' }, { name: 'b' }, { name: 'c' });
    assert.ok(
      counts(
        Array.from({ length: 3000 }, () => p2c.pick(even, all3, null)),
        3,
      ).every((n) => n > 800),
    );
  });

  it('hash keeps a key on its member, spreads keys evenly, and moves only ~1/n of them when a member joins or leaves', () => {
    const h = new RendezvousHash();
    const three = members({ name: 'http://a:1' }, { name: 'http://b:1' }, { name: 'http://c:1' });
    const keys = Array.from({ length: 3000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
    const before = keys.map((k) => three[h.pick(three, all3, k)].name);
    assert.deepEqual(
      keys.map((k) => three[h.pick(three, all3, k)].name),
      before,
      'same key, same member',
    );
    const share = counts(
      keys.map((k) => h.pick(three, all3, k)),
      3,
    );
    assert.ok(
      share.every((n) => n > 850 && n < 1150),
      `shares ${share.join()}`,
    );

    // A fourth member takes about a quarter of the keys, all of them from the others; nothing else moves.
    const four = [...three, ...members({ name: 'http://d:1' })];
    const after = keys.map((k) => four[h.pick(four, [true, true, true, true], k)].name);
    let moved = 0;
    for (let i = 0; i < keys.length; i++) {
      if (after[i] !== before[i]) {
        moved++;
        assert.equal(after[i], 'http://d:1', 'a key only ever moves to the new member');
      }
    }
    assert.ok(moved > 600 && moved < 900, `moved ${moved} of 3000`);

    // Removing (or marking down) a member moves only its own keys.
    const downB = keys.map((k) => three[h.pick(three, [true, false, true], k)].name);
    for (let i = 0; i < keys.length; i++) if (before[i] !== 'http://b:1') assert.equal(downB[i], before[i]);
  });

  it('hash honours weights, and falls back to round robin without a key', () => {
    const h = new RendezvousHash();
    const ms = members({ name: 'a', weight: 3 }, { name: 'b', weight: 1 });
    const c = counts(
      Array.from({ length: 4000 }, (_, i) => h.pick(ms, [true, true], `user-${i}`)),
      2,
    );
    assert.ok(c[0] > 2800 && c[0] < 3200, `weighted share ${c.join()}`);
    assert.deepEqual(
      [0, 1, 2, 3].map(() => h.pick(ms, [true, true], null)),
      [0, 1, 0, 1],
    );
  });

  it('createSelector knows every policy name the schema allows', () => {
    for (const p of ['round-robin', 'weighted-round-robin', 'least-connections', 'random-two', 'hash'] as const) {
      const s = createSelector(p, seeded(1));
      assert.ok(s.pick(members({ name: 'only' }), [true], 'k') === 0, p);
    }
  });
});
