/**
 * The faults a worker injects (docs/load-testing.md): the table the primary sends (a route's
 * `faults` and the admin API's), and for each request the plan of what hits it. Each fault rolls
 * its own percentage from its own random source, seeded when the fault says so. With no fault and
 * no header triggers, `active` is false and a request pays one field read.
 */
import { BadRequestError } from '../errors';
import { findHeader } from '../http1/fields';
import type { FaultConfig } from '../config/schema';
import type { FaultEntry } from '../config/load';
import type { TrustedProxies } from './headers';
import { RequestMatcher, type Route } from './router';

/** What happens to the answer, once the upstream gave one. */
export interface ResponseFaults {
  /** Milliseconds the response head is held; 0 for none. */
  delay: number;
  /** The upstream's answer is thrown away and this status sent instead; 0 for none. */
  abort: number;
  /** The upstream's answer is thrown away and the client connection reset. */
  reset: boolean;
  /** Body bytes per second at most; 0 for no limit. */
  bandwidth: number;
  /** Body bytes sent before the connection is cut; -1 for all. */
  partial: number;
  /** The head is sent, the body withheld until timeouts.idle. */
  stall: boolean;
}

/** What hits one request. */
export interface FaultPlan {
  /** `name:kind` of every fault that hit, for the access log. */
  mark: string;
  /** Milliseconds the request is held before anything else; 0 for none. */
  delay: number;
  /** The proxy answers with this status instead of calling the upstream; 0 for none. */
  abort: number;
  /** The client connection is reset instead of calling the upstream. */
  reset: boolean;
  /** No upstream is called, and no answer comes before timeouts.responseHeader (504). */
  stall: boolean;
  response: ResponseFaults | null;
}

type Kind = 'delay' | 'abort' | 'bandwidth' | 'partial' | 'stall';

/** z for the 99th percentile of the standard normal distribution. */
const Z99 = 2.3263478740408408;
/** A drawn delay never exceeds this many times its p99. */
const MAX_DELAY_P99S = 10;

/** The request fields a trusted client may ask for faults with (`faultHeaders`). */
export const FAULT_HEADERS = {
  delay: 'x-switchyard-fault-delay',
  abort: 'x-switchyard-fault-abort',
  bandwidth: 'x-switchyard-fault-bandwidth',
} as const;

/** mulberry32: a small, fast, well-distributed 32-bit generator; enough to decide hits and draw delays. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A delay from the log-normal distribution with median `p50` and 99th percentile `p99`
 * (Box-Muller from two uniform draws), capped at MAX_DELAY_P99S × p99.
 */
export function logNormalDelay(p50: number, p99: number, random: () => number): number {
  const sigma = Math.log(p99 / p50) / Z99;
  const u = 1 - random(); // (0, 1]: log(0) would be -Infinity
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  return Math.min(Math.round(p50 * Math.exp(sigma * z)), p99 * MAX_DELAY_P99S);
}

class Fault {
  readonly kind: Kind;
  readonly side: 'request' | 'response';
  private readonly match: RequestMatcher | null;
  private readonly threshold: number;
  private readonly random: () => number;
  /** `name:kind`, for the access log. */
  readonly mark: string;

  constructor(
    readonly name: string,
    private readonly spec: FaultConfig,
    workerIndex: number,
  ) {
    this.kind = (['delay', 'abort', 'bandwidth', 'partial', 'stall'] as const).find((k) => spec[k] !== undefined)!;
    this.side = spec.side ?? (this.kind === 'bandwidth' || this.kind === 'partial' ? 'response' : 'request');
    this.match = spec.match === undefined ? null : new RequestMatcher(spec.match);
    this.threshold = spec.percent / 100;
    // Each worker its own sequence: two workers with one seed would hit the same requests' turns.
    this.random = spec.seed === undefined ? Math.random : seededRandom(spec.seed + workerIndex * 0x9e3779b9);
    this.mark = `${name}:${this.kind}`;
  }

  /** Whether it hits this request: the match, then the roll (rolled only for matching requests). */
  hits(path: string, method: string, raw: readonly string[]): boolean {
    if (this.match !== null && !this.match.matches(path, method, raw)) return false;
    return this.threshold >= 1 || this.random() < this.threshold;
  }

  delayMs(): number {
    const d = this.spec.delay!;
    return typeof d === 'number' ? d : logNormalDelay(d.p50, d.p99, this.random);
  }

  /** Adds this fault's effect to `plan`. */
  applyTo(plan: FaultPlan): void {
    const spec = this.spec;
    if (this.side === 'request') {
      if (this.kind === 'delay') plan.delay += this.delayMs();
      else if (this.kind === 'stall') plan.stall = true;
      else if (spec.abort!.reset === true) plan.reset = true;
      else if (plan.abort === 0) plan.abort = spec.abort!.status!;
      return;
    }
    const r = responseOf(plan);
    switch (this.kind) {
      case 'delay':
        r.delay += this.delayMs();
        break;
      case 'abort':
        if (spec.abort!.reset === true) r.reset = true;
        else if (r.abort === 0) r.abort = spec.abort!.status!;
        break;
      case 'bandwidth':
        r.bandwidth = r.bandwidth === 0 ? spec.bandwidth! : Math.min(r.bandwidth, spec.bandwidth!);
        break;
      case 'partial':
        r.partial = r.partial === -1 ? spec.partial!.bytes : Math.min(r.partial, spec.partial!.bytes);
        break;
      case 'stall':
        r.stall = true;
        break;
    }
  }
}

export class Faults {
  /** Any fault configured, or header triggers on: requests are checked. */
  active: boolean;
  /** Per route index: the faults that may hit its requests, in table order. */
  private byRoute: Fault[][] = [];

  constructor(
    private readonly routes: number,
    private readonly workerIndex: number,
    private readonly headers: TrustedProxies | null,
    private readonly onInject: (name: string, kind: string) => void,
  ) {
    this.active = headers !== null;
  }

  /** The whole table, replacing the last (swy:faults). Routes past this worker's are ignored. */
  apply(entries: readonly FaultEntry[]): void {
    const byRoute: Fault[][] = Array.from({ length: this.routes }, () => []);
    for (const e of entries) {
      const fault = new Fault(e.name, e.spec, this.workerIndex);
      if (e.route === null) for (const list of byRoute) list.push(fault);
      else byRoute[e.route]?.push(fault);
    }
    this.byRoute = byRoute;
    this.active = this.headers !== null || entries.length > 0;
  }

  /** What hits this request; null when nothing does. A bad trigger field is the client's error. */
  plan(
    route: Route,
    path: string,
    method: string,
    raw: readonly string[],
    remote: string | undefined,
  ): FaultPlan | BadRequestError | null {
    let plan: FaultPlan | null = null;
    const list = this.byRoute[route.index];
    if (list !== undefined) {
      for (let i = 0; i < list.length; i++) {
        const f = list[i];
        if (!f.hits(path, method, raw)) continue;
        plan ??= emptyPlan();
        f.applyTo(plan);
        plan.mark = plan.mark === '' ? f.mark : `${plan.mark},${f.mark}`;
        this.onInject(f.name, f.kind);
      }
    }
    if (this.headers !== null && this.headers.has(remote)) return this.fromHeaders(raw, plan);
    return plan;
  }

  /** X-Switchyard-Fault-* from a trusted client, on top of what the table did. */
  private fromHeaders(raw: readonly string[], before: FaultPlan | null): FaultPlan | BadRequestError | null {
    const delay = findHeader(raw, FAULT_HEADERS.delay);
    const abort = findHeader(raw, FAULT_HEADERS.abort);
    const bandwidth = findHeader(raw, FAULT_HEADERS.bandwidth);
    if (delay === null && abort === null && bandwidth === null) return before;
    const plan = before ?? emptyPlan();
    const mark = (kind: string): void => {
      plan.mark = plan.mark === '' ? `header:${kind}` : `${plan.mark},header:${kind}`;
      this.onInject('header', kind);
    };
    if (delay !== null) {
      const ms = wholeNumber(delay, 1, 2_147_483_647);
      if (ms === null) return badTrigger(FAULT_HEADERS.delay, delay, 'milliseconds from 1');
      plan.delay += ms;
      mark('delay');
    }
    if (abort !== null) {
      if (abort.trim().toLowerCase() === 'reset') plan.reset = true;
      else {
        const status = wholeNumber(abort, 200, 599);
        if (status === null) return badTrigger(FAULT_HEADERS.abort, abort, 'a status from 200 to 599, or "reset"');
        if (plan.abort === 0) plan.abort = status;
      }
      mark('abort');
    }
    if (bandwidth !== null) {
      const rate = wholeNumber(bandwidth, 1, Number.MAX_SAFE_INTEGER);
      if (rate === null) return badTrigger(FAULT_HEADERS.bandwidth, bandwidth, 'bytes per second from 1');
      const r = responseOf(plan);
      r.bandwidth = r.bandwidth === 0 ? rate : Math.min(r.bandwidth, rate);
      mark('bandwidth');
    }
    return plan;
  }
}

/** The plan's response-side faults, none yet on first use. */
function responseOf(plan: FaultPlan): ResponseFaults {
  return (plan.response ??= { delay: 0, abort: 0, reset: false, bandwidth: 0, partial: -1, stall: false });
}

function emptyPlan(): FaultPlan {
  return { mark: '', delay: 0, abort: 0, reset: false, stall: false, response: null };
}

function wholeNumber(text: string, min: number, max: number): number | null {
  const t = text.trim();
  if (!/^\d{1,16}$/.test(t)) return null;
  const n = Number(t);
  return n >= min && n <= max ? n : null;
}

function badTrigger(field: string, value: string, expected: string): BadRequestError {
  return new BadRequestError(`${field}: got ${JSON.stringify(value.slice(0, 40))}; expected ${expected}`);
}
