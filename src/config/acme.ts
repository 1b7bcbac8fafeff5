/**
 * `acme` resolved against the rest of the config: the names to order certificates for (listed, or
 * the routes' exact hosts), absolute paths, and the challenge types the listeners can answer.
 * Checked here so that `switchyard check` and a reload refuse what could never issue.
 */
import { accessSync, constants } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors';
import type { ResolvedListener } from './listeners';
import { isOrderableName, type AcmeConfig, type RouteConfig } from './schema';
import { unwritableDirectory } from './writable';

export type AcmeChallenge = 'http-01' | 'tls-alpn-01';

export interface ResolvedAcme extends Omit<AcmeConfig, 'hosts' | 'challenges'> {
  /** Lower case, each once: `acme.hosts`, or the routes' exact host names. */
  readonly hosts: readonly string[];
  /** `acme.challenges` less those no listener can answer (http-01 needs a plain listener). */
  readonly challenges: readonly AcmeChallenge[];
}

export function resolveAcme(
  acme: AcmeConfig,
  routes: readonly Pick<RouteConfig, 'match'>[],
  listeners: readonly ResolvedListener[],
  base: string,
  source: string,
  warnings: string[],
): ResolvedAcme {
  const fail = (key: string, got: unknown, expected: string): never => {
    throw new ConfigError(`invalid configuration (${source}):\n  ${key}: got ${JSON.stringify(got)}; ${expected}`);
  };
  if (listeners.every((l) => l.tls === null)) {
    fail('acme', 'no HTTPS listener', 'expected a listener with `tls` (`tls: {}` will do) to serve the certificates');
  }
  const plain = listeners.some((l) => l.tls === null);
  const challenges = acme.challenges.filter((c) => c !== 'http-01' || plain);
  if (challenges.length === 0) {
    fail(
      'acme.challenges',
      acme.challenges,
      'expected tls-alpn-01 too, or a plain listener for http-01 (no listener serves plain HTTP)',
    );
  }
  const storage = isAbsolute(acme.storage) ? acme.storage : resolve(base, acme.storage);
  const problem = unwritableDirectory(storage);
  if (problem !== null)
    fail('acme.storage', acme.storage, `expected a directory switchyard can create or write (${problem})`);
  let caRoot: string | undefined;
  if (acme.caRoot !== undefined) {
    caRoot = isAbsolute(acme.caRoot) ? acme.caRoot : resolve(base, acme.caRoot);
    try {
      accessSync(caRoot, constants.R_OK);
    } catch {
      fail('acme.caRoot', acme.caRoot, `expected a readable file (${caRoot} is not)`);
    }
  }
  let hosts: string[];
  if (acme.hosts !== undefined) {
    hosts = acme.hosts.map((h) => h.toLowerCase());
  } else {
    // The exact names routes answer for; wildcards need DNS-01, and addresses no public CA signs.
    hosts = routes
      .flatMap((r) => (r.match.host === undefined ? [] : Array.isArray(r.match.host) ? r.match.host : [r.match.host]))
      .map((h) => h.toLowerCase().replace(/\.$/, ''))
      .filter(isOrderableName);
  }
  hosts = [...new Set(hosts)];
  if (hosts.length === 0 && acme.onDemand === undefined) {
    warnings.push(
      'acme: no names to obtain certificates for: list them in `acme.hosts`, give routes exact `host` names, or turn on `acme.onDemand`',
    );
  }
  return { ...acme, storage, ...(caRoot !== undefined ? { caRoot } : {}), hosts, challenges };
}
