/**
 * `npm run load`: start a local upstream and switchyard as a real cluster, then run each suite
 * against the upstream directly and through the proxy with autocannon. Prints a table, writes
 * the results as JSON, and exits non-zero if any suite saw an error or a non-2xx response.
 *
 *   npm run load -- [--workers N] [--duration S] [--smoke] [--out FILE] [--compare FILE] [--only a,b]
 *
 * Suites: small, 64k, upload-1m, new-conn, c5000 (autocannon), memory (idle connections),
 * transforms (small-request latency beside 1 MiB transforms: transforms.ts), and routes
 * (route-table lookups from 10 to 10,000 hosts, in-process: routes.ts).
 *
 * Timing is noise in CI, so CI runs only `--smoke` (a second per suite, fewer connections) to
 * prove the suites work; the numbers that matter come from a quiet machine.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { forkUpstream, runAutocannon, startProxy } from './procs';
import { benchRoutes, formatRouteTable, type RouteBenchRow } from './routes';
import { benchTransforms, formatTransformTable, type TransformBenchRow } from './transforms';

const ROOT = resolve(__dirname, '../..');

interface Suite {
  name: string;
  describe: string;
  /** `path` is appended to the URL (procs.ts). */
  options: (smoke: boolean) => Partial<autocannon.Options> & { path?: string };
}

/**
 * autocannon 8 writes its next request as soon as a response completes, on the same connection,
 * even after a request and a response that both said Connection: close (RFC 9112 §9.6: the client
 * MUST NOT send further requests). A server that closes at once, as nginx and switchyard do when
 * the client said close, answers that write with a reset, which autocannon counts as an error.
 * This client waits for the server's close and reconnects, as wrk and browsers do: its 'end'
 * handler opens the next connection and sends the next request there.
 */
function honourClose(client: autocannon.Client): void {
  const c = client as autocannon.Client & { _doRequest: (this: unknown, ...args: unknown[]) => unknown };
  let closing = false;
  // http-parser-js's head info (autocannon's parser): shouldKeepAlive covers both sides' Connection.
  // (@types/autocannon calls it the headers; it is the parser's whole info object.)
  c.on('headers', (info) => {
    closing = (info as { shouldKeepAlive?: boolean }).shouldKeepAlive === false;
  });
  const doRequest = c._doRequest;
  // A private method of autocannon 8's client (lib/httpClient.js): say so if a new version lost it.
  if (typeof doRequest !== 'function')
    throw new Error("new-conn: autocannon's client has no _doRequest; update honourClose for this version");
  c._doRequest = function (this: unknown, ...args: unknown[]): unknown {
    if (closing) {
      closing = false;
      return undefined;
    }
    return doRequest.apply(this, args);
  };
}

const MiB = 1024 * 1024;
const UPLOAD = Buffer.alloc(MiB, 'u');

export const SUITES: Suite[] = [
  { name: 'small', describe: 'GET 12 B, keep-alive, 50 conns', options: () => ({ path: '/small', connections: 50 }) },
  { name: '64k', describe: 'GET 64 KiB, keep-alive, 50 conns', options: () => ({ path: '/64k', connections: 50 }) },
  {
    name: 'upload-1m',
    describe: 'POST 1 MiB, keep-alive, 10 conns',
    options: () => ({ path: '/upload', method: 'POST', body: UPLOAD, connections: 10 }),
  },
  {
    name: 'new-conn',
    describe: 'GET 12 B, a new connection per request, 50 conns',
    // The server closes after each response and autocannon reconnects. (autocannon 8's
    // reconnectRate: 1 sends nothing at all.)
    // In smoke mode a fixed count: every request leaves a port in TIME_WAIT for a minute, and
    // a second of this at full speed uses most of the ephemeral range.
    options: (smoke) => ({
      path: '/small',
      connections: 50,
      headers: { connection: 'close' },
      setupClient: honourClose,
      ...(smoke ? { amount: 2000 } : {}),
    }),
  },
  {
    name: 'c5000',
    describe: 'GET 12 B, 5,000 concurrent connections',
    options: (smoke) => ({ path: '/small', connections: smoke ? 500 : 5000 }),
  },
];

export interface SuiteResult {
  suite: string;
  describe: string;
  target: 'direct' | 'proxy';
  rps: number;
  p50: number;
  p99: number;
  max: number;
  requests: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  /** Response bytes per request (headers included): proves each suite fetched what it says. */
  bytesPerRequest: number;
}

export interface RunResult {
  date: string;
  workers: number;
  duration: number;
  smoke: boolean;
  node: string;
  results: SuiteResult[];
  memory?: IdleMemory | undefined;
  routes?: RouteBenchRow[] | undefined;
  transforms?: TransformBenchRow[] | undefined;
  failed: string[];
}

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

export interface IdleMemory {
  connections: number;
  /**
   * Workers that have served keep-alive traffic first, as any worker in service has: the first
   * `connections` idle ones. The heap has its working size already, so this is what the
   * connections themselves cost.
   */
  warmKibPerConnection: number;
  /** Fresh workers: the first `connections`, the heap's growth to working size (young generation, JIT) included. */
  kibPerConnection: number;
  /**
   * The same connections, still open, once the workers have been idle `settleSeconds`: what a
   * burst left behind is collected and the young generation given back (src/ops/heap-trim.ts).
   * Smoke mode waits 1 s, too short for that: it only proves the measurement works.
   */
  settledKibPerConnection?: number | undefined;
  settleSeconds?: number | undefined;
  /** The next `connections` on those, the first still open. */
  marginalKibPerConnection: number;
}

/**
 * Worker RSS per idle keep-alive client connection: open `count` connections, make one request
 * on each, and compare the workers' RSS before and after (and again after `settleMs` idle, when
 * not 0); then as many again.
 */
async function measureIdleMemory(
  port: number,
  pids: number[],
  count: number,
  settleMs = 0,
): Promise<{ first: number; settled: number | undefined; next: number }> {
  const rss = (): number => pids.reduce((a, p) => a + rssKiB(p), 0);
  const sockets: net.Socket[] = [];
  const open = async (): Promise<void> => {
    const batch = 250;
    for (let i = 0; i < count; i += batch) {
      await Promise.all(
        Array.from(
          { length: Math.min(batch, count - i) },
          () =>
            new Promise<void>((ok, fail) => {
              const s = net.connect(port, '127.0.0.1');
              sockets.push(s);
              s.once('error', fail);
              s.write('GET /small HTTP/1.1\r\nHost: load\r\n\r\n');
              s.once('data', () => ok());
            }),
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  };
  const kib = (from: number, to: number): number => Math.round(((to - from) / count) * 100) / 100;
  try {
    const before = rss();
    await open();
    const first = rss();
    let settled: number | undefined;
    if (settleMs > 0) {
      await new Promise((r) => setTimeout(r, settleMs));
      const stillOpen = sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
      if (stillOpen !== count)
        throw new Error(`memory: ${count - stillOpen} of ${count} idle connections closed while settling`);
      settled = rss();
    }
    await open();
    const second = rss();
    return {
      first: kib(before, first),
      settled: settled === undefined ? undefined : kib(before, settled),
      next: kib(settled ?? first, second),
    };
  } finally {
    for (const s of sockets) s.destroy();
  }
}

function formatTable(run: RunResult, previous?: RunResult): string {
  const rows: string[][] = [
    [
      'suite',
      'target',
      'req/s',
      'p50 ms',
      'p99 ms',
      'max ms',
      'errors',
      'non-2xx',
      'vs direct',
      ...(previous ? ['vs saved'] : []),
    ],
  ];
  for (const r of run.results) {
    const direct = run.results.find((d) => d.suite === r.suite && d.target === 'direct');
    const ratio = r.target === 'proxy' && direct && direct.rps > 0 ? `${(r.rps / direct.rps).toFixed(2)}x` : '';
    const prev = previous?.results.find((p) => p.suite === r.suite && p.target === r.target);
    const delta =
      prev && prev.rps > 0
        ? `${r.rps >= prev.rps ? '+' : ''}${(((r.rps - prev.rps) / prev.rps) * 100).toFixed(1)}%`
        : previous
          ? 'n/a'
          : undefined;
    // autocannon counts each timeout among its errors already: adding timeouts here counted each one twice.
    rows.push([
      r.suite,
      r.target,
      r.rps.toFixed(0),
      String(r.p50),
      String(r.p99),
      String(r.max),
      String(r.errors),
      String(r.non2xx),
      ratio,
      ...(delta !== undefined ? [delta] : []),
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  const line = (row: string[]) => `| ${row.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      workers: { type: 'string' },
      duration: { type: 'string' },
      smoke: { type: 'boolean' },
      out: { type: 'string' },
      compare: { type: 'string' },
      only: { type: 'string' },
    },
  });
  const smoke = values.smoke === true;
  const workers = values.workers !== undefined ? Number(values.workers) : availableParallelism();
  const duration = values.duration !== undefined ? Number(values.duration) : smoke ? 1 : 10;
  const only = values.only?.split(',');
  const suites = SUITES.filter((s) => only === undefined || only.includes(s.name));
  const previous =
    values.compare !== undefined ? (JSON.parse(readFileSync(values.compare, 'utf8')) as RunResult) : undefined;

  const run: RunResult = {
    date: new Date().toISOString(),
    workers,
    duration,
    smoke,
    node: process.version,
    results: [],
    failed: [],
  };
  // In-process and first, before any cluster competes for the CPU.
  if (only === undefined || only.includes('routes')) run.routes = benchRoutes(smoke);
  const needCluster = suites.length > 0 || only === undefined || only.includes('memory');
  const upstream = needCluster ? await forkUpstream() : null;
  // Idle connections must stay open while the memory suite lets the workers settle; the default
  // keep-alive timeout is 5 s. Nothing else is idle long enough to notice.
  const proxyArgs = ['--config', writeLoadConfig()];
  let proxy = upstream !== null ? await startProxy(upstream.port, workers, proxyArgs) : null;
  try {
    if (upstream === null || proxy === null) throw new Skip();
    // First, on fresh workers: after the 5,000-connection suite the heap has already grown, and
    // RSS would hardly move. Then on a new cluster that has served keep-alive traffic for a
    // while (not thousands of connections, whose freed memory the next ones would reuse).
    if (only === undefined || only.includes('memory')) {
      const count = smoke ? 500 : 5000;
      // Smoke: one second, to prove the measurement and its still-open check work.
      const settleSeconds = smoke ? 1 : 30;
      const fresh = await measureIdleMemory(proxy.port, proxy.workerPids, count, settleSeconds * 1000);
      proxy.child.kill('SIGTERM');
      proxy = await startProxy(upstream.port, workers, proxyArgs);
      await runAutocannon(`http://127.0.0.1:${proxy.port}`, { path: '/small', connections: 50 }, smoke ? 1 : 3);
      const warm = await measureIdleMemory(proxy.port, proxy.workerPids, count);
      run.memory = {
        connections: count,
        warmKibPerConnection: warm.first,
        kibPerConnection: fresh.first,
        settledKibPerConnection: fresh.settled,
        settleSeconds: fresh.settled === undefined ? undefined : settleSeconds,
        marginalKibPerConnection: fresh.next,
      };
    }
    for (const suite of suites) {
      for (const target of ['direct', 'proxy'] as const) {
        const port = target === 'direct' ? upstream.port : proxy.port;
        const r = await runAutocannon(`http://127.0.0.1:${port}`, suite.options(smoke), duration);
        const result: SuiteResult = {
          suite: suite.name,
          describe: suite.describe,
          target,
          rps: r.requests.average,
          p50: r.latency.p50,
          p99: r.latency.p99,
          max: r.latency.max,
          requests: r.requests.total,
          errors: r.errors,
          timeouts: r.timeouts,
          non2xx: r.non2xx,
          bytesPerRequest: r.requests.total > 0 ? Math.round(r.throughput.total / r.requests.total) : 0,
        };
        run.results.push(result);
        if (target === 'proxy' && (r.errors > 0 || r.timeouts > 0 || r.non2xx > 0 || r.requests.total === 0)) {
          run.failed.push(
            `${suite.name} (errors ${r.errors}, timeouts ${r.timeouts}, non-2xx ${r.non2xx}, requests ${r.requests.total})`,
          );
        }
        process.stderr.write(`  ${suite.name} ${target}: ${result.rps.toFixed(0)} req/s\n`);
      }
    }
  } catch (err) {
    if (!(err instanceof Skip)) throw err;
  } finally {
    proxy?.child.kill('SIGTERM');
    upstream?.child.kill('SIGTERM');
  }
  // Its own upstream and one-worker proxies, one per scenario, after the cluster is gone.
  if (only === undefined || only.includes('transforms')) {
    run.transforms = await benchTransforms(smoke, duration);
    for (const r of run.transforms) {
      if (r.errors > 0 || r.non2xx > 0)
        run.failed.push(`transforms/${r.scenario} (errors ${r.errors}, non-2xx ${r.non2xx})`);
    }
  }
  const out = values.out ?? resolve(ROOT, 'load-tests/results', `${run.date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(run, null, 2)}\n`);

  process.stdout.write(
    `switchyard load: ${workers} worker(s), ${duration}s per suite${smoke ? ' (smoke)' : ''}, node ${process.version}\n`,
  );
  for (const s of suites) process.stdout.write(`  ${s.name}: ${s.describe}\n`);
  if (suites.length > 0) process.stdout.write(`${formatTable(run, previous)}\n`);
  if (run.transforms) {
    process.stdout.write(
      `transforms on one worker (small: GET 12 B at 2,000/s, alongside 1 MiB pages at 20/s; smoke: 500/s and 10/s):\n${formatTransformTable(run.transforms)}\n`,
    );
  }
  if (run.routes)
    process.stdout.write(
      `route table lookups (ns per request; flat = constant time):\n${formatRouteTable(run.routes)}\n`,
    );
  if (run.memory) {
    const m = run.memory;
    process.stdout.write(
      `idle keep-alive memory, KiB of worker RSS per connection (${m.connections} connections): ` +
        `${m.warmKibPerConnection} on workers that served traffic first; ${m.kibPerConnection} on fresh workers` +
        (m.settledKibPerConnection !== undefined
          ? ` (${m.settledKibPerConnection} once idle ${m.settleSeconds} s, still open)`
          : '') +
        `, ${m.marginalKibPerConnection} for each of ${m.connections} more\n`,
    );
  }
  process.stdout.write(`results: ${out}\n`);
  if (run.failed.length > 0) {
    process.stdout.write(`FAILED (errors or non-2xx through the proxy): ${run.failed.join(', ')}\n`);
    return 1;
  }
  return 0;
}

/** The load cluster's config file: the defaults, but idle connections kept for two minutes. */
function writeLoadConfig(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'swy-load-')), 'switchyard.yaml');
  writeFileSync(file, 'server:\n  keepAliveTimeout: 120000\n');
  return file;
}

/** Nothing to run against a cluster (e.g. `--only routes`). */
class Skip extends Error {}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`load: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
