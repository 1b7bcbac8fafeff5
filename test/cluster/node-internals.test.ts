/**
 * The private Node internals live in one module (src/node-internals.ts), checked at each worker's
 * start. With them reported missing, every fast path falls back to the public API and serves
 * the same.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { capabilities } from '../../src/node-internals';
import { httpUpstream, rawExchange, request, ROOT, startCli, waitFor } from '../support/helpers';

describe('Node internals', function () {
  this.timeout(30_000);

  it('are used nowhere but src/node-internals.ts', () => {
    const internal =
      /require\('_http_common'\)|process\)?\.binding|process as unknown as \{ binding|owner_symbol|\.latin1Slice\(|\.utf8Write\(|prom-client\/lib|\._handle\b/;
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (
          entry.name.endsWith('.ts') &&
          !path.endsWith('node-internals.ts') &&
          internal.test(readFileSync(path, 'utf8'))
        )
          offenders.push(path);
      }
    };
    walk(join(ROOT, 'src'));
    walk(join(ROOT, 'workers'));
    assert.deepEqual(offenders, []);
  });

  it('each worker logs which fast paths are on', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const cli = await startCli(['--upstream', up.url, '--workers', '1']);
    const line = await waitFor(() => cli.logs.find((l) => l.event === 'node-internals'));
    assert.equal(line.node, process.version);
    assert.deepEqual(
      {
        tcpHandles: line.tcpHandles,
        tlsHandles: line.tlsHandles,
        bufferCoders: line.bufferCoders,
        promMetricFiles: line.promMetricFiles,
      },
      capabilities(),
    );
  });

  it('reported missing (SWITCHYARD_NODE_INTERNALS=off), the public-API fallbacks serve alike', async () => {
    const up = await httpUpstream((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => res.end(`${req.method} ${req.url} ${body}`));
    });
    const cli = await startCli(['--upstream', up.url, '--workers', '1', '--admin', '127.0.0.1:0'], {
      SWITCHYARD_NODE_INTERNALS: 'off',
    });
    const line = await waitFor(() => cli.logs.find((l) => l.event === 'node-internals'));
    assert.deepEqual([line.tcpHandles, line.bufferCoders, line.promMetricFiles], [false, false, false]);
    assert.match(String(line.msg), /fallbacks in use/);
    const url = `http://127.0.0.1:${cli.port}`;
    assert.equal((await request(`${url}/a`)).body.toString(), 'GET /a ');
    assert.equal(
      (await request(`${url}/b`, { method: 'POST' }, 'x'.repeat(100_000))).body.toString(),
      `POST /b ${'x'.repeat(100_000)}`,
    );
    // Keep-alive and pipelining on the fallback transport, in raw bytes.
    const out = await rawExchange(
      cli.port,
      'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    assert.match(out, /GET \/1 [\s\S]*GET \/2 $/);
    const bad = await rawExchange(cli.port, 'GET /x\r\n');
    assert.match(bad, /^HTTP\/1\.1 400 /);
    // The access log's line writer and the metrics both still work.
    await waitFor(() => cli.logs.some((l) => l.path === '/2'));
    const admin = await waitFor(() => cli.logs.find((l) => typeof l.admin === 'string'));
    const metrics = await request(`http://${String(admin.admin)}/metrics`);
    assert.match(metrics.body.toString(), /switchyard_requests_total/);
    assert.match(metrics.body.toString(), /process_cpu_seconds_total/);
  });
});
