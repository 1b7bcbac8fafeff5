/**
 * Several listeners in one proxy: plain, HTTPS with certificates chosen by SNI, and a redirect to
 * HTTPS; and the certificate checks `switchyard check` runs. Real sockets on port 0.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { makeCert } from '../support/certs';
import { CLI, configFile, FIXTURES, httpUpstream, startProxyListeners, waitFor } from '../support/helpers';

/** The first DNS name of the certificate a TLS client is served for `servername` (or none). */
function servedName(port: number, servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      rejectUnauthorized: false,
      ...(servername ? { servername } : {}),
    });
    s.once('secureConnect', () => {
      const san = s.getPeerCertificate().subjectaltname ?? '';
      s.destroy();
      resolve(san.split(', ')[0].replace(/^DNS:/, ''));
    });
    s.once('error', reject);
  });
}

/** Raw bytes to a plain port; resolves with everything the proxy sent until it closed. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('end', () => resolve(got));
    s.on('error', reject);
    s.write(bytes);
  });
}

function check(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, 'check', ...args], { encoding: 'utf8' });
}

describe('listeners: plain, HTTPS by SNI, and a redirect to HTTPS', () => {
  it('serves one config on three listeners, each as configured', async () => {
    const up = await httpUpstream((req, res) => res.end(`${String(req.headers['x-forwarded-proto'])} ${req.url}`));
    const site = makeCert(['site.example']);
    const { ports } = await startProxyListeners({
      upstreams: [{ url: up.url }],
      tls: { cert: site.cert, key: site.key },
      listen: ['127.0.0.1:0', { address: '127.0.0.1:0', tls: {} }, { address: '127.0.0.1:0', redirect: 'https' }],
    });
    const [plain, https, redirect] = ports;
    const r1 = await raw(plain, 'GET /a HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n');
    assert.match(r1, /^HTTP\/1\.1 200 /);
    assert.match(r1, /\r\n\r\nhttp \/a$/);
    const r2 = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: https, servername: 'site.example', rejectUnauthorized: false });
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('end', () => resolve(got));
      s.on('error', reject);
      s.write('GET /b HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n');
    });
    assert.match(r2, /^HTTP\/1\.1 200 /);
    assert.match(r2, /\r\n\r\nhttps \/b$/);
    // The redirect keeps host, path and query, names the HTTPS listener's port, and is a 308 so
    // that a POST stays a POST.
    const r3 = await raw(
      redirect,
      'POST /c?d=1 HTTP/1.1\r\nHost: Site.Example:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
    );
    assert.match(r3, /^HTTP\/1\.1 308 Permanent Redirect\r\n/);
    assert.match(r3, new RegExp(`\\r\\nLocation: https://site\\.example:${https}/c\\?d=1\\r\\n`));
    assert.match(r3, /\r\nContent-Length: 0\r\n/);
  });

  it('a redirecting listener leaves ACME challenge paths alone, and refuses a Host it cannot redirect to', async () => {
    const up = await httpUpstream((_req, res) => res.end('upstream'));
    const { ports } = await startProxyListeners({
      upstreams: [{ url: up.url }],
      listen: [{ address: '127.0.0.1:0', redirect: 'https' }],
    });
    const challenge = await raw(
      ports[0],
      'GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
    );
    assert.match(challenge, /^HTTP\/1\.1 404 /);
    assert.doesNotMatch(challenge, /Location:/);
    // No HTTPS listener configured: the redirect goes to the default port, 443.
    const plain = await raw(ports[0], 'GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.match(plain, /\r\nLocation: https:\/\/a\.example\/\r\n/);
    for (const host of ['evil.example/@a.example', 'a.example@evil.example', '']) {
      const r = await raw(ports[0], `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 400 /, JSON.stringify(host));
      assert.doesNotMatch(r, /Location:/);
    }
  });

  it('chooses the certificate by SNI: exact names, then wildcards, then the default', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-sni-'));
    const fallback = makeCert(['default.example'], dir);
    const exact = makeCert(['a.example', 'www.a.example'], dir);
    const wild = makeCert(['*.b.example'], dir);
    const { ports } = await startProxyListeners({
      upstreams: [{ url: up.url }],
      tls: { certificates: [fallback, exact, wild] },
      listen: [{ address: '127.0.0.1:0', tls: {} }],
    });
    const port = ports[0];
    assert.equal(await servedName(port, 'a.example'), 'a.example');
    assert.equal(await servedName(port, 'WWW.A.EXAMPLE'), 'a.example');
    assert.equal(await servedName(port, 'x.b.example'), '*.b.example');
    // A wildcard covers one label: not the bare domain, not two labels down.
    assert.equal(await servedName(port, 'b.example'), 'default.example');
    assert.equal(await servedName(port, 'y.x.b.example'), 'default.example');
    assert.equal(await servedName(port, 'unknown.example'), 'default.example');
    assert.equal(await servedName(port, undefined), 'default.example');
  });

  it('serves the configured default certificate, or refuses unknown names under strictSni', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-sni-'));
    const one = makeCert(['one.example'], dir);
    const two = makeCert(['two.example'], dir);
    const { ports } = await startProxyListeners({
      upstreams: [{ url: up.url }],
      tls: { certificates: [one, two], defaultCertificate: two.cert },
      listen: [
        { address: '127.0.0.1:0', tls: {} },
        { address: '127.0.0.1:0', tls: { strictSni: true } },
      ],
    });
    assert.equal(await servedName(ports[0], 'other.example'), 'two.example');
    assert.equal(await servedName(ports[1], 'one.example'), 'one.example');
    await assert.rejects(servedName(ports[1], 'other.example'));
    await assert.rejects(servedName(ports[1], undefined));
  });
});

describe('switchyard check: certificates', () => {
  const config = (tlsBlock: string): string =>
    configFile(`upstreams: [{ url: "http://127.0.0.1:3000" }]\nlisten: 127.0.0.1:8443\ntls:\n${tlsBlock}`);

  it('accepts good pairs and says how many each listener serves', () => {
    const a = makeCert(['a.example']);
    const b = makeCert(['b.example']);
    const r = check(
      '--config',
      config(`  certificates:\n    - { cert: ${a.cert}, key: ${a.key} }\n    - { cert: ${b.cert}, key: ${b.key} }\n`),
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /listen 127\.0\.0\.1:8443 \(https, 2 certificate\(s\)\)/);
    assert.equal(r.stderr, '');
  });

  it('refuses a key of another certificate, an expired certificate and an unreadable file, naming the key and the file', () => {
    const a = makeCert(['a.example']);
    const b = makeCert(['b.example']);
    let r = check('--config', config(`  certificates:\n    - { cert: ${a.cert}, key: ${b.key} }\n`));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /tls\.certificates\[0\]\.key: got ".*"; expected the private key of .*a\.example\.pem/);
    r = check(
      '--config',
      config(`  cert: ${join(FIXTURES, 'expired.pem')}\n  key: ${join(FIXTURES, 'expired-key.pem')}\n`),
    );
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /tls\.cert: got ".*expired\.pem"; expected a certificate still valid \(.*expired\.pem expired Jan +1 00:00:00 2001 GMT\)/,
    );
    r = check('--config', config(`  cert: /nope.pem\n  key: ${a.key}\n`));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /tls\.cert: got "\/nope\.pem"; expected a readable file/);
    r = check(
      '--config',
      config(`  certificates:\n    - { cert: ${a.cert}, key: ${a.key} }\n  defaultCertificate: ${b.cert}\n`),
    );
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /tls\.defaultCertificate: got ".*b\.example\.pem"; expected the `cert` file of one of the certificates/,
    );
  });

  it('warns of a key file other users can read, and still accepts it', () => {
    const a = makeCert(['a.example']);
    const open = join(mkdtempSync(join(tmpdir(), 'swy-key-')), 'open-key.pem');
    copyFileSync(a.key, open);
    chmodSync(open, 0o644);
    const r = check('--config', config(`  cert: ${a.cert}\n  key: ${open}\n`));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: tls\.key: .*open-key\.pem is readable by other users/);
  });

  it('warns when a list of listeners leaves the tls certificates unserved', () => {
    const a = makeCert(['a.example']);
    const r = check(
      '--config',
      configFile(
        `upstreams: [{ url: "http://127.0.0.1:3000" }]\ntls: { cert: ${a.cert}, key: ${a.key} }\nlisten: [127.0.0.1:8080, 127.0.0.1:8443]\n`,
      ),
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: tls: no listener in `listen` has `tls`, so these certificates are not served/);
  });

  it('refuses an HTTPS listener without certificates, and a redirect on an HTTPS listener', () => {
    let r = check(
      '--config',
      configFile('upstreams: [{ url: "http://127.0.0.1:3000" }]\nlisten:\n  - { address: 127.0.0.1:8443, tls: {} }\n'),
    );
    assert.equal(r.status, 2);
    assert.match(r.stderr, /tls: got \{\}; expected certificates: `cert` and `key`, or `certificates`/);
    const a = makeCert(['a.example']);
    r = check(
      '--config',
      configFile(
        `upstreams: [{ url: "http://127.0.0.1:3000" }]\ntls: { cert: ${a.cert}, key: ${a.key} }\nlisten:\n  - { address: 127.0.0.1:8443, tls: {}, redirect: https }\n`,
      ),
    );
    assert.equal(r.status, 2);
    assert.match(r.stderr, /listen\[0\]\.redirect: got "https"; expected no redirect on a listener with tls/);
  });
});

/** Raw bytes over TLS; resolves with everything the proxy sent until it closed. */
function rawTls(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.example', rejectUnauthorized: false });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('end', () => resolve(got));
    s.on('error', reject);
    s.write(bytes);
  });
}

describe('server.maxConnections across listeners', () => {
  /** A TLS connection that has made one request and stays open; resolves once answered. */
  const openTls = (port: number): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.example', rejectUnauthorized: false });
      s.once('error', reject);
      s.once('data', () => resolve(s));
      s.write('GET / HTTP/1.1\r\nHost: site.example\r\n\r\n');
    });
  /** A TLS connection the proxy closes before any answer: resolves with how it ended. */
  const refusedTls = (port: number): Promise<string> =>
    new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'site.example', rejectUnauthorized: false });
      s.on('data', () => resolve('answered'));
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      s.once('close', () => resolve('closed'));
      s.once('secureConnect', () => s.write('GET / HTTP/1.1\r\nHost: site.example\r\n\r\n'));
    });

  it('caps the worker’s connections on all listeners together, HTTPS ones included', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const site = makeCert(['site.example']);
    const { server, ports } = await startProxyListeners({
      upstreams: [{ url: up.url }],
      tls: { cert: site.cert, key: site.key },
      server: { maxConnections: 3 },
      listen: ['127.0.0.1:0', { address: '127.0.0.1:0', tls: {} }, { address: '127.0.0.1:0', tls: {} }],
    });
    const [plain, https1, https2] = ports;
    const held = [await openTls(https1), await openTls(https2)];
    const plainHeld = net.connect(plain, '127.0.0.1');
    await new Promise((r) => plainHeld.once('connect', r));
    await waitFor(() => server.connections === 3);
    // A fourth, on any listener, is closed as it is accepted.
    assert.notEqual(await refusedTls(https1), 'answered');
    assert.notEqual(await refusedTls(https2), 'answered');
    assert.equal(await raw(plain, 'GET / HTTP/1.1\r\nHost: site.example\r\n\r\n'), '');
    // One goes: there is room again, on an HTTPS listener.
    held[0].destroy();
    await waitFor(() => server.connections === 2);
    const again = await openTls(https2);
    again.destroy();
    held[1].destroy();
    plainHeld.destroy();
  });
});

describe('Strict-Transport-Security (hsts)', () => {
  const sts = (response: string): string[] =>
    response
      .split('\r\n\r\n')[0]
      .split('\r\n')
      .filter((l) => /^strict-transport-security:/i.test(l))
      .map((l) => l.slice(l.indexOf(':') + 1).trim());

  it('per HTTPS listener and per route, replacing the upstream’s own; never over plain HTTP', async () => {
    const up = await httpUpstream((_req, res) => {
      res.setHeader('Strict-Transport-Security', 'max-age=5');
      res.end('ok');
    });
    const site = makeCert(['site.example']);
    const { ports } = await startProxyListeners({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [
        { match: { path: '/off' }, pool: 'app', hsts: false },
        { match: { path: '/own' }, pool: 'app', hsts: { maxAge: 60, includeSubDomains: true, preload: true } },
        { match: {}, pool: 'app' },
      ],
      listen: [
        '127.0.0.1:0',
        { address: '127.0.0.1:0', tls: { cert: site.cert, key: site.key, hsts: true } },
        { address: '127.0.0.1:0', tls: { cert: site.cert, key: site.key } },
      ],
    });
    const [plain, https, httpsWithout] = ports;
    const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n`;
    assert.deepEqual(sts(await rawTls(https, get('/'))), ['max-age=31536000']);
    assert.deepEqual(sts(await rawTls(https, get('/own'))), ['max-age=60; includeSubDomains; preload']);
    // hsts: false on the route takes the header away, the upstream's included.
    assert.deepEqual(sts(await rawTls(https, get('/off'))), []);
    // A listener without hsts passes the upstream's through; a route's own still applies there.
    assert.deepEqual(sts(await rawTls(httpsWithout, get('/'))), ['max-age=5']);
    assert.deepEqual(sts(await rawTls(httpsWithout, get('/own'))), ['max-age=60; includeSubDomains; preload']);
    // RFC 6797 §7.2: not over plain HTTP, whatever the route says (the upstream's passes as sent).
    assert.deepEqual(sts(await raw(plain, get('/own'))), ['max-age=5']);
  });
});
