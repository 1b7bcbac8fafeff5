/**
 * Pools whose members come from DNS (A and SRV), against a real DNS server on a UDP socket.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startDnsServer } from '../support/dns-server';
import { onCleanup, request, startProxy, waitFor } from '../support/helpers';

/** An upstream on a given loopback address, answering with its address:port. */
async function upstreamOn(host: string, port = 0): Promise<{ port: number; hits: () => number }> {
  let hits = 0;
  const server = http.createServer((_req, res) => {
    hits++;
    res.end(`${host}:${(server.address() as AddressInfo).port}`);
  });
  server.listen(port, host);
  await once(server, 'listening');
  onCleanup(
    () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r(undefined));
      }),
  );
  return { port: (server.address() as AddressInfo).port, hits: () => hits };
}

async function bodies(url: string, n: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await request(url);
    seen.add(r.status === 200 ? r.body.toString() : String(r.status));
  }
  return seen;
}

describe('DNS-discovered pools', () => {
  it('follows A records: members appear and leave as the answer changes', async () => {
    const first = await upstreamOn('127.0.0.2');
    const port = first.port;
    await upstreamOn('127.0.0.3', port);
    await upstreamOn('127.0.0.4', port);
    const dns = await startDnsServer();
    dns.a.set('svc.test', { addresses: ['127.0.0.2', '127.0.0.3'], ttl: 60 });
    const proxy = await startProxy({
      pools: { svc: { dns: { name: 'svc.test', port, servers: [dns.address], interval: 50 } } },
    });
    assert.deepEqual(await bodies(proxy.url, 6), new Set([`127.0.0.2:${port}`, `127.0.0.3:${port}`]));
    dns.a.set('svc.test', { addresses: ['127.0.0.3', '127.0.0.4'], ttl: 60 });
    await waitFor(async () => (await bodies(proxy.url, 2)).has(`127.0.0.4:${port}`));
    assert.deepEqual(await bodies(proxy.url, 6), new Set([`127.0.0.3:${port}`, `127.0.0.4:${port}`]));
  });

  it("re-resolves on the records' TTL when no interval is set", async () => {
    const up = await upstreamOn('127.0.0.1');
    const dns = await startDnsServer();
    dns.a.set('ttl.test', { addresses: ['127.0.0.1'], ttl: 1 });
    const proxy = await startProxy({
      pools: { p: { dns: { name: 'ttl.test', port: up.port, servers: [dns.address] } } },
    });
    assert.equal((await request(proxy.url)).status, 200);
    const asked = dns.queries;
    await waitFor(() => dns.queries > asked, 50);
  });

  it('takes AAAA records as IPv6 members', async function () {
    // A machine without IPv6 loopback cannot host this upstream; that says nothing about DNS.
    const up = await upstreamOn('::1').catch(() => null);
    if (up === null) this.skip();
    const dns = await startDnsServer();
    dns.aaaa.set('v6.test', { addresses: ['::1'], ttl: 60 });
    const proxy = await startProxy({
      pools: { p: { dns: { name: 'v6.test', type: 'AAAA', port: up.port, servers: [dns.address] } } },
    });
    assert.deepEqual(await bodies(proxy.url, 2), new Set([`::1:${up.port}`]));
    assert.deepEqual(
      proxy.server.pools.get('p')!.members.map((m) => m.url),
      [`http://[::1]:${up.port}`],
    );
  });

  it('takes SRV records of the best priority, at their own ports', async () => {
    const a = await upstreamOn('127.0.0.1');
    const b = await upstreamOn('127.0.0.1');
    const backup = await upstreamOn('127.0.0.1');
    const dns = await startDnsServer();
    dns.srv.set('_http._tcp.svc.test', [
      { priority: 10, weight: 1, port: a.port, target: '127.0.0.1' },
      { priority: 10, weight: 1, port: b.port, target: '127.0.0.1' },
      { priority: 20, weight: 1, port: backup.port, target: '127.0.0.1' },
    ]);
    const proxy = await startProxy({
      pools: { p: { dns: { name: '_http._tcp.svc.test', type: 'SRV', servers: [dns.address] } } },
    });
    assert.deepEqual(await bodies(proxy.url, 6), new Set([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`]));
    assert.equal(backup.hits(), 0);
  });

  it('a name with no records is an empty pool: 503, not a hang', async () => {
    const dns = await startDnsServer();
    const proxy = await startProxy({ pools: { p: { dns: { name: 'gone.test', port: 80, servers: [dns.address] } } } });
    const r = await request(proxy.url);
    assert.equal(r.status, 503);
    assert.match(r.body.toString(), /SWY_ERR_NO_HEALTHY_UPSTREAM/);
  });
});
