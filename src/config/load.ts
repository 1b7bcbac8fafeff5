/**
 * Config comes from at most three places, in rising precedence: schema defaults, the YAML file,
 * command-line flags. It is validated once, here, and deep-frozen; every process after this
 * point only reads it.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve, dirname } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors';
import { ConfigSchema, parseHostPort, type Config } from './schema';

export interface ConfigOverrides {
  listen?: string | undefined;
  admin?: string | undefined;
  upstreams?: string[] | undefined;
  workers?: string | undefined;
}

export type ResolvedConfig = Readonly<Config & {
  /** `listen` split into parts. */
  listenAddress: { readonly host: string; readonly port: number };
  /** `workers` with "auto" replaced by the CPU count. */
  workerCount: number;
}>;

/** Read, merge, validate and freeze. Throws ConfigError naming the key, the value and what was expected. */
export function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): ResolvedConfig {
  const raw: Record<string, unknown> = file === undefined ? {} : readYaml(file);
  if (overrides.listen !== undefined) raw.listen = overrides.listen;
  if (overrides.admin !== undefined) {
    // A bare port means loopback: the admin listener is not for the world.
    const listen = /^\d+$/.test(overrides.admin) ? `127.0.0.1:${overrides.admin}` : overrides.admin;
    raw.admin = { ...(raw.admin as Record<string, unknown> | undefined), listen };
  }
  if (overrides.upstreams !== undefined && overrides.upstreams.length > 0) {
    raw.upstreams = overrides.upstreams.map((url) => ({ url }));
  }
  if (overrides.workers !== undefined) {
    raw.workers = /^\d+$/.test(overrides.workers) ? Number(overrides.workers) : overrides.workers;
  }
  const source = file === undefined ? 'command line' : file;
  const config = validate(raw, source);
  // Relative file paths in a config file mean relative to that file, as in nginx and Caddy.
  const base = file === undefined ? process.cwd() : dirname(resolve(file));
  resolveFiles(config, base, source);
  const { host, port } = parseHostPort(config.listen)!;
  const workerCount = config.workers === 'auto' ? availableParallelism() : config.workers;
  return deepFreeze({ ...config, listenAddress: { host, port }, workerCount });
}

/** Validate an already-parsed object (used for the file, and by tests for in-process proxies). */
export function validate(raw: unknown, source = 'config'): Config {
  const result = ConfigSchema.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;
  const lines = result.error.issues.map(formatIssue);
  throw new ConfigError(`invalid configuration (${source}):\n  ${lines.join('\n  ')}`);
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const key = issue.path.length === 0 ? '(top level)' : formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const where = issue.path.length === 0 ? '' : `${key}.`;
    return issue.keys.map((k) => `${where}${k}: unknown key`).join('\n  ');
  }
  const input = 'input' in issue ? issue.input : undefined;
  const got = input === undefined ? 'nothing' : JSON.stringify(input);
  let expected = issue.message.replace(/^Invalid input: /, '');
  if (issue.code === 'invalid_union' || issue.code === 'invalid_value') {
    expected = describeExpectation(issue.path);
  } else if (issue.code === 'too_small' || issue.code === 'too_big') {
    const what = issue.origin === 'number' ? 'a whole number' : issue.origin === 'array' ? 'a list with a length' : `a ${issue.origin} of length`;
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

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(`config file ${file} is not valid YAML:\n  ${doc.errors.map((e) => e.message).join('\n  ')}`);
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`config file ${file}: (top level): got ${JSON.stringify(value)}; expected a mapping of keys`);
  }
  return value as Record<string, unknown>;
}

/** Files are checked now so that `switchyard check` catches a missing cert, not the first request. */
function resolveFiles(config: Config, base: string, source: string): void {
  const check = (key: string, path: string): string => {
    const abs = isAbsolute(path) ? path : resolve(base, path);
    try {
      accessSync(abs, constants.R_OK);
    } catch {
      throw new ConfigError(`invalid configuration (${source}):\n  ${key}: got ${JSON.stringify(path)}; expected a readable file (${abs} is not)`);
    }
    return abs;
  };
  if (config.tls) {
    config.tls.cert = check('tls.cert', config.tls.cert);
    config.tls.key = check('tls.key', config.tls.key);
  }
  if (config.accessLog.file !== undefined && !isAbsolute(config.accessLog.file)) {
    config.accessLog.file = resolve(base, config.accessLog.file);
  }
  config.upstreams?.forEach((u, i) => {
    if (u.ca !== undefined) u.ca = check(`upstreams[${i}].ca`, u.ca);
  });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export { deepFreeze };
