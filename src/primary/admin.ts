/**
 * The admin listener, in the primary, on its own address (loopback unless told otherwise):
 * /metrics (Prometheus text, every worker's metrics aggregated over IPC, plus the primary's own),
 * /healthz (the primary is alive), /readyz (every worker listens and nothing is stopping),
 * /upstreams (every pool's members and their health, as the workers route by them) and /faults
 * (the injected faults, read and changed live: faults.ts).
 */
import * as http from 'node:http';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { formatHostPort } from '../config/schema';
import { errField, type Logger } from '../log';
import type { MembershipSnapshot } from '../upstream/membership';
import { MAX_FAULT_BODY, type FaultAnswer } from './faults';

/** The /faults endpoints: `name` null for /faults itself. */
export type FaultsEndpoint = (method: string, name: string | null, body: string) => Promise<FaultAnswer>;

export interface Readiness {
  ready: boolean;
  detail: string;
}

export class AdminServer {
  private readonly server: http.Server;
  private readonly aggregator = new AggregatorRegistry();
  private readonly own = new Registry();
  readonly workerRestarts: Counter;

  constructor(
    private readonly readiness: () => Readiness,
    private readonly members: () => MembershipSnapshot,
    private readonly logger: Logger,
    private readonly faults: FaultsEndpoint | null = null,
  ) {
    this.workerRestarts = new Counter({
      name: 'switchyard_worker_restarts_total',
      help: 'Workers that died and were replaced.',
      registers: [this.own],
    });
    new Gauge({
      name: 'switchyard_upstream_up',
      help: 'Whether a pool member takes traffic (1) or is down by its health checks or ejected (0).',
      labelNames: ['pool', 'upstream'],
      registers: [this.own],
      collect() {
        this.reset();
        for (const [pool, list] of Object.entries(members())) {
          for (const m of list) this.set({ pool, upstream: m.url }, m.healthy ? 1 : 0);
        }
      },
    });
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  listen(host: string, port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a !== null ? formatHostPort(a.address, a.port) : `${host}:${port}`);
      });
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, {
        'content-type': type,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (this.faults !== null && (path === '/faults' || path.startsWith('/faults/'))) {
      await this.faultsRequest(req, path, send);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'method not allowed\n');
      return;
    }
    switch (path) {
      case '/healthz':
        send(200, 'ok\n');
        return;
      case '/readyz': {
        const r = this.readiness();
        send(r.ready ? 200 : 503, `${r.ready ? 'ready' : 'not ready'}: ${r.detail}\n`);
        return;
      }
      case '/metrics':
        try {
          const workers = await this.aggregator.clusterMetrics();
          const own = await this.own.metrics();
          send(200, `${workers}\n${own}`, this.aggregator.contentType);
        } catch (err) {
          this.logger.warn({ err: errField(err) }, 'metrics: collecting from the workers failed');
          send(500, `metrics unavailable: ${(err as Error).message}\n`);
        }
        return;
      case '/upstreams': {
        const pools = Object.entries(this.members()).map(([pool, list]) => ({
          pool,
          members: list.map((m) => ({ url: m.url, weight: m.weight, healthy: m.healthy })),
        }));
        send(200, `${JSON.stringify({ pools }, null, 2)}\n`, 'application/json');
        return;
      }
      default:
        send(404, 'not found: try /metrics, /healthz, /readyz, /upstreams or /faults\n');
    }
  }

  private async faultsRequest(
    req: http.IncomingMessage,
    path: string,
    send: (status: number, body: string, type?: string) => void,
  ): Promise<void> {
    const json = (status: number, body: unknown): void =>
      send(status, `${JSON.stringify(body, null, 2)}\n`, 'application/json');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_FAULT_BODY) {
        json(413, { error: `the body is larger than ${MAX_FAULT_BODY} bytes` });
        req.destroy();
        return;
      }
      chunks.push(chunk);
    }
    let name: string | null;
    try {
      name = path === '/faults' ? null : decodeURIComponent(path.slice('/faults/'.length));
    } catch {
      json(400, { error: `fault name: got ${JSON.stringify(path.slice('/faults/'.length))}; expected a name` });
      return;
    }
    try {
      const answer = await this.faults!(req.method ?? 'GET', name, Buffer.concat(chunks).toString('utf8'));
      json(answer.status, answer.body);
    } catch (err) {
      this.logger.error({ err: errField(err) }, 'faults: the admin request failed');
      json(500, { error: (err as Error).message });
    }
  }
}
