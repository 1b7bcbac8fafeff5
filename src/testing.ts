/**
 * `switchyard/testing`: a typed client of the admin API's /faults, for test suites that inject
 * faults into a running switchyard (docs/load-testing.md):
 *
 *   const faults = new FaultsClient('http://127.0.0.1:9090');
 *   await faults.set('slow-db', { route: 'api', delay: { p50: 200, p99: 900 }, percent: 25 });
 *   ...
 *   await faults.reset();
 *
 * Each call resolves once every worker applies the change.
 */
import type { z } from 'zod';
import type { FaultSchema } from './config/schema';

/** A fault as PUT /faults/NAME takes it (defaults may be left out). */
export type FaultSpec = z.input<typeof FaultSchema>;

/** A fault as GET /faults shows it: defaults filled in, and where it came from. */
export type FaultView = z.output<typeof FaultSchema> & { source: 'config' | 'api' };

/** The admin API refused a call, or not every worker applied it in time (504). */
export class FaultsApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'FaultsApiError';
  }
}

export class FaultsClient {
  private readonly base: string;

  /** `admin`: the admin listener's URL, e.g. http://127.0.0.1:9090 (`admin.listen`). */
  constructor(admin: string) {
    this.base = admin.replace(/\/+$/, '');
  }

  /** Every fault applied now, by name. */
  async list(): Promise<Record<string, FaultView>> {
    return ((await this.call('GET', '/faults')) as { faults: Record<string, FaultView> }).faults;
  }

  /** Set (or replace) the fault `name` on every worker; resolves with it as applied, and how many workers have it. */
  async set(name: string, fault: FaultSpec): Promise<{ fault: FaultView; workers: number }> {
    const answer = (await this.call('PUT', `/faults/${encodeURIComponent(name)}`, fault)) as {
      fault: FaultView;
      workers: number;
    };
    return { fault: answer.fault, workers: answer.workers };
  }

  /** Remove the fault `name` (a route's own fault is switched off until the next reload). */
  async delete(name: string): Promise<void> {
    await this.call('DELETE', `/faults/${encodeURIComponent(name)}`);
  }

  /** No faults at all, on every worker. */
  async reset(): Promise<void> {
    await this.call('DELETE', '/faults');
  }

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(this.base + path, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    const answer = (await res.json().catch(() => ({}))) as { error?: string };
    if (!res.ok) throw new FaultsApiError(res.status, answer.error ?? `${method} ${path}: ${res.status}`);
    return answer;
  }
}
