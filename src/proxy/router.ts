/**
 * Which route serves a request. Routes are tried in their configured order and the first that
 * matches wins; but to keep thousands of sites cheap, the routes a host could match are worked
 * out when the table is built:
 *
 *   exact host  → its routes, merged with the wildcard and host-less routes that also apply
 *   *.parent    → the wildcard's routes, merged with the host-less ones
 *   anything    → the host-less routes
 *
 * A request then costs one or two Map lookups (the host, else its parent domain) plus a scan of
 * the few routes of that one host, whatever the number of hosts.
 */
import type { ResolvedRoute } from '../config/load';
import { hstsValue, type CompressConfig, type TransformConfig } from '../config/schema';
import type { UpstreamPool } from '../upstream/pool';
import { findHeader } from '../http1/fields';
import { compileHeaderEdit, type HeaderEdit } from './headers';
import type { Mirror } from './mirror';
import type { Recorder } from './recorder';

/** A path prefix, methods and fields a request must all have (a route's or a fault's `match`). */
export class RequestMatcher {
  private readonly prefix: string | null;
  private readonly methods: ReadonlySet<string> | null;
  /** [lower-case name, value or '*'] pairs. */
  private readonly headers: ReadonlyArray<readonly [string, string]> | null;

  constructor(m: {
    readonly path?: string | undefined;
    readonly method?: string | readonly string[] | undefined;
    readonly header?: Readonly<Record<string, string>> | undefined;
  }) {
    this.prefix = m.path ?? null;
    this.methods = m.method === undefined ? null : new Set(typeof m.method === 'string' ? [m.method] : m.method);
    this.headers =
      m.header === undefined ? null : Object.entries(m.header).map(([n, v]) => [n.toLowerCase(), v] as const);
  }

  matches(path: string, method: string, raw: readonly string[]): boolean {
    if (this.prefix !== null && !hasPrefix(path, this.prefix)) return false;
    if (this.methods !== null && !this.methods.has(method)) return false;
    if (this.headers !== null) {
      for (const [name, want] of this.headers) {
        const got = findHeader(raw, name);
        if (got === null || (want !== '*' && got !== want)) return false;
      }
    }
    return true;
  }
}

export class Route {
  readonly pool: UpstreamPool;
  /** The route's `name`, or its index. */
  readonly name: string;
  private readonly match: RequestMatcher;
  private readonly strip: string | null;
  private readonly add: string | null;
  readonly requestEdit: HeaderEdit | null;
  readonly responseEdit: HeaderEdit | null;
  readonly rewriteLocation: boolean;
  /** Strict-Transport-Security over HTTPS: a value, null for none, undefined for the listener's. */
  readonly hsts: string | null | undefined;
  readonly transform: TransformConfig | null;
  readonly compress: CompressConfig | null;
  /** Copies to a shadow pool (`mirror`), set by the server once pools exist; null for none. */
  mirror: Mirror | null = null;
  /** Writes exchanges to a recording (`record`), set by the server; null for none. */
  recorder: Recorder | null = null;

  constructor(
    readonly index: number,
    config: ResolvedRoute,
    pool: UpstreamPool,
  ) {
    this.pool = pool;
    this.name = config.name ?? String(index);
    this.match = new RequestMatcher(config.match);
    this.strip = config.rewrite?.stripPrefix ?? null;
    this.add = config.rewrite?.addPrefix ?? null;
    this.transform = config.transform ?? null;
    this.compress = config.compress ?? null;
    // With a transform, the upstream is asked for an uncompressed body: decoding it again here
    // would cost CPU the upstream spent for nothing. (A compressed one is still decoded.)
    const requestHeaders =
      this.transform === null
        ? config.requestHeaders
        : { ...config.requestHeaders, remove: [...(config.requestHeaders?.remove ?? []), 'Accept-Encoding'] };
    this.requestEdit = compileHeaderEdit(requestHeaders);
    this.responseEdit = compileHeaderEdit(config.responseHeaders);
    this.rewriteLocation = config.rewriteLocation;
    this.hsts = config.hsts === undefined ? undefined : hstsValue(config.hsts);
  }

  matches(path: string, method: string, raw: readonly string[]): boolean {
    return this.match.matches(path, method, raw);
  }

  /** The path to send upstream: strip, then add. */
  rewritePath(path: string): string {
    const from = this.strip !== null && hasPrefix(path, this.strip) ? this.strip : null;
    return from === null && this.add === null ? path : swapPrefix(path, from, this.add);
  }

  /** The inverse, for Location headers: the client's view of an upstream path. */
  unrewritePath(path: string): string {
    if (this.add !== null && !hasPrefix(path, this.add)) return path;
    return swapPrefix(path, this.add, this.strip);
  }
}

export class Router {
  private readonly byHost = new Map<string, Route[]>();
  private readonly byParent = new Map<string, Route[]>();
  private readonly anyHost: Route[] = [];
  readonly routes: Route[];

  constructor(configs: readonly ResolvedRoute[], pools: ReadonlyMap<string, UpstreamPool>) {
    this.routes = configs.map((c, i) => new Route(i, c, pools.get(c.pool)!));
    const exact = new Map<string, Route[]>();
    const wild = new Map<string, Route[]>();
    configs.forEach((c, i) => {
      const route = this.routes[i];
      const hosts =
        c.match.host === undefined ? null : typeof c.match.host === 'string' ? [c.match.host] : c.match.host;
      if (hosts === null) {
        this.anyHost.push(route);
        return;
      }
      for (const h of hosts) {
        const host = normalizeHost(h);
        if (host.startsWith('*.')) push(wild, host.slice(2), route);
        else push(exact, host, route);
      }
    });
    for (const [parent, routes] of wild) this.byParent.set(parent, merge(routes, this.anyHost));
    for (const [host, routes] of exact) {
      const parent = parentOf(host);
      const wildcard = parent === null ? undefined : wild.get(parent);
      this.byHost.set(host, merge(routes, wildcard ?? [], this.anyHost));
    }
  }

  /** The first route that matches, or null. `hostHeader` as the client sent it. */
  match(hostHeader: string | null, path: string, method: string, raw: readonly string[]): Route | null {
    const candidates = this.candidates(hostHeader);
    for (let i = 0; i < candidates.length; i++) {
      const r = candidates[i];
      if (r.matches(path, method, raw)) return r;
    }
    return null;
  }

  private candidates(hostHeader: string | null): readonly Route[] {
    if (hostHeader === null || (this.byHost.size === 0 && this.byParent.size === 0)) return this.anyHost;
    const host = normalizeHost(hostHeader);
    const exact = this.byHost.get(host);
    if (exact !== undefined) return exact;
    const parent = parentOf(host);
    return (parent === null ? undefined : this.byParent.get(parent)) ?? this.anyHost;
  }
}

/**
 * The path the router matches and the upstream receives, normalised as RFC 3986 §6.2.2 allows:
 * percent-encoded unreserved characters decoded (`/%61pi` → `/api`) and dot segments removed
 * (`/static/../admin` → `/admin`). Matching one spelling and forwarding another is how requests slip
 * past a route meant to fence them, so both use this one. `%2F` stays encoded (it would change the
 * segments), and the query is untouched. Most paths need none of it and are returned as they are.
 */
export function normalizePath(target: string): string {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const pct = path.indexOf('%') !== -1;
  if (!pct && path.indexOf('/.') === -1) return target;
  let p = pct ? path.replace(/%([0-9A-Fa-f]{2})/g, decodeUnreserved) : path;
  if (p.indexOf('/.') !== -1) p = removeDotSegments(p);
  return q === -1 ? p : p + target.slice(q);
}

function decodeUnreserved(escape: string, hex: string): string {
  const c = parseInt(hex, 16);
  const unreserved =
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f ||
    c === 0x7e;
  return unreserved ? String.fromCharCode(c) : escape;
}

/** RFC 3986 §5.2.4 for an absolute path: `.` and `..` segments resolved, never above the root. */
function removeDotSegments(path: string): string {
  const parts = path.split('/');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i];
    const last = i === parts.length - 1;
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop();
      // A trailing dot segment leaves a directory: /a/b/.. → /a/
      if (last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return `/${out.join('/')}`;
}

/** Lower-case, without the port and a trailing dot: `Example.COM.:8080` → `example.com`. */
export function normalizeHost(host: string): string {
  let h = host;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    h = end === -1 ? h : h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(':');
    if (colon !== -1) h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.toLowerCase();
}

function parentOf(host: string): string | null {
  const dot = host.indexOf('.');
  return dot === -1 || host.charCodeAt(0) === 91 ? null : host.slice(dot + 1);
}

/** Prefix on whole segments: /api matches /api, /api/x and /api?q, not /apix. */
function hasPrefix(path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false;
  if (path.length === prefix.length || prefix.endsWith('/')) return true;
  const next = path.charCodeAt(prefix.length);
  return next === 47 /* / */ || next === 63; /* ? */
}

/** `from` (already known to match) replaced by `to`; either may be absent. */
function swapPrefix(path: string, from: string | null, to: string | null): string {
  const rest = from === null ? path : path.slice(from.endsWith('/') ? from.length - 1 : from.length);
  if (to !== null) return to.endsWith('/') && rest.charCodeAt(0) === 47 ? to + rest.slice(1) : to + rest;
  return rest === '' || rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else if (!list.includes(value)) list.push(value);
}

/** Lists of routes merged back into configuration order (first match wins across all of them). */
function merge(...lists: Route[][]): Route[] {
  const all = new Set<Route>();
  for (const l of lists) for (const r of l) all.add(r);
  return [...all].sort((a, b) => a.index - b.index);
}
