/**
 * `switchyard replay`: a recording (proxy/recorder.ts) replayed as load against a target, with
 * autocannon's connections and HTTP client. The schedule is an open model: each request has an
 * intended start, from the recorded timing sped up (`speed`) or from a constant rate (`rate`),
 * and is sent then whether or not earlier ones have been answered. Latency runs from the intended
 * start, so a target that falls behind is charged for the wait it caused (coordinated omission
 * corrected, as wrk2 does), not only for the requests it happened to answer.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { REDACTED, type RecordedExchange } from '../ops/recording';

export interface ReplayOptions {
  files: readonly string[];
  target: string;
  /** Recorded timing, this many times faster; exclusive with `rate`. */
  speed?: number;
  /** Requests per second, constant; exclusive with `speed`. */
  rate?: number;
  /** Seconds; with `rate`, the recording is looped until then. Default: the recording once. */
  duration?: number;
  /** Connections autocannon opens; requests due while all are busy wait for one (and the wait counts). */
  connections: number;
  /** Give up on a request after this many seconds (an error). */
  timeout: number;
}

export interface LatencyStats {
  requests: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  errors: number;
  non2xx: number;
}

export interface ReplayResult {
  target: string;
  mode: string;
  /** Requests per second the schedule asked for, over its whole span. */
  requestedRate: number;
  /** Requests per second actually sent, over the same span. */
  achievedRate: number;
  seconds: number;
  total: LatencyStats;
  routes: Record<string, LatencyStats>;
}

/** Fields a replayed request does not carry over: per connection, framing (autocannon frames the body), redacted. */
const DROPPED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'upgrade',
  'proxy-connection',
  'content-length',
  'trailer',
  'expect',
  'http2-settings',
]);

/** Every recorded exchange in `files`, ordered by start time. */
export function readRecordings(files: readonly string[]): RecordedExchange[] {
  const all: RecordedExchange[] = [];
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      if (line.trim() === '') return;
      let rec: RecordedExchange;
      try {
        rec = JSON.parse(line) as RecordedExchange;
      } catch (err) {
        throw new Error(`${file}:${i + 1}: not a JSON line: ${(err as Error).message}`, { cause: err });
      }
      if (typeof rec.t !== 'number' || typeof rec.method !== 'string' || typeof rec.path !== 'string')
        throw new Error(`${file}:${i + 1}: expected a recorded exchange (t, method, path)`);
      all.push(rec);
    });
  }
  return all.sort((a, b) => a.t - b.t);
}

/** What autocannon sends for a recorded exchange. */
export function requestOf(rec: RecordedExchange): autocannon.Request {
  const headers: Record<string, string> = {};
  for (const [name, value] of rec.headers ?? []) {
    const lower = name.toLowerCase();
    if (DROPPED.has(lower) || value === REDACTED) continue;
    headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value;
  }
  const body = rec.body === undefined ? undefined : Buffer.from(rec.body, 'base64');
  return {
    method: rec.method as autocannon.Request['method'],
    path: rec.path,
    headers,
    ...(body === undefined ? {} : { body }),
  };
}

interface Planned {
  /** Milliseconds after the start. */
  at: number;
  route: string;
  request: autocannon.Request;
}

/** The schedule: each request's intended start. */
export function plan(
  records: readonly RecordedExchange[],
  options: Pick<ReplayOptions, 'speed' | 'rate' | 'duration'>,
): Planned[] {
  if (records.length === 0) return [];
  const out: Planned[] = [];
  const requests = records.map(requestOf);
  if (options.rate !== undefined) {
    const count = options.duration === undefined ? records.length : Math.floor(options.rate * options.duration);
    for (let i = 0; i < count; i++) {
      const r = i % records.length;
      out.push({ at: (i * 1000) / options.rate, route: records[r].route ?? '-', request: requests[r] });
    }
    return out;
  }
  const speed = options.speed ?? 1;
  const t0 = records[0].t;
  const limit = options.duration === undefined ? Infinity : options.duration * 1000;
  records.forEach((rec, i) => {
    const at = (rec.t - t0) / speed;
    if (at < limit) out.push({ at, route: rec.route ?? '-', request: requests[i] });
  });
  return out;
}

/** Latencies of one route (or all), in milliseconds from the intended start. */
class Samples {
  latencies: number[] = [];
  errors = 0;
  non2xx = 0;

  stats(seconds: number): LatencyStats {
    const sorted = Float64Array.from(this.latencies).sort();
    const at = (q: number) =>
      sorted.length === 0 ? 0 : round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
    return {
      requests: sorted.length,
      rps: seconds > 0 ? round(sorted.length / seconds) : 0,
      p50: at(0.5),
      p90: at(0.9),
      p99: at(0.99),
      max: sorted.length === 0 ? 0 : round(sorted[sorted.length - 1]),
      errors: this.errors,
      non2xx: this.non2xx,
    };
  }
}

/** The client's private send, which the schedule takes over (autocannon 8: lib/httpClient.js). */
type Sender = autocannon.Client & { _doRequest: (this: unknown, ...args: unknown[]) => unknown };

export async function replay(options: ReplayOptions): Promise<ReplayResult> {
  const records = readRecordings(options.files);
  if (records.length === 0) throw new Error(`no recorded exchanges in ${options.files.join(', ')}`);
  const schedule = plan(records, options);
  const span = schedule.length === 0 ? 0 : schedule[schedule.length - 1].at;
  const requestedRate = options.rate ?? (schedule.length > 1 ? ((schedule.length - 1) * 1000) / span : schedule.length);
  const total = new Samples();
  const byRoute = new Map<string, Samples>();
  const routeOf = (name: string): Samples => {
    let s = byRoute.get(name);
    if (s === undefined) byRoute.set(name, (s = new Samples()));
    return s;
  };

  const idle: Sender[] = [];
  /** Per client, the request it has in flight: its intended start and route. */
  const inFlight = new Map<Sender, { at: number; route: string }>();
  const sends = new Map<Sender, (this: unknown, ...args: unknown[]) => unknown>();
  let next = 0;
  let answered = 0;
  let lastSend = 0;
  let start = 0;
  let timer: NodeJS.Timeout | null = null;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));

  const settle = (client: Sender, status: number | null): void => {
    const f = inFlight.get(client);
    if (f === undefined) return;
    inFlight.delete(client);
    answered++;
    const s = routeOf(f.route);
    if (status === null) {
      s.errors++;
      total.errors++;
    } else {
      const latency = performance.now() - start - f.at;
      s.latencies.push(latency);
      total.latencies.push(latency);
      if (status < 200 || status >= 300) {
        s.non2xx++;
        total.non2xx++;
      }
    }
    if (answered === schedule.length) finish();
  };

  /** Sends every request that is due on an idle connection; then sleeps until the next is due. */
  const pump = (): void => {
    timer = null;
    const now = performance.now() - start;
    while (next < schedule.length && schedule[next].at <= now && idle.length > 0) {
      const p = schedule[next++];
      const client = idle.pop()!;
      inFlight.set(client, { at: p.at, route: p.route });
      lastSend = now;
      client.setRequests([p.request]);
      sends.get(client)!.call(client);
    }
    if (next < schedule.length && idle.length > 0)
      timer = setTimeout(pump, Math.max(0, schedule[next].at - (performance.now() - start)));
  };

  let ended: () => void = () => undefined;
  const bounded = new Promise<void>((resolve) => (ended = resolve));
  const instance = autocannon(
    {
      url: options.target,
      connections: options.connections,
      pipelining: 1,
      // Stopped by the schedule; this only bounds a run whose target never answers.
      duration: Math.ceil(span / 1000 + options.timeout + 5),
      timeout: options.timeout,
      setupClient: (c) => {
        const client = c as Sender;
        const send = client._doRequest;
        if (typeof send !== 'function')
          throw new Error("replay: autocannon's client has no _doRequest; this autocannon version is not supported");
        sends.set(client, send);
        // autocannon sends whenever a connection is free; the schedule decides instead.
        client._doRequest = function (): undefined {
          // Called when a response completed (already settled), and on every (re)connect: a request
          // still in flight then was lost with its connection.
          if (inFlight.has(client)) settle(client, null);
          if (!idle.includes(client)) idle.push(client);
          if (start !== 0 && timer === null) pump();
          return undefined;
        };
        client.on('response', (status: number) => settle(client, status));
        const events = client as unknown as NodeJS.EventEmitter;
        events.on('timeout', () => settle(client, null));
        events.on('connError', () => settle(client, null));
      },
    },
    // Its own totals are not the replay's: the schedule's latencies are (see settle).
    () => ended(),
  );
  start = performance.now();
  pump();
  await Promise.race([finished, bounded]);
  if (timer !== null) clearTimeout(timer);
  const seconds = (performance.now() - start) / 1000;
  instance.stop();
  // Requests never answered (the run's bound passed) are errors.
  for (const client of [...inFlight.keys()]) settle(client, null);
  const unsent = schedule.length - next;
  total.errors += unsent;
  const sentSpan = (lastSend + (requestedRate > 0 ? 1000 / requestedRate : 0)) / 1000;
  const routes: Record<string, LatencyStats> = {};
  for (const [name, s] of [...byRoute].sort(([a], [b]) => a.localeCompare(b))) routes[name] = s.stats(seconds);
  return {
    target: options.target,
    mode: options.rate !== undefined ? `rate ${options.rate}/s` : `speed ${options.speed ?? 1}x`,
    requestedRate: round(requestedRate),
    achievedRate: round(sentSpan > 0 ? next / sentSpan : 0),
    seconds: round(seconds),
    total: total.stats(seconds),
    routes,
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** The result as a table: one row per route and a total, with the change from `previous` when given. */
export function formatReplay(result: ReplayResult, previous?: ReplayResult): string {
  const header = [
    'route',
    'requests',
    'req/s',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'max ms',
    'errors',
    'non-2xx',
    ...(previous ? ['p99 vs saved'] : []),
  ];
  const rows: string[][] = [header];
  const row = (name: string, s: LatencyStats, before: LatencyStats | undefined): string[] => [
    name,
    String(s.requests),
    s.rps.toFixed(1),
    s.p50.toFixed(1),
    s.p90.toFixed(1),
    s.p99.toFixed(1),
    s.max.toFixed(1),
    String(s.errors),
    String(s.non2xx),
    ...(previous
      ? [
          before === undefined || before.p99 === 0
            ? 'n/a'
            : `${s.p99 >= before.p99 ? '+' : ''}${(((s.p99 - before.p99) / before.p99) * 100).toFixed(1)}%`,
        ]
      : []),
  ];
  for (const [name, s] of Object.entries(result.routes)) rows.push(row(name, s, previous?.routes[name]));
  rows.push(row('(all)', result.total, previous?.total));
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [
    `${result.mode} against ${result.target}: ${result.achievedRate} req/s sent of ${result.requestedRate} asked for, over ${result.seconds} s`,
    line(rows[0]),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}
