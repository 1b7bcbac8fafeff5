import assert from 'node:assert/strict';
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
