/**
 * Automatic certificates end to end: the CLI as a real cluster (2 workers) against a real Pebble,
 * which validates HTTP-01 on the proxy's plain listener and TLS-ALPN-01 on its TLS listener.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { closedPort, configFile, delay, httpUpstream, startCli, waitFor, type Cli } from '../support/helpers';
import { pebbleInstalled, startPebble, type Pebble } from '../support/pebble';

interface Served {
  cert: X509Certificate;
  authorized: boolean;
  body: string;
}

/** One HTTPS request for `name` on `port`, verified against `ca` when given. */
function fetchOver(port: number, name: string, ca?: string): Promise<Served> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      servername: name,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: false,
      ...(ca !== undefined ? { ca } : {}),
    });
    s.once('error', reject);
    s.once('secureConnect', () => {
      const cert = new X509Certificate(s.getPeerCertificate().raw);
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.on('end', () => resolve({ cert, authorized: s.authorized, body: text.slice(text.indexOf('\r\n\r\n') + 4) }));
      s.write(`GET /hello HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`);
    });
  });
}

function handshakeFails(port: number, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: name, rejectUnauthorized: false });
    s.once('secureConnect', () => {
      s.destroy();
      reject(new Error(`a certificate was served for ${name}`));
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

interface Site {
  cli: Cli;
  httpPort: number;
  tlsPort: number;
  storage: string;
}

async function ports(): Promise<{ httpPort: number; tlsPort: number }> {
  return { httpPort: await closedPort(), tlsPort: await closedPort() };
}

async function startSite(
  pebble: Pebble,
  p: { httpPort: number; tlsPort: number },
  acme: string,
  storage = mkdtempSync(join(tmpdir(), 'swy-acme-')),
): Promise<Site> {
  const up = await httpUpstream((req, res) => res.end(`origin says hello to ${req.headers.host}`));
  const config = configFile(
    `listen:\n  - address: 127.0.0.1:${p.httpPort}\n    redirect: https\n  - address: 127.0.0.1:${p.tlsPort}\n    tls: {}\n` +
      `upstreams: [{ url: "${up.url}" }]\npreserveHost: true\n` +
      `acme:\n  directory: ${pebble.directory}\n  caRoot: ${pebble.caRoot}\n  storage: ${storage}\n  retryDelay: 500\n${acme}`,
  );
  const cli = await startCli(['--config', config, '--workers', '2'], {}, [], { configListens: true });
  return { cli, ...p, storage };
}

const obtained = (cli: Cli, name: string, source: string, after = 0) =>
  waitFor(() =>
    cli.logs.slice(after).find((l) => l.event === 'certificate-obtained' && l.name === name && l.source === source),
  );

// The storage, renewal and failure cases are the primary's own logic, the same on every Node
// line: they run in the first pass only (@once). Issuance by both challenges and on demand goes
// through each line's TLS stack, and runs on all.
describe('ACME against Pebble (the CLI, 2 workers)', function () {
  this.timeout(60_000);

  before(function () {
    if (!pebbleInstalled()) throw new Error('pebble is not installed: apt-get install pebble (.ci/run does)');
  });

  it('obtains a certificate by HTTP-01 on the plain listener and serves it to every worker, no restart', async () => {
    const p = await ports();
    const pebble = await startPebble(p);
    pebble.resolve('a.example.test', 'b.example.test');
    const site = await startSite(pebble, p, '  hosts: [a.example.test, b.example.test]\n  challenges: [http-01]\n');
    await obtained(site.cli, 'a.example.test', 'order');
    await obtained(site.cli, 'b.example.test', 'order');
    const root = await pebble.issuerRoot();
    // Several connections: with 2 workers, both serve it.
    for (let i = 0; i < 4; i++) {
      const got = await fetchOver(site.tlsPort, 'a.example.test', root);
      assert.equal(got.authorized, true, 'the chain verifies against Pebble’s root');
      assert.match(got.cert.subjectAltName ?? '', /DNS:a\.example\.test/);
      assert.equal(got.body, 'origin says hello to a.example.test');
    }
    const b = await fetchOver(site.tlsPort, 'b.example.test', root);
    assert.match(b.cert.subjectAltName ?? '', /DNS:b\.example\.test/);
    // One account, one order per name: the account registered once.
    assert.equal(site.cli.logs.filter((l) => l.event === 'acme-account').length, 1);
    assert.equal(site.cli.logs.filter((l) => l.event === 'acme-order').length, 2);
    // The challenge path left no answer behind: a stale token is not served (the redirect's 404).
    const stale = await new Promise<number>((resolve, reject) =>
      http
        .get(
          { port: site.httpPort, path: '/.well-known/acme-challenge/nothing', headers: { host: 'a.example.test' } },
          (r) => {
            r.resume();
            resolve(r.statusCode ?? 0);
          },
        )
        .on('error', reject),
    );
    assert.equal(stale, 404);
  });

  it('obtains a certificate by TLS-ALPN-01 on the TLS listener; browsers never see the challenge certificate', async () => {
    const p = await ports();
    const pebble = await startPebble(p);
    pebble.resolve('alpn.example.test');
    const site = await startSite(pebble, p, '  hosts: [alpn.example.test]\n  challenges: [tls-alpn-01]\n');
    await obtained(site.cli, 'alpn.example.test', 'order');
    const got = await fetchOver(site.tlsPort, 'alpn.example.test', await pebble.issuerRoot());
    assert.equal(got.authorized, true);
    assert.equal(got.body, 'origin says hello to alpn.example.test');
  });

  it('renews at two thirds of the lifetime, and a restart serves the stored certificate without an order @once', async () => {
    const p = await ports();
    // 9 s certificates: renewal due 6 s after issuance.
    const pebble = await startPebble({ ...p, validitySeconds: 9 });
    pebble.resolve('renew.example.test');
    const storage = mkdtempSync(join(tmpdir(), 'swy-acme-'));
    const acme = '  hosts: [renew.example.test]\n  challenges: [http-01]\n';
    const site = await startSite(pebble, p, acme, storage);
    await obtained(site.cli, 'renew.example.test', 'order');
    const first = (await fetchOver(site.tlsPort, 'renew.example.test')).cert.serialNumber;
    const renewal = await waitFor(() =>
      site.cli.logs.find((l) => l.event === 'acme-order' && l.name === 'renew.example.test' && l.reason === 'renewal'),
    );
    await obtained(site.cli, 'renew.example.test', 'order', site.cli.logs.indexOf(renewal));
    const second = (await fetchOver(site.tlsPort, 'renew.example.test')).cert.serialNumber;
    assert.notEqual(second, first, 'the renewed certificate is served, without a restart');

    site.cli.child.kill('SIGTERM');
    await site.cli.exited;
    // Long-lived certificates now, so the stored one is not due on restart.
    await pebble.stop();
    const again = await startPebble({ ...p });
    again.resolve('renew.example.test');
    const site2 = await startSite(again, p, '  hosts: [renew.example.test]\n  challenges: [http-01]\n', storage);
    await obtained(site2.cli, 'renew.example.test', 'order');
    const long = (await fetchOver(site2.tlsPort, 'renew.example.test')).cert.serialNumber;
    site2.cli.child.kill('SIGTERM');
    await site2.cli.exited;
    const site3 = await startSite(again, p, acme, storage);
    await obtained(site3.cli, 'renew.example.test', 'storage');
    assert.equal((await fetchOver(site3.tlsPort, 'renew.example.test')).cert.serialNumber, long);
    assert.equal(site3.cli.logs.filter((l) => l.event === 'acme-order').length, 0, 'no new order');
    assert.equal(site3.cli.logs.filter((l) => l.event === 'acme-account').length, 0, 'the stored account');
  });

  it('on demand: issues during the handshake when `ask` answers 200, refuses when it does not', async () => {
    const p = await ports();
    const pebble = await startPebble(p);
    pebble.resolve('yes.example.test', 'no.example.test');
    const asked: string[] = [];
    const ask = await httpUpstream((req, res) => {
      const name = new URL(req.url!, 'http://x').searchParams.get('domain') ?? '';
      asked.push(name);
      res.statusCode = name.startsWith('yes.') ? 200 : 403;
      res.end();
    });
    const site = await startSite(
      pebble,
      p,
      `  hosts: []\n  challenges: [http-01]\n  onDemand:\n    ask: ${ask.url}/check\n    maxPerMinute: 5\n`,
    );
    const root = await pebble.issuerRoot();
    // The first handshake waits for the order, then gets the new certificate.
    const got = await fetchOver(site.tlsPort, 'yes.example.test', root);
    assert.equal(got.authorized, true);
    assert.equal(got.body, 'origin says hello to yes.example.test');
    const code = await handshakeFails(site.tlsPort, 'no.example.test');
    assert.match(code, /ECONNRESET|ERR_SSL|EPIPE|socket hang up/);
    assert.deepEqual(asked.sort(), ['no.example.test', 'yes.example.test']);
    assert.ok(site.cli.logs.some((l) => l.event === 'acme-ask-refused' && l.name === 'no.example.test'));
    // A name the CA cannot issue for is refused without asking.
    await handshakeFails(site.tlsPort, 'localhost');
    assert.equal(asked.length, 2);
  });

  it('on demand: past maxPerMinute, a handshake gets no certificate instead of an order @once', async () => {
    const p = await ports();
    const pebble = await startPebble(p);
    pebble.resolve('r1.example.test', 'r2.example.test');
    const ask = await httpUpstream((_req, res) => res.end());
    const site = await startSite(
      pebble,
      p,
      `  hosts: []\n  challenges: [http-01]\n  onDemand:\n    ask: ${ask.url}\n    maxPerMinute: 1\n`,
    );
    await fetchOver(site.tlsPort, 'r1.example.test');
    await handshakeFails(site.tlsPort, 'r2.example.test');
    assert.ok(site.cli.logs.some((l) => l.event === 'acme-rate-limited' && l.name === 'r2.example.test'));
  });

  it('shared storage: waits while another machine holds the name’s lock, then orders @once', async () => {
    const p = await ports();
    const pebble = await startPebble(p);
    pebble.resolve('shared.example.test');
    const storage = mkdtempSync(join(tmpdir(), 'swy-acme-'));
    // One folder per CA (docs/tls.md): its directory URL's host and path.
    const url = new URL(pebble.directory);
    const locks = join(storage, `${url.host}${url.pathname}`.replace(/[^A-Za-z0-9.-]+/g, '-'), 'locks');
    mkdirSync(locks, { recursive: true });
    const lock = join(locks, 'shared.example.test.lock');
    writeFileSync(lock, 'other-machine 1234\n');
    const site = await startSite(pebble, p, '  hosts: [shared.example.test]\n  challenges: [http-01]\n', storage);
    await delay(1500);
    assert.equal(site.cli.logs.filter((l) => l.event === 'acme-order').length, 0, 'no order under the lock');
    rmSync(lock);
    await obtained(site.cli, 'shared.example.test', 'order');
  });

  it('a CA that forgot the stored account: the next try registers the key again @once', async () => {
    const p = await ports();
    const acmePort = await closedPort();
    const storage = mkdtempSync(join(tmpdir(), 'swy-acme-'));
    const first = await startPebble({ ...p, port: acmePort });
    first.resolve('one.example.test', 'two.example.test');
    const site = await startSite(first, p, '  hosts: [one.example.test]\n  challenges: [http-01]\n', storage);
    await obtained(site.cli, 'one.example.test', 'order');
    site.cli.child.kill('SIGTERM');
    await site.cli.exited;
    // Pebble keeps nothing across restarts: the stored account URL now names no account.
    await first.stop();
    const second = await startPebble({ ...p, port: acmePort, dns: first.dns, own: first.own });
    const again = await startSite(second, p, '  hosts: [two.example.test]\n  challenges: [http-01]\n', storage);
    await obtained(again.cli, 'two.example.test', 'order');
    assert.ok(again.cli.logs.some((l) => l.event === 'acme-failed' && l.name === 'two.example.test'));
    assert.equal(again.cli.logs.filter((l) => l.event === 'acme-account').length, 1, 'registered again, once');
  });

  it('an ACME server that is down: logged, retried with backoff, the proxy serves on, and issues once it is back @once', async () => {
    const p = await ports();
    const acmePort = await closedPort();
    // The directory's address is known before Pebble runs: nothing answers there yet.
    const dummy = await startPebble({ ...p, port: acmePort });
    await dummy.stop();
    const site = await startSite(dummy, p, '  hosts: [late.example.test]\n  challenges: [http-01]\n');
    const failed = await waitFor(() =>
      site.cli.logs.filter((l) => l.event === 'acme-failed' && l.name === 'late.example.test'),
    ).then(() =>
      waitFor(() => {
        const f = site.cli.logs.filter((l) => l.event === 'acme-failed' && l.name === 'late.example.test');
        return f.length >= 2 ? f : null;
      }),
    );
    assert.ok((failed[1].retryInMs as number) > (failed[0].retryInMs as number), 'the delay doubles');
    // Plain HTTP still answers (the redirect), and the name has no certificate yet.
    const status = await new Promise<number>((resolve, reject) =>
      http
        .get({ port: site.httpPort, path: '/', headers: { host: 'late.example.test' } }, (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        })
        .on('error', reject),
    );
    assert.equal(status, 308);
    const pebble = await startPebble({ ...p, port: acmePort, dns: dummy.dns, own: dummy.own });
    pebble.resolve('late.example.test');
    await obtained(site.cli, 'late.example.test', 'order');
    const got = await fetchOver(site.tlsPort, 'late.example.test', await pebble.issuerRoot());
    assert.equal(got.authorized, true);
  });
});
