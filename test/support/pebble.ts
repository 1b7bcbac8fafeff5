/**
 * Pebble, the ACME server Let's Encrypt publishes for testing (Debian package `pebble`), started
 * per test: it validates challenges against 127.0.0.1 on the ports the test gives (the proxy's
 * plain and TLS listeners), resolving every name through a small DNS server of ours.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCert, type TestCert } from './certs';
import { startDnsServer, type DnsServer } from './dns-server';
import { closedPort, onCleanup } from './helpers';

export const PEBBLE = '/usr/bin/pebble';

export function pebbleInstalled(): boolean {
  return spawnSync(PEBBLE, ['-h'], { stdio: 'ignore' }).error === undefined;
}

export interface Pebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM file of the CA of Pebble's own HTTPS certificate: acme.caRoot. */
  caRoot: string;
  dns: DnsServer;
  own: TestCert;
  /** Names that resolve to 127.0.0.1 from Pebble's point of view. */
  resolve(...names: string[]): void;
  /** The root that signs the certificates Pebble issues (PEM), for clients that verify them. */
  issuerRoot(): Promise<string>;
  /** Orders Pebble has seen finalized: from its log. */
  log(): string;
  stop(): Promise<void>;
}

export interface PebbleOptions {
  /** Where Pebble fetches HTTP-01 answers (the proxy's plain listener). */
  httpPort: number;
  /** Where Pebble makes TLS-ALPN-01 handshakes (the proxy's TLS listener). */
  tlsPort: number;
  /** The ACME API's port: a fresh one unless given (a test that restarts Pebble keeps it). */
  port?: number;
  /** Lifetime of the certificates it issues, in seconds (Pebble's own default: about five years). */
  validitySeconds?: number;
  dns?: DnsServer;
  /** Pebble's own HTTPS certificate: a Pebble restarted on the same port keeps the caRoot valid. */
  own?: TestCert;
}

export async function startPebble(options: PebbleOptions): Promise<Pebble> {
  const dir = mkdtempSync(join(tmpdir(), 'swy-pebble-'));
  const own = options.own ?? makeCert(['localhost'], dir, 'pebble');
  const port = options.port ?? (await closedPort());
  const management = await closedPort();
  const config = join(dir, 'pebble.json');
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${management}`,
        certificate: own.cert,
        privateKey: own.key,
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.validitySeconds !== undefined ? { certificateValidityPeriod: options.validitySeconds } : {}),
      },
    }),
  );
  const dns = options.dns ?? (await startDnsServer());
  const child: ChildProcess = spawn(PEBBLE, ['-config', config, '-dnsserver', dns.address], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // No random sleeps before validation, no random nonce rejections, no reuse of earlier
    // authorizations: every order validates its challenges, at once.
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = once(child, 'exit');
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await exited;
  };
  onCleanup(stop);
  const deadline = Date.now() + 15_000;
  while (!output.includes('Listening on')) {
    if (child.exitCode !== null) throw new Error(`pebble exited: ${output}`);
    if (Date.now() > deadline) throw new Error(`pebble did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    directory: `https://localhost:${port}/dir`,
    caRoot: own.cert,
    dns,
    own,
    resolve: (...names) => {
      for (const n of names) {
        dns.a.set(n, { addresses: ['127.0.0.1'], ttl: 1 });
        dns.aaaa.set(n, { addresses: [], ttl: 1 });
      }
    },
    issuerRoot: () =>
      new Promise((ok, fail) => {
        https
          .get(`https://127.0.0.1:${management}/roots/0`, { rejectUnauthorized: false }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => ok(body));
          })
          .on('error', fail);
      }),
    log: () => output,
    stop,
  };
}
