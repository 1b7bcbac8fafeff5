import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { capabilities } from '../../src/node-internals';
import { CLI, httpUpstream, request, startCli, waitFor } from '../support/helpers';

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(
    line,
    `no series ${series} in:\n${text
      .split('\n')
      .filter((l) => l.startsWith('switchyard'))
      .join('\n')}`,
  );
  return Number(line.slice(series.length + 1));
}

describe('admin listener: /metrics, /healthz, /readyz', function () {
  this.timeout(30_000);

  it('sums the counters of every worker, and counts worker restarts', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-admin-'));
    const config = join(dir, 'switchyard.yaml');
    // round-robin: the primary deals new connections out in turn, so both workers serve.
    writeFileSync(config, `upstreams:\n  - url: ${up.url}\nworkers: 2\nschedulingPolicy: round-robin\n`);
    const cli = await startCli(['--config', config, '--admin', '127.0.0.1:0']);
    const admin = `http://${String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin)}`;
    for (let i = 0; i < 40; i++) assert.equal((await request(`http://127.0.0.1:${cli.port}/n${i}`)).status, 200);

    // Both workers served (their access log lines carry their id), and /metrics holds the sum.
    const servedBy = await waitFor(() => {
      const ids = new Set(cli.logs.filter((l) => typeof l.reqId === 'string').map((l) => l.worker));
      return ids.size === 2 ? ids : null;
    });
    assert.equal(servedBy.size, 2);
    const metrics = (await request(`${admin}/metrics`)).body.toString();
    assert.equal(metricValue(metrics, `switchyard_requests_total{code_class="2xx",upstream="${up.url}"}`), 40);
    assert.equal(metricValue(metrics, 'switchyard_request_duration_seconds_count'), 40);
    assert.equal(metricValue(metrics, `switchyard_upstream_response_seconds_count{upstream="${up.url}"}`), 40);
    // Histograms: cumulative buckets, +Inf equal to the count, summed over the workers too.
    assert.equal(metricValue(metrics, 'switchyard_request_duration_seconds_bucket{le="+Inf"}'), 40);
    assert.equal(metricValue(metrics, 'switchyard_request_duration_seconds_count'), 40);
    assert.ok(metricValue(metrics, 'switchyard_request_duration_seconds_sum') > 0);
    const buckets = [...metrics.matchAll(/^switchyard_request_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map(
      (m) => Number(m[2]),
    );
    assert.equal(buckets.length, 16);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i] >= buckets[i - 1], 'buckets are cumulative');
    assert.ok(metricValue(metrics, `switchyard_upstream_connections_open{pool="default",upstream="${up.url}"}`) >= 2);
    assert.equal(metricValue(metrics, `switchyard_upstream_requests_pending{pool="default",upstream="${up.url}"}`), 0);
    assert.ok(metrics.includes('switchyard_client_connections '));
    assert.ok(metrics.includes('process_cpu_seconds_total'));
    assert.ok(metrics.includes('nodejs_heap_space_size_used_bytes'));
    // Left out on purpose: its gc PerformanceObserver costs busy workers latency (ops/metrics.ts).
    // Without the GC observer, unless prom-client's files could not be loaded one by one (then all).
    assert.equal(metrics.includes('nodejs_gc_duration_seconds'), !capabilities().promMetricFiles);
    assert.equal(metricValue(metrics, 'switchyard_worker_restarts_total'), 0);

    process.kill(cli.workerPids()[0], 'SIGKILL');
    await waitFor(() => cli.logs.some((l) => l.event === 'worker-died'));
    await waitFor(async () => (await request(`${admin}/readyz`)).status === 200 && cli.workerPids().length === 2);
    const after = (await request(`${admin}/metrics`)).body.toString();
    assert.equal(metricValue(after, 'switchyard_worker_restarts_total'), 1);
  });

  it('answers /healthz, /readyz, and 404/405 for anything else', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '2', '--admin', '127.0.0.1:0']);
    const admin = `http://${String(cli.logs.find((l) => typeof l.admin === 'string')!.admin)}`;
    const health = await request(`${admin}/healthz`);
    assert.equal(health.status, 200);
    const ready = await request(`${admin}/readyz`);
    assert.equal(ready.status, 200);
    assert.match(ready.body.toString(), /ready: 2\/2 workers listening/);
    assert.equal((await request(`${admin}/nope`)).status, 404);
    assert.equal((await request(`${admin}/metrics`, { method: 'POST' })).status, 405);
  });

  it('--admin PORT binds loopback', () => {
    const r = spawnSync(process.execPath, [CLI, 'check', '--admin', '9999'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(loadConfig(undefined, { admin: '9999' }).admin.listen, '127.0.0.1:9999');
  });
});
