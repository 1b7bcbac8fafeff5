/**
 * What the transform pool buys: small requests' latency on a worker that is also rewriting 1 MiB
 * HTML pages. One cluster worker; two autocannon loads at once, on the same worker:
 *
 *   pages: GET /page-1m (1 MiB of HTML with internal links), 20 pages/s over 2 connections
 *   small: GET /small (12 B, never transformed), 2,000 req/s over 2 connections: its p99 is
 *          the figure
 *
 * Both loads are at fixed rates, below what the worker can take: latency then shows how long the
 * event loop was blocked, not how long requests queued behind a saturated CPU. (autocannon's
 * rate limit fires all connections at once each tick, so more connections measure its own
 * bursts: 10 connections at 2,000/s show a 13 ms p99 with nothing else running, 2 show 0.)
 *
 * Scenarios: no transform (baseline); `replace` in the pool (threads auto); the same `replace`
 * inline on the event loop (threads 0); compression alone streamed through zlib; the same
 * compression done in the pool (an identity module plus compress). Part of `npm run load`
 * (`--only transforms` for this alone).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forkUpstream, runAutocannon, runAutocannonInChild, startProxy } from './procs';

export interface TransformBenchRow {
  scenario: string;
  describe: string;
  smallRps: number;
  smallP50: number;
  smallP99: number;
  smallMax: number;
  pagesRps: number;
  errors: number;
  non2xx: number;
  /** small p99 relative to the baseline scenario. */
  vsBaseline: number;
}

interface Scenario {
  name: string;
  describe: string;
  route: Record<string, unknown> | null;
  threads?: number;
  acceptEncoding?: boolean;
}

function scenarios(moduleFile: string): Scenario[] {
  const replace = { replace: [{ from: 'http://10.0.0.5:3000', to: 'https://www.example.com' }] };
  return [
    { name: 'baseline', describe: 'pages relayed as they are', route: null },
    { name: 'pool', describe: 'replace in the piscina pool (threads auto)', route: { transform: replace } },
    {
      name: 'inline',
      describe: 'the same replace on the event loop (threads 0)',
      route: { transform: replace },
      threads: 0,
    },
    {
      name: 'gzip-stream',
      describe: 'gzip only, zlib async stream',
      route: { compress: { encodings: ['gzip'] } },
      acceptEncoding: true,
    },
    {
      name: 'gzip-pool',
      describe: 'gzip only, in the pool (identity module + compress)',
      route: { transform: { module: moduleFile }, compress: { encodings: ['gzip'] } },
      acceptEncoding: true,
    },
  ];
}

/**
 * Pages and small requests go to upstreams of their own: a Node upstream writing 1 MiB bodies
 * delays its other responses, which would show up as proxy latency.
 */
function configFor(s: Scenario, pagesPort: number, smallPort: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'swy-bench-'));
  const file = join(dir, 'switchyard.yaml');
  const extra = s.route === null ? [] : Object.entries(s.route).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`);
  writeFileSync(
    file,
    [
      'accessLog: { enabled: false }',
      ...(s.threads !== undefined ? [`transformPool: { threads: ${s.threads} }`] : []),
      'pools:',
      `  pages: { members: [{ url: "http://127.0.0.1:${pagesPort}" }] }`,
      `  small: { members: [{ url: "http://127.0.0.1:${smallPort}" }] }`,
      'routes:',
      '  - match: { path: /page-1m }',
      '    pool: pages',
      ...extra,
      '  - pool: small',
      '',
    ].join('\n'),
  );
  return file;
}

export async function benchTransforms(smoke: boolean, duration: number): Promise<TransformBenchRow[]> {
  const moduleFile = join(mkdtempSync(join(tmpdir(), 'swy-bench-mod-')), 'identity.js');
  writeFileSync(moduleFile, 'module.exports = (body) => body;\n');
  const pagesUpstream = await forkUpstream();
  const upstream = await forkUpstream();
  const rows: TransformBenchRow[] = [];
  try {
    for (const s of scenarios(moduleFile)) {
      // --upstream would replace the pool "default"; these pools have names of their own.
      const proxy = await startProxy(upstream.port, 1, ['--config', configFor(s, pagesUpstream.port, upstream.port)]);
      try {
        const url = `http://127.0.0.1:${proxy.port}`;
        const headers = s.acceptEncoding === true ? { 'accept-encoding': 'gzip' } : {};
        const [pages, small] = await Promise.all([
          runAutocannonInChild(
            url,
            { path: '/page-1m', connections: 2, overallRate: smoke ? 10 : 20, headers },
            duration,
          ),
          runAutocannon(url, { path: '/small', connections: 2, overallRate: smoke ? 500 : 2000 }, duration),
        ]);
        rows.push({
          scenario: s.name,
          describe: s.describe,
          smallRps: Math.round(small.requests.average),
          smallP50: small.latency.p50,
          smallP99: small.latency.p99,
          smallMax: small.latency.max,
          pagesRps: Math.round(pages.requests.average * 10) / 10,
          // Timeouts are among autocannon's errors already.
          errors: small.errors + pages.errors,
          non2xx: small.non2xx + pages.non2xx,
          vsBaseline: 0,
        });
      } finally {
        proxy.child.kill('SIGTERM');
        await new Promise((r) => proxy.child.once('exit', r));
      }
    }
  } finally {
    upstream.child.kill('SIGTERM');
    pagesUpstream.child.kill('SIGTERM');
  }
  const base = rows[0].smallP99;
  for (const r of rows) r.vsBaseline = base > 0 ? Math.round((r.smallP99 / base) * 100) / 100 : 0;
  return rows;
}

export function formatTransformTable(rows: TransformBenchRow[]): string {
  const lines = [
    '| scenario | what | small req/s | small p50 ms | small p99 ms | small max ms | p99 vs baseline | 1 MiB pages/s | errors | non-2xx |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.scenario} | ${r.describe} | ${r.smallRps} | ${r.smallP50} | ${r.smallP99} | ${r.smallMax} | ${r.vsBaseline}x | ${r.pagesRps} | ${r.errors} | ${r.non2xx} |`,
    );
  }
  return lines.join('\n');
}
