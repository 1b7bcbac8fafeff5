/**
 * `listen` and `tls` resolved into listeners: each address with its certificates (checked now,
 * so that `switchyard check` and a reload refuse a bad pair before anything listens) or its
 * redirect. A single `listen` address serves HTTPS when `tls` is set, as it always has; in a list,
 * each HTTPS listener says so with its own `tls`.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors';
import { hstsValue, parseHostPort, type Config, type TlsConfig } from './schema';

export interface CertificatePair {
  /** Absolute paths. */
  readonly cert: string;
  readonly key: string;
}

export interface ResolvedTls {
  /** In the configured order: the listener's own, then `certificates`, then `cert`/`key`. */
  readonly certificates: readonly CertificatePair[];
  /** The `cert` path served without SNI or for an unknown name (unless strictSni); '' when none. */
  readonly defaultCertificate: string;
  readonly strictSni: boolean;
  /** The Strict-Transport-Security value to send (tls.hsts); null for none. */
  readonly hsts: string | null;
}

export interface ResolvedListener {
  /** As configured, HOST:PORT. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly tls: ResolvedTls | null;
  /** Answers every request with a 308 to https on this port (the first HTTPS listener's, or 443). */
  readonly redirect: { readonly port: number } | null;
  /** Accepts HTTP/2 with prior knowledge beside HTTP/1.1 (plain listeners only). */
  readonly h2c: boolean;
}

export interface ListenerResolution {
  listeners: ResolvedListener[];
  /** Not errors, but an operator should hear of them (a key file others may read). */
  warnings: string[];
}

export function resolveListeners(config: Config, base: string, source: string): ListenerResolution {
  const fail = (key: string, got: unknown, expected: string): never => {
    throw new ConfigError(`invalid configuration (${source}):\n  ${key}: got ${JSON.stringify(got)}; ${expected}`);
  };
  const entries =
    typeof config.listen === 'string'
      ? [
          {
            key: 'listen',
            address: config.listen,
            tls: config.tls !== undefined ? {} : undefined,
            redirect: undefined,
            h2c: false,
          },
        ]
      : config.listen.map((e, i) =>
          typeof e === 'string'
            ? { key: `listen[${i}]`, address: e, tls: undefined, redirect: undefined, h2c: false }
            : { key: `listen[${i}]`, ...e },
        );
  const warnings: string[] = [];
  const seen = new Set<string>();
  const out: Array<Omit<ResolvedListener, 'redirect'> & { redirect: boolean }> = [];
  for (const e of entries) {
    // Port 0 asks the OS for a free port each time: only tests use it, and they may repeat it.
    if (seen.has(e.address) && !e.address.endsWith(':0'))
      fail(`${e.key}.address`, e.address, 'expected each address once');
    seen.add(e.address);
    const { host, port } = parseHostPort(e.address)!;
    let tls: ResolvedTls | null = null;
    if (e.h2c && e.tls !== undefined)
      fail(
        `${e.key}.h2c`,
        e.h2c,
        'expected no h2c on a listener with tls (HTTPS listeners offer h2 by ALPN: server.http2)',
      );
    if (e.tls !== undefined) {
      if (e.redirect !== undefined)
        fail(`${e.key}.redirect`, e.redirect, 'expected no redirect on a listener with tls');
      const own = Object.keys(e.tls).length > 0;
      const merged: TlsConfig = { ...config.tls, ...e.tls };
      tls = resolveTls(merged, own ? `${e.key}.tls` : 'tls', base, fail, warnings, config.acme !== undefined);
    }
    out.push({ address: e.address, host, port, tls, redirect: e.redirect === 'https', h2c: e.h2c });
  }
  if (config.tls !== undefined && out.every((l) => l.tls === null)) {
    // In a list, HTTPS is per listener: certificates no listener serves are most likely a slip.
    warnings.push(
      'tls: no listener in `listen` has `tls`, so these certificates are not served; add `tls: {}` to the HTTPS one',
    );
  }
  const httpsPort = out.find((l) => l.tls !== null)?.port ?? 443;
  return {
    listeners: out.map(({ redirect, ...l }) => ({ ...l, redirect: redirect ? { port: httpsPort } : null })),
    warnings,
  };
}

function resolveTls(
  t: TlsConfig,
  key: string,
  base: string,
  fail: (key: string, got: unknown, expected: string) => never,
  warnings: string[],
  acme: boolean,
): ResolvedTls {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const pairs: Array<{ cert: string; key: string; at: string }> = [];
  t.certificates?.forEach((c, i) => pairs.push({ cert: c.cert, key: c.key, at: `${key}.certificates[${i}]` }));
  if (t.cert !== undefined && t.key !== undefined) pairs.push({ cert: t.cert, key: t.key, at: key });
  // With ACME, a listener may start with no certificate at all: they come as they are issued.
  if (pairs.length === 0 && !acme)
    fail(key, t, 'expected certificates: `cert` and `key`, or `certificates` (or automatic ones: `acme`)');
  const certificates = pairs.map((p) => {
    const pair = { cert: abs(p.cert), key: abs(p.key) };
    checkPair(pair, p, fail, warnings);
    return pair;
  });
  let defaultCertificate = certificates[0]?.cert ?? '';
  if (t.defaultCertificate !== undefined) {
    const wanted = abs(t.defaultCertificate);
    if (!certificates.some((c) => c.cert === wanted)) {
      fail(`${key}.defaultCertificate`, t.defaultCertificate, 'expected the `cert` file of one of the certificates');
    }
    defaultCertificate = wanted;
  }
  return { certificates, defaultCertificate, strictSni: t.strictSni ?? false, hsts: hstsValue(t.hsts) };
}

/** Readable, a certificate and its key, not expired: each failure names the key and the file. */
function checkPair(
  pair: CertificatePair,
  at: { cert: string; key: string; at: string },
  fail: (key: string, got: unknown, expected: string) => never,
  warnings: string[],
): void {
  const readable = (path: string, k: string, given: string): Buffer => {
    try {
      accessSync(path, constants.R_OK);
      return readFileSync(path);
    } catch {
      return fail(k, given, `expected a readable file (${path} is not)`);
    }
  };
  const certPem = readable(pair.cert, `${at.at}.cert`, at.cert);
  const keyPem = readable(pair.key, `${at.at}.key`, at.key);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(certPem);
  } catch (err) {
    return fail(`${at.at}.cert`, at.cert, `expected a PEM certificate (${pair.cert}: ${(err as Error).message})`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch (err) {
    return fail(`${at.at}.key`, at.key, `expected a PEM private key (${pair.key}: ${(err as Error).message})`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    fail(`${at.at}.key`, at.key, `expected the private key of ${pair.cert} (${pair.key} is another key's)`);
  }
  if (Date.parse(x509.validTo) <= Date.now()) {
    fail(`${at.at}.cert`, at.cert, `expected a certificate still valid (${pair.cert} expired ${x509.validTo})`);
  }
  if ((statSync(pair.key).mode & 0o044) !== 0) {
    warnings.push(
      `${at.at}.key: ${pair.key} is readable by other users; make it readable by switchyard's user only (chmod 600)`,
    );
  }
}

/** The DNS names a certificate serves (its subject alternative names; else its common name). */
export function certificateNames(certPem: string | Buffer): string[] {
  const x509 = new X509Certificate(certPem);
  const names = (x509.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith('DNS:'))
    .map((n) => n.slice(4).toLowerCase());
  if (names.length > 0) return names;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  return cn === undefined ? [] : [cn.toLowerCase()];
}

/**
 * The certificate and key files of resolved listeners, checked again (a file changed on disk):
 * throws ConfigError naming the file at fault; returns the warnings.
 */
export function recheckCertificates(listeners: readonly ResolvedListener[]): string[] {
  const warnings: string[] = [];
  const fail = (key: string, got: unknown, expected: string): never => {
    throw new ConfigError(`${key}: got ${JSON.stringify(got)}; ${expected}`);
  };
  for (const l of listeners) {
    l.tls?.certificates.forEach((c, i) =>
      checkPair(c, { cert: c.cert, key: c.key, at: `${l.address} certificate ${i + 1}` }, fail, warnings),
    );
  }
  return warnings;
}

/** Every certificate and key file the listeners serve, once each. */
export function certificateFiles(listeners: readonly ResolvedListener[]): string[] {
  const files = new Set<string>();
  for (const l of listeners) for (const c of l.tls?.certificates ?? []) files.add(c.cert).add(c.key);
  return [...files];
}
