/**
 * Route table scaling: the cost of finding a request's route in tables of 10 to 10,000 hosts,
 * for an exact host, a wildcard host, and a host no route names. Constant time shows as a flat
 * row: the table is maps keyed by host, not a list scanned in order.
 *
 * Part of `npm run load` (`--only routes` for this alone). In-process, no sockets: the router is
 * what is measured.
 */
import { performance } from 'node:perf_hooks';
import { routing, validate } from '../src/config/load';
import { Router } from '../src/proxy/router';
import type { UpstreamPool } from '../src/upstream/pool';

export interface RouteBenchRow {
  hosts: number;
  exactNs: number;
  wildcardNs: number;
  missNs: number;
  /** Same host count, as a linear list (the design not taken), for scale. */
  linearNs: number;
}

const SIZES = [10, 100, 1_000, 10_000];

function buildRouter(hosts: number): Router {
  const routes: Array<Record<string, unknown>> = [];
  for (let i = 0; i < hosts; i++) {
    // Realistic shapes: a site with an API route in front of its catch-all.
    if (i % 10 === 0) routes.push({ match: { host: `site${i}.example.com`, path: '/api' }, pool: 'b' });
    routes.push({ match: { host: `site${i}.example.com` }, pool: i % 2 === 0 ? 'a' : 'b' });
  }
  routes.push({ match: { host: '*.example.net' }, pool: 'a' });
  routes.push({ match: { path: '/.well-known' }, pool: 'b' });
  const config = validate({
    pools: { a: { members: [{ url: 'http://127.0.0.1:1' }] }, b: { members: [{ url: 'http://127.0.0.1:2' }] } },
    routes,
  });
  const { routes: resolved } = routing(config);
  const groups = new Map<string, UpstreamPool>([
    ['a', { name: 'a' } as UpstreamPool],
    ['b', { name: 'b' } as UpstreamPool],
  ]);
  return new Router(resolved, groups);
}

function nsPerOp(iterations: number, op: (i: number) => unknown): number {
  let sink = 0;
  for (let i = 0; i < 10_000; i++) if (op(i) !== null) sink++; // warm-up
  const start = performance.now();
  for (let i = 0; i < iterations; i++) if (op(i) !== null) sink++;
  const ns = ((performance.now() - start) * 1e6) / iterations;
  if (sink < 0) throw new Error('unreachable');
  return Math.round(ns);
}

export function benchRoutes(smoke: boolean): RouteBenchRow[] {
  const iterations = smoke ? 20_000 : 1_000_000;
  const rows: RouteBenchRow[] = [];
  for (const hosts of SIZES) {
    const router = buildRouter(hosts);
    const names = Array.from({ length: 1024 }, (_, i) => `site${(i * 7919) % hosts}.example.com`);
    const wild = Array.from({ length: 1024 }, (_, i) => `app${i}.example.net`);
    const miss = Array.from({ length: 1024 }, (_, i) => `nobody${i}.example.org`);
    const raw: string[] = [];
    const hostList = Array.from({ length: hosts }, (_, i) => `site${i}.example.com`);
    rows.push({
      hosts,
      exactNs: nsPerOp(iterations, (i) => router.match(names[i & 1023], '/index.html', 'GET', raw)),
      wildcardNs: nsPerOp(iterations, (i) => router.match(wild[i & 1023], '/index.html', 'GET', raw)),
      missNs: nsPerOp(iterations, (i) => router.match(miss[i & 1023], '/index.html', 'GET', raw)),
      // The design not taken, at its cheapest: a scan of the host names for an equal string.
      linearNs: nsPerOp(Math.max(1000, iterations / hosts), (i) => {
        const at = hostList.indexOf(names[i & 1023]);
        return at === -1 ? null : at;
      }),
    });
  }
  return rows;
}

export function formatRouteTable(rows: RouteBenchRow[]): string {
  const lines = [
    '| hosts | exact host ns | wildcard ns | no match ns | linear scan ns (for scale) |',
    '|------:|--------------:|------------:|------------:|---------------------------:|',
  ];
  for (const r of rows) lines.push(`| ${r.hosts} | ${r.exactNs} | ${r.wildcardNs} | ${r.missNs} | ${r.linearNs} |`);
  return lines.join('\n');
}
