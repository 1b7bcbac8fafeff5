import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultsApiError, FaultsClient } from '../../src/testing';
import { httpUpstream, request, startCli, waitFor } from '../support/helpers';

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Two workers in front of `upstream` as the pool "app", with these route lines. */
function configText(upstream: string, routes: string[]): string {
  // round-robin: the primary deals connections out in turn, so both workers serve.
  return [
    'workers: 2',
    'schedulingPolicy: round-robin',
    'pools:',
    '  app:',
    '    members:',
    `      - url: ${upstream}`,
    'routes:',
    ...routes,
    '',
  ].join('\n');
}

describe('faults: the admin API on a real cluster, through the typed client', function () {
  this.timeout(60_000);

  async function cluster(): Promise<{
    proxy: string;
    admin: string;
    cli: Awaited<ReturnType<typeof startCli>>;
    config: string;
    upstream: string;
  }> {
    const up = await httpUpstream((req, res) => res.end(`ok ${req.url}`));
    const dir = mkdtempSync(join(tmpdir(), 'swy-faults-'));
    const config = join(dir, 'switchyard.yaml');
    writeFileSync(
      config,
      configText(up.url, [
        '  - name: tea',
        '    match: { path: /tea }',
        '    pool: app',
        '    faults:',
        '      teapot: { abort: { status: 418 } }',
        '  - name: api',
        '    pool: app',
      ]),
    );
    const cli = await startCli(['--config', config, '--admin', '127.0.0.1:0']);
    const admin = `http://${String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin)}`;
    return { proxy: `http://127.0.0.1:${cli.port}`, admin, cli, config, upstream: up.url };
  }

  it('a change reaches both workers before it is acknowledged; hits are counted and marked', async () => {
    const { proxy, admin, cli } = await cluster();
    const faults = new FaultsClient(admin);
    assert.deepEqual(Object.keys(await faults.list()), ['teapot']);
    assert.equal((await faults.list()).teapot.source, 'config');
    assert.equal((await request(`${proxy}/tea`)).status, 418);

    // The example: about half of all requests answer 503, on every worker.
    const set = await faults.set('flaky', { abort: { status: 503 }, percent: 50, seed: 3, route: 'api' });
    assert.equal(set.workers, 2);
    assert.equal(set.fault.source, 'api');
    assert.equal(set.fault.percent, 50);
    let hits = 0;
    const total = 400;
    for (let i = 0; i < total; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => request(`${proxy}/r${i + j}`)));
      hits += batch.filter((r) => r.status === 503).length;
      assert.ok(batch.every((r, j) => r.status === 503 || r.body.toString() === `ok /r${i + j}`));
    }
    // Binomial(400, 0.5): sd 10; ±5 sd.
    assert.ok(hits > 150 && hits < 250, `${hits} of ${total}`);
    const marked = await waitFor(() => {
      const lines = cli.logs.filter((l) => l.fault === 'flaky:abort');
      return lines.length === hits ? lines : null;
    });
    assert.deepEqual(new Set(marked.map((l) => l.worker)).size, 2, 'both workers injected');
    assert.ok(marked.every((l) => l.status === 503 && l.error === 'SWY_ERR_FAULT_ABORT'));
    const metrics = (await request(`${admin}/metrics`)).body.toString();
    assert.equal(metric(metrics, 'switchyard_faults_injected_total{name="flaky",kind="abort"}'), hits);
    assert.equal(metric(metrics, 'switchyard_faults_injected_total{name="teapot",kind="abort"}'), 1);

    await faults.delete('flaky');
    for (let i = 0; i < 10; i++) assert.equal((await request(`${proxy}/after${i}`)).status, 200);
    // Reset: no faults at all, the routes' own switched off too.
    await faults.reset();
    assert.deepEqual(await faults.list(), {});
    for (let i = 0; i < 4; i++) assert.equal((await request(`${proxy}/tea`)).status, 200);
  });

  it('refuses a bad fault with 400 naming the key, the value and what was expected', async () => {
    const { admin } = await cluster();
    const faults = new FaultsClient(admin);
    await assert.rejects(
      faults.set('bad', { abort: { status: 700 } }),
      (err: FaultsApiError) =>
        err.status === 400 && /faults\.bad\.abort\.status: got 700; expected a whole number <= 599/.test(err.message),
    );
    await assert.rejects(
      faults.set('bad', { stall: true, route: 'nope' }),
      (err: FaultsApiError) =>
        err.status === 400 && /faults\.bad\.route: got "nope"; expected a route's name: tea, api/.test(err.message),
    );
    const notJson = await request(`${admin}/faults/x`, { method: 'PUT' }, '{nope');
    assert.equal(notJson.status, 400);
    assert.match(notJson.body.toString(), /not JSON/);
    assert.equal((await request(`${admin}/faults/x`, { method: 'DELETE' })).status, 404);
    assert.equal((await request(`${admin}/faults`, { method: 'POST' })).status, 405);
  });

  it('a worker started later (a crash replaced) gets the faults set before', async () => {
    const { proxy, admin, cli } = await cluster();
    await new FaultsClient(admin).set('down', { abort: { status: 503 } });
    const [first] = cli.workerPids();
    process.kill(first, 'SIGKILL');
    await waitFor(() => cli.logs.some((l) => l.event === 'worker-died'));
    await waitFor(async () => (await request(`${admin}/readyz`)).status === 200 && cli.workerPids().length === 2);
    for (let i = 0; i < 10; i++) assert.equal((await request(`${proxy}/x${i}`)).status, 503);
  });

  it("a reload keeps the API's faults on their route by name, and restores the routes' own", async () => {
    const { proxy, admin, cli, config, upstream } = await cluster();
    const faults = new FaultsClient(admin);
    await faults.set('api-down', { route: 'api', abort: { status: 503 }, match: { path: '/api' } });
    await faults.delete('teapot');
    assert.equal((await request(`${proxy}/api/x`)).status, 503);
    assert.equal((await request(`${proxy}/tea`)).status, 200);
    // The routes change places: "api" is now the first, "tea" the second.
    writeFileSync(
      config,
      configText(upstream, [
        '  - name: api',
        '    match: { path: /api }',
        '    pool: app',
        '  - name: tea',
        '    match: { path: /tea }',
        '    pool: app',
        '    faults:',
        '      teapot: { abort: { status: 418 } }',
        '  - pool: app',
      ]),
    );
    cli.child.kill('SIGHUP');
    await waitFor(() => cli.logs.some((l) => l.event === 'reload-complete'));
    for (let i = 0; i < 6; i++) {
      assert.equal((await request(`${proxy}/api/x`)).status, 503);
      assert.equal((await request(`${proxy}/tea`)).status, 418);
      assert.equal((await request(`${proxy}/other`)).status, 200);
    }
    const list = await faults.list();
    assert.equal(list['api-down'].route, 'api');
    assert.equal(list.teapot.source, 'config');
  });
});
