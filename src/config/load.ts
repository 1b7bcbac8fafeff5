/**
 * Config comes from at most three places, in rising precedence: schema defaults, the YAML file,
 * command-line flags. It is validated once, here, and deep-frozen; every process after this
 * point only reads it.
 */
import { accessSync, closeSync, constants, openSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve, dirname } from 'node:path';
import { CORE_SCHEMA, load } from 'js-yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors';
import { resolveAcme, type ResolvedAcme } from './acme';
import { unwritableDirectory } from './writable';
import { resolveListeners, type ResolvedListener } from './listeners';
import {
  CompressSchema,
  ConfigSchema,
  PoolSchema,
  TransformSchema,
  type Config,
  type CompressConfig,
  type FaultConfig,
  type MemberConfig,
  type PoolConfig,
  type RouteConfig,
  type TransformConfig,
} from './schema';

export interface ConfigOverrides {
  /** One address, or several (`--listen` given more than once). */
  listen?: string | string[] | undefined;
  admin?: string | undefined;
  upstreams?: string[] | undefined;
  workers?: string | undefined;
  pidFile?: string | undefined;
  /** --cert / --key: tls.cert and tls.key. */
  cert?: string | undefined;
  key?: string | undefined;
}

/** A route with its shorthands expanded: `transform: FILE`, `compress: true`. */
export type ResolvedRoute = Omit<RouteConfig, 'transform' | 'compress'> & {
  transform?: TransformConfig;
  compress?: CompressConfig;
};

export type ResolvedConfig = Readonly<
  Omit<Config, 'pools' | 'routes' | 'acme'> & {
    /** Every pool by name; `upstreams` is the pool "default". Empty only before the demo origin fills it. */
    pools: Readonly<Record<string, PoolConfig>>;
    /** In order; each names a pool that exists. */
    routes: readonly ResolvedRoute[];
    /** `listen` and `tls` as listeners, certificates checked (listeners.ts). */
    listeners: readonly ResolvedListener[];
    /** The first listener's address. */
    listenAddress: { readonly host: string; readonly port: number };
    /** Things to tell the operator that do not stop the proxy (a key file others may read). */
    warnings: readonly string[];
    /** `workers` with "auto" replaced by the CPU count. */
    workerCount: number;
    /** Automatic certificates: the names and challenges resolved (acme.ts). */
    acme?: ResolvedAcme;
  }
>;

/** Read, merge, validate and freeze. Throws ConfigError naming the key, the value and what was expected. */
export function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): ResolvedConfig {
  const raw: Record<string, unknown> = file === undefined ? {} : readYaml(file);
  if (overrides.listen !== undefined) {
    raw.listen =
      Array.isArray(overrides.listen) && overrides.listen.length === 1 ? overrides.listen[0] : overrides.listen;
  }
  if (overrides.admin !== undefined) {
    // A bare port means loopback: the admin listener is not for the world.
    const listen = /^\d+$/.test(overrides.admin) ? `127.0.0.1:${overrides.admin}` : overrides.admin;
    raw.admin = { ...(raw.admin as Record<string, unknown> | undefined), listen };
  }
  if (overrides.upstreams !== undefined && overrides.upstreams.length > 0) {
    // --upstream gives the members of the pool "default", wherever the file declares it.
    const members = overrides.upstreams.map((url) => ({ url }));
    const pools = raw.pools as Record<string, Record<string, unknown>> | undefined;
    const declared = pools?.default;
    if (declared !== undefined && typeof declared === 'object' && raw.upstreams === undefined) {
      raw.pools = { ...pools, default: { ...declared, members, dns: undefined } };
    } else {
      raw.upstreams = members;
    }
  }
  if (overrides.pidFile !== undefined) raw.pidFile = overrides.pidFile;
  if (overrides.cert !== undefined || overrides.key !== undefined) {
    const tls = { ...(raw.tls as Record<string, unknown> | undefined) };
    if (overrides.cert !== undefined) tls.cert = overrides.cert;
    if (overrides.key !== undefined) tls.key = overrides.key;
    raw.tls = tls;
  }
  if (overrides.workers !== undefined) {
    raw.workers = /^\d+$/.test(overrides.workers) ? Number(overrides.workers) : overrides.workers;
  }
  const source = file === undefined ? 'command line' : file;
  const config = validate(raw, source);
  // Relative file paths in a config file mean relative to that file, as in nginx and Caddy.
  const base = file === undefined ? process.cwd() : dirname(resolve(file));
  resolveFiles(config, base, source);
  const resolved = resolveParsed(
    config,
    base,
    source,
    config.workers === 'auto' ? availableParallelism() : config.workers,
  );
  if (file !== undefined && config.upstreams === undefined && config.pools === undefined) {
    // The demo origin echoes request headers: it must never stand in for a forgotten upstream.
    throw new ConfigError(
      `invalid configuration (${source}):\n  upstreams: got nothing; expected \`upstreams\` or \`pools\` ` +
        '(or --upstream); the built-in demo origin is only served when switchyard runs without --config',
    );
  }
  return resolved;
}

/** One fault as every worker applies it: from a route's `faults`, or set through the admin API. */
export interface FaultEntry {
  readonly name: string;
  /** The index of the route it is limited to; null for every route. */
  readonly route: number | null;
  readonly spec: FaultConfig;
}

/** The faults the routes configure, in order. */
export function configFaults(config: ResolvedConfig): FaultEntry[] {
  return config.routes.flatMap((r, i) =>
    Object.entries(r.faults ?? {}).map(([name, spec]) => ({ name, route: i, spec })),
  );
}

/** A validated config resolved across its keys (listeners, routes, acme) and frozen. */
export function resolveParsed(config: Config, base: string, source: string, workerCount: number): ResolvedConfig {
  const { listeners, warnings } = resolveListeners(config, base, source);
  const routed = routing(config, source);
  const { acme: acmeConfig, ...rest } = config;
  const acme =
    acmeConfig === undefined ? undefined : resolveAcme(acmeConfig, routed.routes, listeners, base, source, warnings);
  return deepFreeze({
    ...rest,
    ...routed,
    ...(acme !== undefined ? { acme } : {}),
    listeners,
    listenAddress: { host: listeners[0].host, port: listeners[0].port },
    warnings,
    workerCount,
  });
}

/**
 * `upstreams` becomes the pool "default"; without `routes`, the only pool takes every request.
 * Cross-references (a route's pool) are checked here, where the schema cannot see both ends.
 */
export function routing(
  config: Config,
  source = 'config',
): { pools: Record<string, PoolConfig>; routes: ResolvedRoute[] } {
  const fail = (line: string): never => {
    throw new ConfigError(`invalid configuration (${source}):\n  ${line}`);
  };
  const pools: Record<string, PoolConfig> = { ...config.pools };
  if (config.upstreams !== undefined) {
    if (pools.default !== undefined)
      fail(
        'upstreams: got a list while pools.default exists too; expected one of the two (upstreams is shorthand for pools.default)',
      );
    pools.default = PoolSchema.parse({ members: config.upstreams });
  }
  const names = Object.keys(pools);
  for (const name of names) {
    const at = config.upstreams !== undefined && name === 'default' ? 'upstreams' : `pools.${name}.members`;
    pools[name].members?.forEach((m, i) => {
      if (m.http2 && !m.url.startsWith('https:'))
        fail(
          `${at}[${i}].http2: got true with ${JSON.stringify(m.url)}; expected an https:// url (HTTP/2 in cleartext is an h2c:// url)`,
        );
    });
    const dns = pools[name].dns;
    if (dns?.http2 === true && dns.scheme !== 'https')
      fail(
        `pools.${name}.dns.http2: got true with scheme ${JSON.stringify(dns.scheme)}; expected scheme https (HTTP/2 in cleartext is scheme h2c)`,
      );
  }
  let routes = config.routes;
  if (routes === undefined) {
    if (names.length > 1)
      fail(
        `routes: got nothing; expected a list of routes, since there are ${names.length} pools (${names.join(', ')})`,
      );
    routes = names.length === 1 ? [{ match: {}, pool: names[0], rewriteLocation: false }] : [];
  }
  const poolNames = names.length === 0 ? '(none configured)' : names.join(', ');
  const routeNames = new Map<string, number>();
  const faultNames = new Map<string, number>();
  routes.forEach((r, i) => {
    if (pools[r.pool] === undefined)
      fail(`routes[${i}].pool: got ${JSON.stringify(r.pool)}; expected the name of a pool: ${poolNames}`);
    if (r.mirror !== undefined && pools[r.mirror.pool] === undefined)
      fail(`routes[${i}].mirror.pool: got ${JSON.stringify(r.mirror.pool)}; expected the name of a pool: ${poolNames}`);
    if (r.name !== undefined) {
      const other = routeNames.get(r.name);
      if (other !== undefined)
        fail(`routes[${i}].name: got ${JSON.stringify(r.name)}; expected a name no other route has (routes[${other}])`);
      routeNames.set(r.name, i);
    }
    for (const [name, fault] of Object.entries(r.faults ?? {})) {
      if (fault.route !== undefined)
        fail(
          `routes[${i}].faults.${name}.route: got ${JSON.stringify(fault.route)}; expected nothing (a route's faults are its own)`,
        );
      const other = faultNames.get(name);
      if (other !== undefined)
        fail(
          `routes[${i}].faults.${name}: got a second fault of that name; expected names unique across routes (routes[${other}])`,
        );
      faultNames.set(name, i);
    }
  });
  if (routes.length > 0 && names.length === 0) fail('pools: got nothing; expected at least one pool for the routes');
  return { pools, routes: routes.map(expandRoute) };
}

function expandRoute(r: RouteConfig): ResolvedRoute {
  const { transform, compress, ...rest } = r;
  const out: ResolvedRoute = rest;
  // `transform: ./x.js` is shorthand for `transform: { module: ./x.js }`.
  if (transform !== undefined)
    out.transform = typeof transform === 'string' ? TransformSchema.parse({ module: transform }) : transform;
  if (compress !== undefined && compress !== false)
    out.compress = compress === true ? CompressSchema.parse({}) : compress;
  return out;
}

/** The config with the demo origin as the pool "default" (no upstream was configured). */
export function withDemoPool(config: ResolvedConfig, url: string): ResolvedConfig {
  const members: MemberConfig[] = [{ url, insecure: false, http2: false, weight: 1 }];
  return deepFreeze({
    ...config,
    upstreams: members,
    pools: { default: PoolSchema.parse({ members }) },
    routes: [{ match: {}, pool: 'default', rewriteLocation: false }],
  });
}

/** Validate an already-parsed object (used for the file, and by tests for in-process proxies). */
export function validate(raw: unknown, source = 'config'): Config {
  const result = ConfigSchema.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;
  const lines = result.error.issues.map(formatIssue);
  throw new ConfigError(`invalid configuration (${source}):\n  ${lines.join('\n  ')}`);
}

/** Schema errors as config errors word them (key: got VALUE; expected WHAT), under `prefix`. */
export function describeIssues(error: z.ZodError, prefix: PropertyKey[] = []): string[] {
  return error.issues.map((issue) => formatIssue({ ...issue, path: [...prefix, ...issue.path] }));
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const key = issue.path.length === 0 ? '(top level)' : formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const where = issue.path.length === 0 ? '' : `${key}.`;
    return issue.keys.map((k) => `${where}${k}: unknown key`).join('\n  ');
  }
  const input = 'input' in issue ? issue.input : undefined;
  const got = input === undefined ? 'nothing' : echo(input);
  let expected = issue.message.replace(/^Invalid input: /, '');
  if (issue.code === 'invalid_union' || issue.code === 'invalid_value') {
    expected = describeExpectation(issue.path);
  } else if (issue.code === 'too_small' || issue.code === 'too_big') {
    const what =
      issue.origin === 'number'
        ? 'a whole number'
        : issue.origin === 'array'
          ? 'a list with a length'
          : `a ${issue.origin} of length`;
    const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
    expected = `expected ${what} ${issue.code === 'too_small' ? '>=' : '<='} ${String(bound)}`;
  } else if (issue.code === 'invalid_type') {
    expected = `expected ${issue.expected === 'int' ? 'a whole number' : issue.expected}`;
  }
  return `${key}: got ${got}; ${expected.startsWith('expected') ? expected : `expected ${expected}`}`;
}

function describeExpectation(path: PropertyKey[]): string {
  const last = path[path.length - 1];
  if (last === 'workers') return 'expected "auto" or a whole number from 1 to 1024';
  if (last === 'level') return 'expected one of fatal, error, warn, info, debug, trace, silent';
  if (last === 'schedulingPolicy') return 'expected "none" or "round-robin"';
  if (last === 'format') return 'expected one of json, common, combined';
  return 'expected a value allowed by config.schema.json';
}

function formatPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

/** A value as an error message shows it: JSON, cut to a readable length. */
function echo(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length <= MAX_ECHO ? text : `${text.slice(0, MAX_ECHO)}… (${text.length} characters)`;
}
const MAX_ECHO = 120;

/** Larger config files are refused unread: even 100,000 routes take a few MiB. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > MAX_CONFIG_BYTES) {
      throw new ConfigError(`config file ${file} is ${size} bytes; expected at most ${MAX_CONFIG_BYTES}`);
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    // js-yaml: a tenth of the time of the yaml package on a 10,000-route file, whose own
    // unique-key check compared every key with every other one (80,000 keys took minutes).
    value = load(text, { filename: file, schema: CORE_SCHEMA });
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid YAML:\n  ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
    });
  }
  // Aliases are shared objects here, but everything after this walks them expanded: the expanded
  // size may grow with the document (150 routes sharing one anchor are fine), not beyond it.
  const limit = Math.max(10_000, text.length);
  const expanded = expandedSize(value, limit);
  if (expanded > limit) {
    throw new ConfigError(
      `config file ${file} is not valid YAML: its aliases expand to over ${limit} values (an alias bomb?); expected at most one value per byte of the file`,
    );
  }
  if (value === null || value === undefined) {
    throw new ConfigError(`config file ${file} is empty; expected a mapping of keys (see switchyard.example.yaml)`);
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`config file ${file}: (top level): got ${echo(value)}; expected a mapping of keys`);
  }
  return value as Record<string, unknown>;
}

/**
 * How many values `root` holds with every alias expanded, counting each shared object once per
 * place it appears; stops counting past `limit`. Linear in the distinct objects (memoised).
 */
function expandedSize(root: unknown, limit: number): number {
  const sizes = new Map<object, number>();
  const size = (v: unknown): number => {
    if (v === null || typeof v !== 'object') return 1;
    const known = sizes.get(v);
    if (known !== undefined) return known;
    sizes.set(v, limit + 1); // a cycle counts as too many
    let n = 1;
    for (const child of Object.values(v)) {
      n += size(child);
      if (n > limit) break;
    }
    sizes.set(v, n);
    return n;
  };
  return size(root);
}

/** Files are checked now so that `switchyard check` catches a missing cert, not the first request. */
function resolveFiles(config: Config, base: string, source: string): void {
  const check = (key: string, path: string): string => {
    const abs = isAbsolute(path) ? path : resolve(base, path);
    try {
      accessSync(abs, constants.R_OK);
    } catch {
      throw new ConfigError(
        `invalid configuration (${source}):\n  ${key}: got ${JSON.stringify(path)}; expected a readable file (${abs} is not)`,
      );
    }
    return abs;
  };
  if (config.pidFile !== undefined && !isAbsolute(config.pidFile)) config.pidFile = resolve(base, config.pidFile);
  if (config.accessLog.file !== undefined) {
    if (!isAbsolute(config.accessLog.file)) config.accessLog.file = resolve(base, config.accessLog.file);
    const problem = unwritable(config.accessLog.file);
    if (problem !== null) {
      throw new ConfigError(
        `invalid configuration (${source}):\n  accessLog.file: got ${echo(config.accessLog.file)}; expected a file switchyard can append to (${problem})`,
      );
    }
  }
  config.upstreams?.forEach((u, i) => {
    if (u.ca !== undefined) u.ca = check(`upstreams[${i}].ca`, u.ca);
  });
  config.routes?.forEach((r, i) => {
    if (typeof r.transform === 'string') r.transform = check(`routes[${i}].transform`, r.transform);
    else if (r.transform?.module !== undefined)
      r.transform.module = check(`routes[${i}].transform.module`, r.transform.module);
    if (r.record !== undefined) {
      if (!isAbsolute(r.record.file)) r.record.file = resolve(base, r.record.file);
      // Each worker writes its own file beside this name: the folder must take new files.
      const problem = unwritableDirectory(dirname(r.record.file));
      if (problem !== null)
        throw new ConfigError(
          `invalid configuration (${source}):\n  routes[${i}].record.file: got ${echo(r.record.file)}; expected a file in a folder switchyard can write to (${problem})`,
        );
    }
  });
  for (const [name, pool] of Object.entries(config.pools ?? {})) {
    pool.members?.forEach((u, i) => {
      if (u.ca !== undefined) u.ca = check(`pools.${name}.members[${i}].ca`, u.ca);
    });
    if (pool.dns?.ca !== undefined) pool.dns.ca = check(`pools.${name}.dns.ca`, pool.dns.ca);
  }
}

/**
 * Why `file` cannot be appended to, or null. An existing file is opened for appending (and closed
 * at once, unchanged); a new one needs its nearest existing ancestor to be a writable directory
 * (the access log creates the folders between).
 */
function unwritable(file: string): string | null {
  try {
    closeSync(openSync(file, 'a'));
    return null;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code !== 'ENOENT') return `${e.code ?? 'error'}: ${e.message}`;
  }
  return unwritableDirectory(dirname(file));
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export { deepFreeze };
