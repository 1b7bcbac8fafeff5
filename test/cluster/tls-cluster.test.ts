/**
 * HTTPS in a real cluster: session resumption across workers (the primary's shared ticket keys),
 * and certificate files replaced while connections are open (a reload in place, no restart).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { makeCert } from '../support/certs';
import { configFile, httpUpstream, startCli, waitFor } from '../support/helpers';

/** One request on an open TLS connection; resolves with the response body (Content-Length framed). */
function get(socket: tls.TLSSocket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const text = got.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(text);
      if (end === -1 || length === null || got.length < end + 4 + Number(length[1])) return;
      socket.off('data', onData);
      resolve(text.slice(end + 4));
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: a.example\r\n\r\n`);
  });
}

/** The demo page (chunked), read to the end of the connection. */
function page(socket: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.once('end', () => resolve(text));
    socket.once('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
  });
}

function connect(port: number, session?: Buffer): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'a.example',
      rejectUnauthorized: false,
      ...(session ? { session } : {}),
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

const fingerprint = (s: tls.TLSSocket): string => s.getPeerCertificate().fingerprint256;

describe('HTTPS in the cluster', function () {
  this.timeout(60_000);

  it('resumes TLS sessions across workers: the primary shares the ticket keys', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const site = makeCert(['a.example']);
    const config = configFile(
      `upstreams: [{ url: "${up.url}" }]\ntls: { cert: ${site.cert}, key: ${site.key} }\n` +
        // Round robin: consecutive connections go to alternate workers, so each resumption crosses.
        'schedulingPolicy: round-robin\naccessLog: { enabled: true }\n',
    );
    const cli = await startCli(['--config', config, '--workers', '2']);
    // One ticket, from the first connection's worker, presented on every reconnect: with
    // round robin, half of those reach the other worker, which can resume it only with the same key.
    const first = await connect(cli.port);
    const ticket = new Promise<Buffer>((resolve) => first.once('session', resolve));
    assert.equal(await get(first, '/r0'), 'ok');
    const session = await ticket;
    first.destroy();
    let resumed = 0;
    const tries = 30;
    for (let i = 1; i <= tries; i++) {
      const s = await connect(cli.port, session);
      assert.equal(await get(s, `/r${i}`), 'ok');
      if (s.isSessionReused()) resumed++;
      s.destroy();
    }
    assert.ok(resumed >= tries * 0.9, `${resumed} of ${tries} reconnects resumed`);
    // Both workers served: the resumptions crossed from one worker to the other.
    const lines = await waitFor(() => {
      const l = cli.logs.filter((x) => typeof x.path === 'string' && String(x.path).startsWith('/r'));
      return l.length > tries ? l : undefined;
    });
    assert.equal(new Set(lines.map((l) => l.worker)).size, 2);
    // The access log says how each connection was made.
    assert.ok(lines.every((l) => l.tls === 'TLSv1.3'));
    assert.equal(lines.find((l) => l.path === '/r0')?.tlsResumed, false);
    assert.equal(lines.filter((l) => l.tlsResumed === true).length, resumed);
  });

  it('--cert and --key serve HTTPS in one line; the demo page shows the TLS version and a resumed session', async () => {
    const site = makeCert(['a.example']);
    const cli = await startCli(['--cert', site.cert, '--key', site.key, '--workers', '1']);
    const first = await connect(cli.port);
    const ticket = new Promise<Buffer>((resolve) => first.once('session', resolve));
    assert.match(await page(first), /over <strong>TLSv1\.3, full handshake<\/strong>/);
    const session = await ticket;
    first.destroy();
    const again = await connect(cli.port, session);
    assert.equal(again.isSessionReused(), true);
    assert.match(await page(again), /over <strong>TLSv1\.3, resumed session<\/strong>/);
    again.destroy();
  });

  it('serves replaced certificate files to new handshakes, keeps open connections, restarts nothing', async () => {
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-hot-'));
    const first = makeCert(['a.example'], dir, 'first');
    const cert = join(dir, 'site.pem');
    const key = join(dir, 'site-key.pem');
    writeFileSync(cert, readFileSync(first.cert));
    writeFileSync(key, readFileSync(first.key), { mode: 0o600 });
    const config = configFile(`upstreams: [{ url: "${up.url}" }]\ntls: { cert: ${cert}, key: ${key} }\n`);
    const cli = await startCli(['--config', config, '--workers', '2']);
    const pids = cli.workerPids().sort();
    const open = await connect(cli.port);
    assert.equal(await get(open, '/before'), 'ok');
    const firstPrint = fingerprint(open);

    // Replaced as renewal tools do it: written aside, then renamed into place.
    const second = makeCert(['a.example'], dir, 'second');
    const secondPrint = new X509Certificate(readFileSync(second.cert)).fingerprint256;
    writeFileSync(`${key}.new`, readFileSync(second.key), { mode: 0o600 });
    writeFileSync(`${cert}.new`, readFileSync(second.cert));
    renameSync(`${key}.new`, key);
    renameSync(`${cert}.new`, cert);
    const reloaded = await waitFor(() => cli.logs.find((l) => l.event === 'certificates-reloaded'));
    assert.deepEqual((reloaded.changed as string[]).sort(), [cert, key].sort());

    for (let i = 0; i < 4; i++) {
      const fresh = await connect(cli.port);
      assert.equal(fingerprint(fresh), secondPrint);
      assert.equal(await get(fresh, `/after${i}`), 'ok');
      fresh.destroy();
    }
    // The connection opened before the change still works, on its first certificate.
    assert.equal(await get(open, '/still'), 'ok');
    assert.equal(fingerprint(open), firstPrint);
    open.destroy();
    assert.deepEqual(cli.workerPids().sort(), pids);
    assert.equal(cli.logs.filter((l) => l.event === 'worker-started').length, 2);

    // A replacement that does not load (the key of another certificate) changes nothing.
    const third = makeCert(['a.example'], dir, 'third');
    writeFileSync(`${cert}.new`, readFileSync(third.cert));
    renameSync(`${cert}.new`, cert);
    const refused = await waitFor(() => cli.logs.find((l) => l.event === 'certificates-refused'));
    assert.match(JSON.stringify(refused.err), /expected the private key of/);
    const after = await connect(cli.port);
    assert.equal(fingerprint(after), secondPrint);
    after.destroy();
  });
});
