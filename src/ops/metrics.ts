/**
 * Worker-side Prometheus metrics, in prom-client's default registry. The primary aggregates every
 * worker's registry over IPC (prom-client's AggregatorRegistry: counters and histograms summed),
 * so /metrics shows the whole cluster, not one process.
 *
 * On the hot path a request costs one cached-child increment and two histogram observations;
 * pool and connection gauges are read only when Prometheus scrapes.
 */
import * as client from 'prom-client';

export interface PoolView {
  origin: string;
  pool: string;
  stats(): { open: number; idle: number; pending: number };
}

const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** Seconds: 0.5 ms to 30 s, the range a proxy's latencies span. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class RequestMetrics {
  private readonly requests: client.Counter<'code_class' | 'upstream'>;
  private readonly duration: client.Histogram;
  private readonly upstreamDuration: client.Histogram<'upstream'>;
  private readonly byUpstream = new Map<string, { classes: Array<{ inc(): void }>; timing: { observe(v: number): void } }>();

  private readonly transforms: client.Counter<'outcome'>;

  /** `pools`: read at each scrape, since members come and go (DNS, reloads). */
  constructor(pools: () => readonly PoolView[], clientConnections: () => number) {
    // prom-client attaches the worker's answer to the primary's metrics requests only when an
    // AggregatorRegistry is constructed, in the worker as in the primary.
    new client.AggregatorRegistry();
    client.collectDefaultMetrics();
    this.requests = new client.Counter({
      name: 'switchyard_requests_total',
      help: 'Requests answered, by status class and upstream (499: the client left first).',
      labelNames: ['code_class', 'upstream'],
    });
    this.duration = new client.Histogram({
      name: 'switchyard_request_duration_seconds',
      help: 'Time from the request head to the end of the response.',
      buckets: BUCKETS,
    });
    this.upstreamDuration = new client.Histogram({
      name: 'switchyard_upstream_response_seconds',
      help: 'Time until the upstream\'s response head, by upstream.',
      labelNames: ['upstream'],
      buckets: BUCKETS,
    });
    const gauge = (name: string, help: string, read: (s: ReturnType<PoolView['stats']>) => number): void => {
      new client.Gauge({
        name, help, labelNames: ['pool', 'upstream'],
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
    new client.Gauge({
      name: 'switchyard_client_connections',
      help: 'Client connections open.',
      collect() { this.set(clientConnections()); },
    });
  }

  /** Label children per upstream, made on first use and kept: a hot-path lookup, not a labels() call. */
  private childrenFor(upstream: string): { classes: Array<{ inc(): void }>; timing: { observe(v: number): void } } {
    let u = this.byUpstream.get(upstream);
    if (u === undefined) {
      u = {
        classes: CLASSES.map((c) => this.requests.labels(c, upstream)),
        timing: this.upstreamDuration.labels(upstream),
      };
      this.byUpstream.set(upstream, u);
    }
    return u;
  }

  countTransform(outcome: string): void {
    this.transforms.inc({ outcome });
  }

  /** `durationMs` total; `upstreamMs` until the upstream's head, when one came. */
  record(status: number, upstream: string | undefined, durationMs: number, upstreamMs: number | undefined): void {
    this.duration.observe(durationMs / 1000);
    if (upstream === undefined) {
      this.requests.inc({ code_class: classOf(status), upstream: 'none' });
      return;
    }
    const u = this.childrenFor(upstream);
    const i = Math.floor(status / 100) - 1;
    // 499 (the client left) is counted apart from the 4xx the proxy or upstream answered.
    if (i >= 0 && i < 5 && status !== 499) u.classes[i]!.inc();
    else this.requests.inc({ code_class: classOf(status), upstream });
    if (upstreamMs !== undefined) u.timing.observe(upstreamMs / 1000);
  }
}

function classOf(status: number): string {
  return status === 499 ? '499' : `${Math.floor(status / 100)}xx`;
}
