import assert from 'node:assert/strict';
import { ConfigError } from '../../src/errors';
import { logNormalDelay, seededRandom } from '../../src/proxy/faults';
import { resolveConfig } from '../support/helpers';

function configError(config: Record<string, unknown>): string {
  try {
    resolveConfig(config);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  assert.fail('expected a config error');
}

const pools = { a: { members: [{ url: 'http://127.0.0.1:1' }] }, shadow: { members: [{ url: 'http://127.0.0.1:2' }] } };

describe('faults: delays and the random source', () => {
  it('draws delays whose median and 99th percentile are the configured ones', () => {
    const random = seededRandom(1);
    const draws = Array.from({ length: 50_000 }, () => logNormalDelay(100, 900, random)).sort((a, b) => a - b);
    const p50 = draws[Math.floor(draws.length * 0.5)];
    const p99 = draws[Math.floor(draws.length * 0.99)];
    assert.ok(Math.abs(p50 - 100) <= 5, `p50 ${p50}`);
    assert.ok(Math.abs(p99 - 900) <= 90, `p99 ${p99}`);
    assert.ok(draws[draws.length - 1] <= 9000, 'capped at ten times p99');
    assert.ok(draws[0] >= 0);
  });

  it('a seed gives the same sequence, uniform in [0, 1)', () => {
    const a = seededRandom(99);
    const b = seededRandom(99);
    const xs = Array.from({ length: 10_000 }, () => a());
    assert.deepEqual(
      xs.slice(0, 5),
      Array.from({ length: 5 }, () => b()),
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  });
});

describe('faults, mirror and record in the config', () => {
  it('a fault has exactly one kind, and bandwidth or partial only on the response side', () => {
    const route = (faults: unknown) => ({ pools, routes: [{ pool: 'a', faults }] });
    assert.match(
      configError(route({ x: { percent: 10 } })),
      /routes\[0\]\.faults\.x: .*expected exactly one of delay, abort, bandwidth, partial, stall/,
    );
    assert.match(configError(route({ x: { delay: 5, stall: true } })), /expected exactly one of/);
    assert.match(
      configError(route({ x: { bandwidth: 10, side: 'request' } })),
      /routes\[0\]\.faults\.x\.side: .*expected side: response/,
    );
    assert.match(
      configError(route({ x: { abort: {} } })),
      /routes\[0\]\.faults\.x\.abort: .*expected exactly one of `status` or `reset: true`/,
    );
    assert.match(
      configError(route({ x: { abort: { status: 99 } } })),
      /routes\[0\]\.faults\.x\.abort\.status: got 99; expected a whole number >= 200/,
    );
    assert.match(configError(route({ x: { delay: { p50: 50, p99: 10 } } })), /routes\[0\]\.faults\.x\.delay/);
    assert.match(configError(route({ 'a b': { stall: true } })), /routes\[0\]\.faults\.a b/);
    assert.match(configError(route({ x: { stall: true, percent: 101 } })), /routes\[0\]\.faults\.x\.percent: got 101/);
  });

  it('names must be unique, a route fault has no `route`, and pools must exist', () => {
    assert.match(
      configError({
        pools,
        routes: [
          { pool: 'a', faults: { x: { stall: true } } },
          { pool: 'a', faults: { x: { stall: true } } },
        ],
      }),
      /routes\[1\]\.faults\.x: got a second fault of that name; expected names unique across routes \(routes\[0\]\)/,
    );
    assert.match(
      configError({ pools, routes: [{ pool: 'a', faults: { x: { stall: true, route: 'other' } } }] }),
      /routes\[0\]\.faults\.x\.route: got "other"; expected nothing/,
    );
    assert.match(
      configError({
        pools,
        routes: [
          { pool: 'a', name: 'r' },
          { pool: 'a', name: 'r' },
        ],
      }),
      /routes\[1\]\.name: got "r"; expected a name no other route has \(routes\[0\]\)/,
    );
    assert.match(
      configError({ pools, routes: [{ pool: 'a', mirror: { pool: 'nope' } }] }),
      /routes\[0\]\.mirror\.pool: got "nope"; expected the name of a pool: a, shadow/,
    );
  });
});
