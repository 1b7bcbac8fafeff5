/**
 * In the cluster, the primary decides health and every worker follows it: active checks run
 * once (in the primary), and a failure one worker reports ejects the member for all of them.
 */
import assert from 'node:assert/strict';
import { configFile, httpUpstream, request, startCli, waitFor } from '../support/helpers';

describe('health in the cluster', () => {
  it('runs active checks in the primary only, and no worker sends traffic to a failing member', async () => {
    const healthChecks: Record<string, number> = { a: 0, b: 0 };
    const [a, b] = await Promise.all(
      ['a', 'b'].map((name) =>
        httpUpstream((req, res) => {
          if (req.url === '/health') {
            healthChecks[name]++;
            res.statusCode = name === 'b' ? 503 : 200;
            res.end();
            return;
          }
          res.end(name);
        }),
      ),
    );
    const cli = await startCli([
      '--workers',
      '2',
      '--admin',
      '127.0.0.1:0',
      '--config',
      configFile(`
accessLog: { enabled: false }
pools:
  web:
    members: [{ url: "${a.url}" }, { url: "${b.url}" }]
    healthCheck: { path: /health, interval: 100, fall: 1, rise: 1 }
`),
    ]);
    await waitFor(() => cli.logs.find((l) => String(l.msg).includes('fails its health check')));
    // The admin listener shows the same picture: /upstreams and switchyard_upstream_up.
    const admin = `http://${String((await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'))).admin)}`;
    const upstreams = JSON.parse((await request(`${admin}/upstreams`)).body.toString()) as {
      pools: Array<{ pool: string; members: Array<{ url: string; healthy: boolean }> }>;
    };
    assert.deepEqual(upstreams.pools, [
      {
        pool: 'web',
        members: [
          { url: a.url, weight: 1, healthy: true },
          { url: b.url, weight: 1, healthy: false },
        ],
      },
    ]);
    const metrics = (await request(`${admin}/metrics`)).body.toString();
    assert.match(metrics, new RegExp(`switchyard_upstream_up\\{pool="web",upstream="${b.url}"\\} 0`));
    assert.match(metrics, new RegExp(`switchyard_upstream_up\\{pool="web",upstream="${a.url}"\\} 1`));
    const verdicts = cli.logs.filter((l) => String(l.msg).includes('health check'));
    assert.ok(
      verdicts.every((l) => l.role === 'primary'),
      'checks are judged by the primary alone',
    );
    const served: string[] = [];
    for (let i = 0; i < 20; i++) served.push((await request(`http://127.0.0.1:${cli.port}/`)).body.toString());
    assert.deepEqual(new Set(served), new Set(['a']));
    // One checker, not one per worker: a and b are checked at the same pace.
    assert.ok(Math.abs(healthChecks.a - healthChecks.b) <= 2, JSON.stringify(healthChecks));
  });

  it('ejects a member for every worker when one worker reports it failing', async () => {
    const a = await httpUpstream((_req, res) => res.end('a'));
    const b = await httpUpstream((_req, res) => res.end('b'));
    const cli = await startCli([
      '--workers',
      '2',
      '--config',
      configFile(`
accessLog: { enabled: false }
pools:
  web:
    members: [{ url: "${a.url}" }, { url: "${b.url}" }]
    passive: { failures: 1, cooldown: 60000 }
`),
    ]);
    b.server.close();
    for (const s of b.connections) s.destroy();
    // Requests keep succeeding: the refused ones are retried on a.
    for (let i = 0; i < 10; i++) assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).body.toString(), 'a');
    const ejected = await waitFor(() => cli.logs.find((l) => String(l.msg).startsWith('upstream ejected')));
    assert.equal(ejected.role, 'primary');
    assert.equal(ejected.upstream, b.url);
    assert.equal(
      cli.logs.filter((l) => String(l.msg).startsWith('upstream ejected')).length,
      1,
      'ejected once, for all',
    );
  });
});
