import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ROOT } from '../support/helpers';

/** Proves the load suites run end to end (no timing is asserted: CI machines are noisy). */
describe('load-tests smoke (npm run load -- --smoke) @once', function () {
  this.timeout(120_000);

  it('runs every suite through a real cluster with no error and no non-2xx, and writes JSON', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'swy-load-')), 'run.json');
    const r = spawnSync(
      process.execPath,
      [resolve(ROOT, 'dist/load-tests/run.js'), '--smoke', '--workers', '1', '--out', out],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    for (const suite of ['small', '64k', 'upload-1m', 'new-conn', 'c5000'])
      assert.match(r.stdout, new RegExp(`\\| ${suite} `));
    assert.match(
      r.stdout,
      /idle keep-alive memory, KiB of worker RSS per connection \(500 connections\): -?[\d.]+ on workers that served traffic first; -?[\d.]+ on fresh workers \(-?[\d.]+ once idle 1 s, still open\)/,
    );
    assert.match(r.stdout, /route table lookups[\s\S]*\| 10000 \| \d+ \| \d+ \| \d+ \| \d+ \|/);
    const saved = JSON.parse(readFileSync(out, 'utf8')) as {
      results: Array<{ target: string; requests: number; errors: number; non2xx: number }>;
      failed: string[];
    };
    assert.deepEqual(saved.failed, []);
    const proxied = saved.results.filter((x) => x.target === 'proxy');
    const perRequest = (suite: string) =>
      (saved.results as unknown as Array<{ suite: string; target: string; bytesPerRequest: number }>).find(
        (x) => x.suite === suite && x.target === 'proxy',
      )!.bytesPerRequest;
    assert.ok(
      perRequest('64k') > 65_536 && perRequest('64k') < 66_000,
      `64k suite fetched ${perRequest('64k')} B per request`,
    );
    assert.ok(perRequest('small') < 400, `small suite fetched ${perRequest('small')} B per request`);
    // The smoke run sends 2,000 requests on new connections: each must be answered (autocannon
    // writing its next request on a connection that said close once left half unanswered).
    for (const target of ['direct', 'proxy']) {
      const newConn = saved.results.find(
        (x) => (x as unknown as { suite: string }).suite === 'new-conn' && x.target === target,
      )!;
      assert.equal(newConn.requests, 2000, `new-conn ${target}: answers`);
    }
    assert.match(r.stdout, /transforms on one worker[\s\S]*\| pool \|[\s\S]*\| inline \|/);
    assert.equal(proxied.length, 5);
    for (const x of proxied) {
      assert.ok(x.requests > 0);
      assert.equal(x.errors + x.non2xx, 0);
    }
    const again = spawnSync(
      process.execPath,
      [
        resolve(ROOT, 'dist/load-tests/run.js'),
        '--smoke',
        '--workers',
        '1',
        '--only',
        'small',
        '--compare',
        out,
        '--out',
        `${out}.2`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /vs saved/);
  });
});
