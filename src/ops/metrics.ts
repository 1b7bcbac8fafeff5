/**
 * Worker-side Prometheus metrics, in prom-client's default registry. The primary aggregates every
 * worker's registry over IPC (prom-client's AggregatorRegistry: counters and histograms summed),
 * so /metrics shows the whole cluster, not one process.
 *
 * On the hot path a request costs a counter increment and two histogram observations, into plain
 * numbers (PlainCounter, PlainHistogram below); pool and connection gauges are read only when
 * Prometheus scrapes.
 */
import * as client from 'prom-client';
import { promDefaultMetric } from '../node-internals';

export interface PoolView {
  origin: string;
  pool: string;
  stats(): { open: number; idle: number; pending: number };
}

const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** Seconds: 0.5 ms to 30 s, the range a proxy's latencies span. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The shape prom-client's registry and cluster aggregator read from a metric. */
interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/**
 * A counter or histogram recorded into plain numbers, registered with prom-client as a custom
 * metric: scrapes and cluster aggregation are prom-client's, the hot path is an array increment.
 * prom-client's own observe() hashes the label set on every call, several times what the rest of
 * recording costs (docs/performance.md).
 */
abstract class PlainMetric<S> {
  readonly aggregator = 'sum';
  abstract readonly type: 'counter' | 'histogram';
  protected readonly bySeries = new Map<string, S>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {
    client.register.registerMetric(this as unknown as client.Metric);
  }

  /** The series for a label set, made on first use: callers keep it and update it directly. */
  series(labels: Record<string, string>): S {
    const key = JSON.stringify(labels);
    let s = this.bySeries.get(key);
    if (s === undefined) {
      s = this.create(labels);
      this.bySeries.set(key, s);
    }
    return s;
  }

  protected abstract create(labels: Record<string, string>): S;

  abstract values(): MetricValue[];

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  reset(): void {
    // Counters restart with the process; prom-client's registry-wide reset is not used here.
  }
}

export class PlainCounter extends PlainMetric<{ labels: Record<string, string>; value: number }> {
  readonly type = 'counter';

  protected create(labels: Record<string, string>): { labels: Record<string, string>; value: number } {
    return { labels, value: 0 };
  }

  values(): MetricValue[] {
    return [...this.bySeries.values()].map((s) => ({ labels: s.labels, value: s.value }));
  }
}

export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    private readonly bounds: readonly number[],
    readonly labels: Record<string, string>,
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(v: number): void {
    const b = this.bounds;
    // Most observations fall in the first few buckets: a forward scan beats a binary search here.
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += v;
    this.count++;
  }
}

export class PlainHistogram extends PlainMetric<HistogramSeries> {
  readonly type = 'histogram';

  constructor(
    name: string,
    help: string,
    private readonly bounds: readonly number[],
  ) {
    super(name, help);
  }

  protected create(labels: Record<string, string>): HistogramSeries {
    return new HistogramSeries(this.bounds, labels);
  }

  values(): MetricValue[] {
    const out: MetricValue[] = [];
    for (const s of this.bySeries.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i];
        out.push({ labels: { le, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      out.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      out.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      out.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return out;
  }
}

/**
 * prom-client's default metrics, less `nodejs_gc_duration_seconds`. That one watches every
 * collection through a `gc` PerformanceObserver, and on a busy worker the observer alone (even an
 * empty one) lengthens the tail of every request (docs/performance.md), for a figure `--trace-gc`
 * gives when it is wanted.
 * prom-client has no switch for one default metric, but each is a file of its own under
 * lib/metrics (the package has no exports map), named in `metricsList`.
 */
function collectProcessMetrics(): void {
  const names = client.collectDefaultMetrics.metricsList.filter((name) => name !== 'gc');
  const collectors = names.map(promDefaultMetric);
  if (collectors.some((c) => c === null)) {
    // The package's layout changed: all of them, the GC observer included, rather than none.
    client.collectDefaultMetrics({ eventLoopMonitoringPrecision: 10 });
    return;
  }
  for (const collect of collectors) collect!(undefined, { eventLoopMonitoringPrecision: 10 });
}

export class RequestMetrics {
  private readonly requests: PlainCounter;
  private readonly duration: HistogramSeries;
  private readonly upstreamDuration: PlainHistogram;
  private readonly byUpstream = new Map<string, { classes: Array<{ value: number }>; timing: HistogramSeries }>();
  private readonly transforms: client.Counter<'outcome'>;
  private readonly accessLogErrors: client.Counter;
  private readonly faults: PlainCounter;
  private readonly mirrors: PlainCounter;
  private readonly mirrorCompared: PlainCounter;

  /** `pools`: read at each scrape, since members come and go (DNS, reloads). */
  constructor(pools: () => readonly PoolView[], clientConnections: () => number) {
    // prom-client attaches the worker's answer to the primary's metrics requests only when an
    // AggregatorRegistry is constructed, in the worker as in the primary.
    new client.AggregatorRegistry();
    collectProcessMetrics();
    this.requests = new PlainCounter(
      'switchyard_requests_total',
      'Requests answered, by status class and upstream (499: the client left first).',
    );
    this.duration = new PlainHistogram(
      'switchyard_request_duration_seconds',
      'Time from the request head to the end of the response.',
      BUCKETS,
    ).series({});
    this.upstreamDuration = new PlainHistogram(
      'switchyard_upstream_response_seconds',
      "Time until the upstream's response head, by upstream.",
      BUCKETS,
    );
    const gauge = (name: string, help: string, read: (s: ReturnType<PoolView['stats']>) => number): void => {
      new client.Gauge({
        name,
        help,
        labelNames: ['pool', 'upstream'],
        collect() {
          this.reset();
          for (const p of pools()) this.set({ pool: p.pool, upstream: p.origin }, read(p.stats()));
        },
      });
    };
    gauge('switchyard_upstream_connections_open', 'Upstream connections open (busy and idle).', (s) => s.open);
    gauge('switchyard_upstream_connections_idle', 'Upstream connections idle in the pool.', (s) => s.idle);
    gauge('switchyard_upstream_requests_pending', 'Requests waiting for an upstream connection.', (s) => s.pending);
    this.transforms = new client.Counter({
      name: 'switchyard_transforms_total',
      help: 'Response bodies that met a transform, by outcome (transformed, unchanged, too_large, overload_pass, overload_reject, failed, undecodable).',
      labelNames: ['outcome'],
    });
    this.faults = new PlainCounter(
      'switchyard_faults_injected_total',
      'Injected faults that hit a request, by fault name ("header" for X-Switchyard-Fault-* fields) and kind.',
    );
    this.mirrors = new PlainCounter(
      'switchyard_mirror_requests_total',
      'Copies of requests for a shadow pool (`mirror`), by route and outcome: answered, failed, timeout, dropped (maxInFlight reached), too_large (body over maxBodySize), incomplete (the client body never came whole).',
    );
    this.mirrorCompared = new PlainCounter(
      'switchyard_mirror_compared_total',
      'Shadow answers compared with the main one (`mirror.compare`), by route and result: match or mismatch.',
    );
    this.accessLogErrors = new client.Counter({
      name: 'switchyard_access_log_errors_total',
      help: 'Access log writes that failed (disk full, I/O error); their lines are lost.',
    });
    new client.Gauge({
      name: 'switchyard_client_connections',
      help: 'Client connections open.',
      collect() {
        this.set(clientConnections());
      },
    });
  }

  /** Series per upstream, made on first use and kept: the hot path is a Map lookup and increments. */
  private seriesFor(upstream: string): { classes: Array<{ value: number }>; timing: HistogramSeries } {
    let u = this.byUpstream.get(upstream);
    if (u === undefined) {
      u = {
        classes: CLASSES.map((c) => this.requests.series({ code_class: c, upstream })),
        timing: this.upstreamDuration.series({ upstream }),
      };
      this.byUpstream.set(upstream, u);
    }
    return u;
  }

  countAccessLogError(): void {
    this.accessLogErrors.inc();
  }

  countFault(name: string, kind: string): void {
    this.faults.series({ name, kind }).value++;
  }

  countMirror(route: string, outcome: string): void {
    this.mirrors.series({ route, outcome }).value++;
  }

  countMirrorCompared(route: string, match: boolean): void {
    this.mirrorCompared.series({ route, result: match ? 'match' : 'mismatch' }).value++;
  }

  countTransform(outcome: string): void {
    this.transforms.inc({ outcome });
  }

  /** `durationMs` total; `upstreamMs` until the upstream's head, when one came. */
  record(status: number, upstream: string | undefined, durationMs: number, upstreamMs: number | undefined): void {
    this.duration.observe(durationMs / 1000);
    const i = Math.floor(status / 100) - 1;
    // 499 (the client left) is counted apart from the 4xx the proxy or upstream answered.
    const plain = i >= 0 && i < 5 && status !== 499;
    if (upstream === undefined) {
      this.requests.series({ code_class: classOf(status), upstream: 'none' }).value++;
      return;
    }
    const u = this.seriesFor(upstream);
    if (plain) u.classes[i].value++;
    else this.requests.series({ code_class: classOf(status), upstream }).value++;
    if (upstreamMs !== undefined) u.timing.observe(upstreamMs / 1000);
  }
}

function classOf(status: number): string {
  return status === 499 ? '499' : `${Math.floor(status / 100)}xx`;
}
