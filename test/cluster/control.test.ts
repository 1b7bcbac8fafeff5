/**
 * `switchyard reload` and `switchyard stop` against a real cluster, found by its pid file, with
 * no admin listener.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, httpUpstream, request, startCli, waitFor } from '../support/helpers';

/** Run the CLI to its end (asynchronously: the cluster under test lives in this process's loop). */
function run(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('switchyard reload and stop', function () {
  this.timeout(30_000);

  it('reload reports a good config, refuses a bad one before signalling, and /readyz-free status says so', async () => {
    const a = await httpUpstream((_req, res) => res.end('A'));
    const b = await httpUpstream((_req, res) => res.end('B'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-control-'));
    const file = join(dir, 'switchyard.yaml');
    const pidFile = join(dir, 'switchyard.pid');
    writeFileSync(file, `upstreams: [{ url: "${a.url}" }]\nworkers: 2\npidFile: ${pidFile}\n`);
    const cli = await startCli(['--config', file]);
    await waitFor(() => existsSync(`${pidFile}.status`));
    assert.equal(readFileSync(pidFile, 'utf8').trim(), String(cli.child.pid));

    writeFileSync(file, `upstreams: [{ url: "${b.url}" }]\nworkers: 2\npidFile: ${pidFile}\n`);
    const good = await run('reload', '--pid-file', pidFile);
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /^reloaded: 2 worker\(s\), config hash [0-9a-f]{12}\n$/);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).body.toString(), 'B');

    writeFileSync(file, `upstreams: [{ url: "ftp://nope" }]\npidFile: ${pidFile}\n`);
    const pids = cli.workerPids();
    const bad = await run('reload', '--config', file);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /reload refused; the running configuration stays/);
    assert.match(bad.stderr, /upstreams\[0\]\.url: got "ftp:\/\/nope"/);
    assert.deepEqual(cli.workerPids(), pids, 'nothing was signalled');
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).body.toString(), 'B');

    // A reload that fails inside the instance (here: SIGHUP by hand) is recorded for the next look.
    cli.child.kill('SIGHUP');
    await waitFor(
      () =>
        (JSON.parse(readFileSync(`${pidFile}.status`, 'utf8')) as { lastReload: { ok: boolean } }).lastReload.ok ===
        false,
    );

    const stop = await run('stop', '--pid-file', pidFile);
    assert.equal(stop.status, 0, stop.stderr);
    assert.equal(stop.stdout, `stopped (pid ${cli.child.pid})\n`);
    assert.deepEqual(await cli.exited, { code: 0, signal: null });
    assert.equal(existsSync(pidFile), false);
  });

  it('says so when no instance runs', async () => {
    const r = await run('reload', '--pid-file', join(mkdtempSync(join(tmpdir(), 'swy-none-')), 'x.pid'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no running switchyard found/);
  });

  it('names the workers in ps', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '2']);
    const titles = cli.workerPids().map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0+$/, ''));
    assert.deepEqual(titles.sort(), ['switchyard: worker 1', 'switchyard: worker 2']);
    // The command name has no space, so /proc/PID/stat still splits into its fields.
    const comms = cli.workerPids().map((pid) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
    assert.deepEqual(comms.sort(), ['switchyard-w1', 'switchyard-w2']);
    for (const pid of [cli.child.pid!, ...cli.workerPids()]) {
      assert.equal(readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[1].startsWith('(switchyard'), true);
      assert.match(readFileSync(`/proc/${pid}/stat`, 'utf8'), /^\d+ \(switchyard[-\w]*\) [A-Z] /);
    }
  });
});
