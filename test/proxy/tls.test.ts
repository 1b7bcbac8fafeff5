import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import { resolve } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { FIXTURES, httpUpstream, listenUpstream, request, startProxy } from '../support/helpers';

const pem = (name: string) => readFileSync(resolve(FIXTURES, name));

async function httpsUpstream(cert: string, key: string) {
  const servernames: Array<string | false | null> = [];
  const server = https.createServer({ cert: pem(cert), key: pem(key) }, (req, res) => {
    servernames.push((req.socket as TLSSocket).servername);
    res.end(`secure ${req.headers.host}`);
  });
  const up = await listenUpstream(server, 'https');
  return { ...up, servernames };
}

describe('TLS', () => {
  it('verifies an https upstream against a configured CA, with SNI', async () => {
    const up = await httpsUpstream('server.pem', 'server-key.pem');
    const proxy = await startProxy({
      upstreams: [{ url: `https://localhost:${up.port}`, ca: resolve(FIXTURES, 'ca.pem') }],
    });
    const res = await request(proxy.url);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), `secure localhost:${up.port}`);
    assert.deepEqual(up.servernames, ['localhost']);
  });

  it('reuses the TLS connection across requests', async () => {
    const up = await httpsUpstream('server.pem', 'server-key.pem');
    const proxy = await startProxy({
      upstreams: [{ url: `https://127.0.0.1:${up.port}`, ca: resolve(FIXTURES, 'ca.pem') }],
    });
    for (let i = 0; i < 10; i++) assert.equal((await request(proxy.url)).status, 200);
    assert.equal(up.connections.length, 1);
  });

  it('answers 502 for a certificate that does not verify against the system CAs', async () => {
    const up = await httpsUpstream('server.pem', 'server-key.pem');
    const proxy = await startProxy({ upstreams: [{ url: `https://localhost:${up.port}` }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_TLS/);
  });

  it('answers 502 for a self-signed certificate not issued by the configured CA', async () => {
    const up = await httpsUpstream('self-signed.pem', 'self-signed-key.pem');
    const proxy = await startProxy({
      upstreams: [{ url: `https://localhost:${up.port}`, ca: resolve(FIXTURES, 'ca.pem') }],
    });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /SWY_ERR_UPSTREAM_TLS/);
  });

  it('answers 502 when the certificate names another host', async () => {
    const up = await httpsUpstream('server.pem', 'server-key.pem');
    const proxy = await startProxy({
      upstreams: [
        { url: `https://127.0.0.1:${up.port}`, ca: resolve(FIXTURES, 'ca.pem'), servername: 'other.example' },
      ],
    });
    const res = await request(proxy.url);
    assert.equal(res.status, 502);
  });

  it('accepts any certificate only with insecure: true', async () => {
    const up = await httpsUpstream('self-signed.pem', 'self-signed-key.pem');
    const proxy = await startProxy({ upstreams: [{ url: `https://localhost:${up.port}`, insecure: true }] });
    const res = await request(proxy.url);
    assert.equal(res.status, 200);
  });

  it('serves HTTPS on the listener and reports X-Forwarded-Proto https', async () => {
    let proto: string | undefined;
    const up = await httpUpstream((req, res) => {
      proto = req.headers['x-forwarded-proto'] as string;
      res.end('behind tls');
    });
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      tls: { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') },
    });
    const body = await new Promise<string>((resolvePromise, reject) => {
      https
        .get(`https://localhost:${proxy.port}/`, { ca: pem('ca.pem'), agent: false }, (res) => {
          let b = '';
          res.on('data', (c: Buffer) => {
            b += c.toString();
          });
          res.on('end', () => resolvePromise(b));
        })
        .on('error', reject);
    });
    assert.equal(body, 'behind tls');
    assert.equal(proto, 'https');
  });
});

/** What `openssl s_client` shows of a TLS exchange: the records (-msg) and the cleartext. */
function sClient(port: number, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_3', '-msg', '-ign_eof'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.on('error', reject);
    child.on('close', () => resolve(out));
    child.stdin.write(input);
    // s_client exits when the server closes; stdin stays open until then (-ign_eof).
    setTimeout(() => child.stdin.end(), 3000).unref();
  });
}

describe('TLS: the end of a connection', () => {
  it('sends close_notify before closing, on a fresh connection and after keep-alive requests', async () => {
    const up = await httpUpstream((_req, res) => res.end('hello'));
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      tls: { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') },
    });
    // HTTP/1.0: the response ends with the connection, so only close_notify tells it was whole.
    const fresh = await sClient(proxy.port, 'GET /a HTTP/1.0\r\n\r\n');
    assert.match(fresh, /hello/);
    assert.match(fresh, /<<< TLS 1\.3, Alert \[length 0002\], warning close_notify/);
    assert.doesNotMatch(fresh, /unexpected eof/);
    const reused = await sClient(
      proxy.port,
      'GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    assert.equal(reused.split('hello').length - 1, 3);
    assert.match(reused, /<<< TLS 1\.3, Alert \[length 0002\], warning close_notify/);
    assert.doesNotMatch(reused, /unexpected eof/);
  });
});
