import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { configFile, httpUpstream, request, startCli, waitFor } from '../support/helpers';

describe('zero-downtime reload (SIGHUP)', function () {
  this.timeout(60_000);

  it('applies a new config under steady load with no failed request, replacing every worker', async () => {
    const a = await httpUpstream((_req, res) => res.end('A'));
    const b = await httpUpstream((_req, res) => res.end('B'));
    const file = configFile(`upstreams:\n  - url: ${a.url}\nworkers: 2\n`);
    const cli = await startCli(['--config', file]);
    const before = cli.workerPids();
    const url = `http://127.0.0.1:${cli.port}/`;

    // Steady load: 8 keep-alive clients and 2 that open a new connection per request.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const seen = new Set<string>();
    const loop = async (useAgent: boolean): Promise<void> => {
      while (!stop) {
        try {
          const res = await request(url, useAgent ? { agent } : {});
          if (res.status !== 200) failures.push(`status ${res.status}`);
          else {
            ok++;
            seen.add(res.body.toString());
          }
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    };
    const loops = [...Array.from({ length: 8 }, () => loop(true)), loop(false), loop(false)];
    await waitFor(() => ok > 200);

    writeFileSync(file, `upstreams:\n  - url: ${b.url}\nworkers: 2\n`);
    cli.child.kill('SIGHUP');
    await waitFor(() => cli.logs.some((l) => l.event === 'reload-complete'));
    const afterReload = ok;
    await waitFor(() => ok > afterReload + 200 && seen.has('B'));
    stop = true;
    await Promise.all(loops);
    agent.destroy();

    assert.deepEqual(failures, []);
    await waitFor(() => cli.logs.filter((l) => l.msg === 'retired worker exited').length === 2);
    const after = cli.workerPids();
    assert.equal(after.length, 2);
    for (const pid of before) assert.ok(!after.includes(pid), 'every old worker was replaced');
    assert.equal((await request(url)).body.toString(), 'B');
  });

  it('keeps running the old config when the new one is invalid, and says why', async () => {
    const a = await httpUpstream((_req, res) => res.end('A'));
    const file = configFile(`upstreams:\n  - url: ${a.url}\nworkers: 1\n`);
    const cli = await startCli(['--config', file]);
    const before = cli.workerPids();
    writeFileSync(file, 'upstreams:\n  - url: ftp://nope\n');
    cli.child.kill('SIGHUP');
    const failed = await waitFor(() => cli.logs.find((l) => String(l.msg).startsWith('reload failed')));
    assert.match(String((failed.err as { message: string }).message), /upstreams\[0\]\.url: got "ftp:\/\/nope"/);
    assert.deepEqual(cli.workerPids(), before);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).body.toString(), 'A');
  });
});
