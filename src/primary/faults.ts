/**
 * The fault table in the primary (docs/load-testing.md): the routes' `faults`, with what the admin
 * API set on top, and the admin API itself (`GET /faults`, `PUT /faults/NAME`, `DELETE
 * /faults/NAME`, `DELETE /faults`). Every change goes to every worker, and the answer waits until
 * all have applied it (supervisor.ts: publishFaults).
 */
import { configFaults, describeIssues, type FaultEntry, type ResolvedConfig } from '../config/load';
import { FAULT_NAME, FaultSchema, type FaultConfig } from '../config/schema';
import type { Logger } from '../log';

/** What the admin API answers: a status and a JSON body. */
export interface FaultAnswer {
  status: number;
  body: unknown;
}

/** Sends the table as it is now to every worker; resolves once all have it (or did not answer in time). */
export type FaultPublisher = () => Promise<{ workers: number; missing: number[] }>;

/** Largest PUT body: a fault is a few hundred bytes. */
export const MAX_FAULT_BODY = 64 * 1024;

export class FaultTable {
  /**
   * Set through the API, by name: a fault, or null for a route's fault switched off. Overrides of
   * the routes' faults last until the configuration changes (a reload); the API's own stay.
   */
  private readonly api = new Map<string, FaultConfig | null>();
  /** The configuration the table was last worked out for. */
  private base: ResolvedConfig;

  /** `configOf`: the configuration served now (a reload replaces it, and may put it back). */
  constructor(
    private readonly configOf: () => ResolvedConfig,
    private readonly logger: Logger,
  ) {
    this.base = configOf();
  }

  /** The table the workers of the configuration served now apply. */
  entries(): FaultEntry[] {
    const config = this.configOf();
    this.rebase(config);
    const fromConfig = configFaults(config);
    const out: FaultEntry[] = fromConfig.filter((e) => !this.api.has(e.name));
    for (const [name, spec] of this.api) {
      if (spec === null) continue;
      const route = spec.route === undefined ? null : routeIndex(config, spec.route);
      if (route === undefined) {
        this.logger.warn(
          { fault: name, route: spec.route },
          'fault: its route is gone from the configuration; not applied',
        );
        continue;
      }
      out.push({ name, route, spec });
    }
    return out;
  }

  /** A new configuration: the routes' faults are as it says again. */
  private rebase(config: ResolvedConfig): void {
    if (config === this.base) return;
    this.base = config;
    for (const e of configFaults(config)) this.api.delete(e.name);
  }

  /** GET /faults: every fault applied now, by name, with where it came from. */
  list(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const entries = this.entries();
    const config = new Set(configFaults(this.base).map((e) => e.name));
    for (const e of entries) {
      const route = e.route === null ? undefined : (this.base.routes[e.route].name ?? String(e.route));
      out[e.name] = {
        ...e.spec,
        ...(route === undefined ? {} : { route }),
        source: this.api.has(e.name) || !config.has(e.name) ? 'api' : 'config',
      };
    }
    return out;
  }

  /** The admin API's faults endpoints. `name` is null for /faults itself. */
  async handle(method: string, name: string | null, body: string, publish: FaultPublisher): Promise<FaultAnswer> {
    this.rebase(this.configOf());
    if (name === null) {
      if (method === 'GET' || method === 'HEAD') return { status: 200, body: { faults: this.list() } };
      if (method !== 'DELETE') return methodNotAllowed('GET, HEAD, DELETE');
      this.api.clear();
      for (const e of configFaults(this.base)) this.api.set(e.name, null);
      return this.published(publish, { reset: true });
    }
    if (!FAULT_NAME.test(name))
      return error(400, `fault name: got ${JSON.stringify(name)}; expected 1 to 64 letters, digits, _ . -`);
    if (method === 'GET' || method === 'HEAD') {
      const fault = this.list()[name];
      return fault === undefined ? error(404, `no fault named ${JSON.stringify(name)}`) : { status: 200, body: fault };
    }
    if (method === 'DELETE') {
      if (this.list()[name] === undefined) return error(404, `no fault named ${JSON.stringify(name)}`);
      if (configFaults(this.base).some((e) => e.name === name)) this.api.set(name, null);
      else this.api.delete(name);
      return this.published(publish, { deleted: name });
    }
    if (method !== 'PUT') return methodNotAllowed('GET, HEAD, PUT, DELETE');
    let raw: unknown;
    try {
      raw = JSON.parse(body);
    } catch (err) {
      return error(400, `faults.${name}: the body is not JSON: ${(err as Error).message}`);
    }
    const parsed = FaultSchema.safeParse(raw, { reportInput: true });
    if (!parsed.success) return error(400, describeIssues(parsed.error, ['faults', name]).join('\n'));
    const spec = parsed.data;
    if (spec.route !== undefined && routeIndex(this.base, spec.route) === undefined) {
      const names = this.base.routes.map((r, i) => r.name ?? String(i));
      return error(
        400,
        `faults.${name}.route: got ${JSON.stringify(spec.route)}; expected a route's name: ${names.join(', ')}`,
      );
    }
    this.api.set(name, spec);
    return this.published(publish, { name, fault: this.list()[name] });
  }

  private async published(publish: FaultPublisher, what: Record<string, unknown>): Promise<FaultAnswer> {
    const { workers, missing } = await publish();
    if (missing.length > 0) {
      return {
        status: 504,
        body: { ...what, workers, missing, error: `workers ${missing.join(', ')} did not apply the change in time` },
      };
    }
    return { status: 200, body: { ...what, workers } };
  }
}

/** A route by its `name`, or by its index when it has none; undefined when there is no such route. */
function routeIndex(config: ResolvedConfig, route: string): number | undefined {
  const named = config.routes.findIndex((r) => r.name === route);
  if (named !== -1) return named;
  const i = /^\d+$/.test(route) ? Number(route) : -1;
  return i >= 0 && i < config.routes.length && config.routes[i].name === undefined ? i : undefined;
}

function error(status: number, message: string): FaultAnswer {
  return { status, body: { error: message } };
}

function methodNotAllowed(allow: string): FaultAnswer {
  return { status: 405, body: { error: `method not allowed; expected ${allow}` } };
}
