import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { delay, httpUpstream, request, startCli, waitFor, type Cli } from '../support/helpers';

/** The CLI as a real cluster: primary + worker processes sharing the listen socket. */
describe('cluster (the CLI as a real cluster)', function () {
  this.timeout(30_000);

  it('proxies to --upstream with the requested number of workers', async () => {
    const up = await httpUpstream((req, res) => res.end(`hello ${req.url}`));
    const cli = await startCli(['--upstream', up.url, '--workers', '2']);
    assert.equal(cli.workerPids().length, 2);
    const res = await request(`http://127.0.0.1:${cli.port}/x`);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'hello /x');
  });

  it('runs workers with an 8 MiB semi-space unless the operator chose a size, and with --expose-gc', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    // A worker's own process.execArgv, as it logs it at start (its title hides /proc/PID/cmdline).
    const argsOf = async (cli: Cli) =>
      (await waitFor(() => cli.logs.find((l) => l.event === 'node-internals'))).execArgv as string[];
    const ours = await startCli(['--upstream', up.url, '--workers', '1']);
    const args = await argsOf(ours);
    assert.ok(args.includes('--max-semi-space-size=8'), args.join(' '));
    assert.ok(args.includes('--expose-gc'));
    const theirs = await startCli(['--upstream', up.url, '--workers', '1'], {
      NODE_OPTIONS: '--max-semi-space-size=32',
    });
    const given = await argsOf(theirs);
    assert.ok(!given.some((a) => a.includes('semi-space')), given.join(' '));
    assert.equal((await request(`http://127.0.0.1:${theirs.port}/`)).status, 200);
  });

  it('serves the demo page through the proxy when no upstream is configured', async () => {
    const cli = await startCli(['--workers', '2']);
    const res = await request(`http://127.0.0.1:${cli.port}/`, { headers: { accept: 'text/html' } });
    assert.equal(res.status, 200);
    const page = res.body.toString();
    assert.match(page, /came through switchyard/);
    assert.match(page, /X-Forwarded-For/);
    assert.match(page, /Via<\/th><td>1\.1 switchyard/);
    const worker = /Served by worker <strong>(\d+) \(pid (\d+)\)/.exec(page);
    assert.ok(worker, 'page names the worker');
    assert.ok(cli.workerPids().includes(Number(worker[2])), 'the named worker is one of ours');
    // What the proxy set is highlighted, the request id too; long values wrap.
    assert.match(page, /<tr class="proxy"><th>X-Request-Id<\/th>/);
    assert.match(page, /td\{overflow-wrap:anywhere/);
    // No claim that a reload changes worker: a browser keeps its connection, and the page says so.
    assert.doesNotMatch(page, /reload to see/);
    assert.match(page, /curl -s http:\/\/127\.0\.0\.1:\d+\/api\/request/);
  });

  it('replaces a killed worker while the other keeps serving', async () => {
    const up = await httpUpstream((_req, res) => res.end(String(process.pid)));
    const cli = await startCli(['--upstream', up.url, '--workers', '2']);
    const [victim, survivor] = cli.workerPids();
    process.kill(victim, 'SIGKILL');
    // Fresh connections are only handed to live workers: every request succeeds meanwhile.
    for (let i = 0; i < 20; i++) assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 200);
    const died = await waitFor(() => cli.logs.find((l) => l.event === 'worker-died'));
    assert.equal(died.workerPid, victim);
    assert.equal(died.signal, 'SIGKILL');
    await waitFor(() => cli.workerPids().length === 2 && !cli.workerPids().includes(victim));
    assert.ok(cli.workerPids().includes(survivor));
    for (let i = 0; i < 10; i++) assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 200);
  });

  it('on SIGTERM, finishes an in-flight request, then exits 0', async () => {
    let arrived!: () => void;
    const arrivedP = new Promise<void>((r) => {
      arrived = r;
    });
    const up = await httpUpstream(async (_req, res) => {
      arrived();
      await delay(800);
      res.end('finished after SIGTERM');
    });
    const cli = await startCli(['--upstream', up.url, '--workers', '2']);
    const inFlight = request(`http://127.0.0.1:${cli.port}/slow`);
    await arrivedP;
    cli.child.kill('SIGTERM');
    const res = await inFlight;
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'finished after SIGTERM');
    // The last response of a draining worker tells the client not to reuse the connection.
    assert.equal(res.headers.connection, 'close');
    const exit = await cli.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    // And it no longer accepts connections.
    await assert.rejects(request(`http://127.0.0.1:${cli.port}/`));
  });

  it('bounds a stop by timeouts.drain: a request that never ends is cut, and the process exits 0', async () => {
    const up = await httpUpstream((_req, res) => {
      res.writeHead(200);
      res.write('never ends');
    });
    const dir = mkdtempSync(join(tmpdir(), 'swy-drain-'));
    writeFileSync(
      join(dir, 'switchyard.yaml'),
      `upstreams:\n  - url: ${up.url}\nworkers: 1\ntimeouts:\n  drain: 300\n`,
    );
    const cli = await startCli(['--config', join(dir, 'switchyard.yaml')]);
    const cut = new Promise<boolean>((resolve) => {
      http
        .get(`http://127.0.0.1:${cli.port}/`, { agent: false }, (res) => {
          res.once('data', () => cli.child.kill('SIGTERM'));
          res.on('aborted', () => resolve(!res.complete));
          res.on('error', () => resolve(!res.complete));
          res.on('end', () => resolve(!res.complete));
        })
        .on('error', () => resolve(true));
    });
    assert.equal(await cut, true, 'the unfinished response was cut, not passed off as complete');
    assert.deepEqual(await cli.exited, { code: 0, signal: null });
    assert.ok(cli.logs.some((l) => l.msg === 'drain timeout: closing remaining connections'));
  });

  it('closes idle keep-alive client connections on SIGTERM instead of waiting for them', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '1']);
    const agent = new http.Agent({ keepAlive: true });
    const res = await request(`http://127.0.0.1:${cli.port}/`, { agent });
    assert.equal(res.status, 200);
    cli.child.kill('SIGTERM');
    // Drain timeout is 30 s by default: exiting promptly proves idle connections were closed.
    const exit = await Promise.race([cli.exited, delay(20_000).then(() => 'still running')]);
    agent.destroy();
    assert.deepEqual(exit, { code: 0, signal: null });
  });

  it('exits 2 when the port is taken, naming the key and the address', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const first = await startCli(['--upstream', up.url, '--workers', '1']);
    const taken = `127.0.0.1:${first.port}`;
    await assert.rejects(
      startCli(['--upstream', up.url, '--workers', '1', '--listen', taken]),
      (err: Error) =>
        err.message.includes('"code":2') &&
        err.message.includes(`switchyard: listen: cannot listen on ${taken}`) &&
        err.message.includes('EADDRINUSE'),
    );
  });
});
