import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ReplayResult } from '../../src/replay/replay';
import { CLI, FIXTURES, httpUpstream, startProxy } from '../support/helpers';

const TLS = { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') };

async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

function send(port: number, method: string, path: string, body?: string): Promise<void> {
  return new Promise((done, fail) => {
    const req = https.request(
      `https://127.0.0.1:${port}${path}`,
      {
        method,
        rejectUnauthorized: false,
        servername: 'localhost',
        agent: false,
        headers: { host: 'shop.example', authorization: 'Bearer secret', 'x-kind': method.toLowerCase() },
      },
      (res) => {
        res.resume();
        res.on('end', done);
      },
    );
    req.on('error', fail);
    req.end(body);
  });
}

describe('record → replay', function () {
  this.timeout(60_000);

  it('a recording made over HTTPS replays against an HTTP target: every request, body and field, credentials left out', async () => {
    const recorded = await httpUpstream((req, res) => {
      req.resume();
      req.on('end', () => res.end('recorded'));
    });
    const dir = mkdtempSync(join(tmpdir(), 'swy-replay-'));
    const proxy = await startProxy({
      tls: TLS,
      pools: { app: { members: [{ url: recorded.url }] } },
      routes: [
        { name: 'api', match: { path: '/api' }, pool: 'app', record: { file: join(dir, 'traffic.jsonl') } },
        { name: 'web', pool: 'app', record: { file: join(dir, 'traffic.jsonl') } },
      ],
    });
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      await send(proxy.port, 'POST', `/api/items/${i}`, `{"n":${i}}`);
      await send(proxy.port, 'GET', `/page/${i}?x=${i}`);
      sent.push(`POST /api/items/${i} {"n":${i}}`, `GET /page/${i}?x=${i} `);
    }
    await proxy.server.drain(10);

    const seen: string[] = [];
    const fields: Array<Record<string, unknown>> = [];
    const target = await httpUpstream((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push(`${req.method} ${req.url} ${body}`);
        fields.push(req.headers);
        res.statusCode = req.url!.startsWith('/page/9') ? 503 : 200;
        res.end('replayed');
      });
    });
    const out = join(dir, 'run.json');
    const run = await cli([
      'replay',
      join(dir, 'traffic.1.jsonl'),
      '--target',
      target.url,
      '--speed',
      '20',
      '--json',
      out,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual([...seen].sort(), [...sent].sort());
    for (const h of fields) {
      assert.equal(h.host, 'shop.example');
      assert.equal(h.authorization, undefined);
      assert.match(String(h['x-kind']), /^(post|get)$/);
    }
    assert.match(run.stdout, /\| api +\| 10 /);
    assert.match(run.stdout, /\| web +\| 10 /);
    const result = JSON.parse(readFileSync(out, 'utf8')) as ReplayResult;
    assert.equal(result.total.requests, 20);
    assert.equal(result.total.errors, 0);
    assert.equal(result.routes.web.non2xx, 1);
    assert.equal(result.routes.api.non2xx, 0);

    // A constant rate loops over the recording for the duration; --compare sets it against the first run.
    seen.length = 0;
    const again = await cli([
      'replay',
      join(dir, 'traffic.1.jsonl'),
      '--target',
      target.url,
      '--rate',
      '50',
      '--duration',
      '1',
      '--compare',
      out,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(seen.length, 50);
    assert.match(again.stdout, /p99 vs saved/);
  });

  it('bad usage answers 2 and says what was expected', async () => {
    const missing = await cli(['replay', '/nonexistent.jsonl']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--target: got null; expected an http:\/\/ or https:\/\/ URL/);
    const both = await cli(['replay', 'x.jsonl', '--target', 'http://127.0.0.1:1', '--speed', '2', '--rate', '3']);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--speed and --rate: got both/);
    const nofile = await cli(['replay', '/nonexistent.jsonl', '--target', 'http://127.0.0.1:1']);
    assert.equal(nofile.code, 2);
    assert.match(nofile.stderr, /nonexistent\.jsonl/);
    const bad = await cli(['replay', 'x.jsonl', '--target', 'http://127.0.0.1:1', '--rate', 'lots']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--rate: got "lots"; expected a number > 0/);
  });
});
