/**
 * Pools of three real upstreams: distribution by policy, passive and active health, retries,
 * per-member connection limits, and what happens when members die and come back.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as http from 'node:http';
import type * as net from 'node:net';
import { validate } from '../../src/config/load';
import { Membership } from '../../src/upstream/membership';
import {
  delay,
  httpUpstream,
  memberPool,
  onCleanup,
  rawUpstream,
  request,
  silentLogger,
  startProxy,
  waitFor,
  type Upstream,
} from '../support/helpers';

interface Counted extends Upstream {
  hits: number;
  name: string;
}

/** Three upstreams that answer with their name and count what they serve. */
async function three(
  handler?: (name: string, req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<Counted[]> {
  return Promise.all(
    ['a', 'b', 'c'].map(async (name) => {
      const counted = { hits: 0, name } as Counted;
      const up = await httpUpstream((req, res) => {
        counted.hits++;
        if (handler !== undefined) handler(name, req, res);
        else res.end(name);
      });
      return Object.assign(counted, up);
    }),
  );
}

function pool(
  ups: Upstream[],
  extra: Record<string, unknown> = {},
  member: (u: Upstream, i: number) => Record<string, unknown> = () => ({}),
) {
  return { pools: { web: { members: ups.map((u, i) => ({ url: u.url, ...member(u, i) })), ...extra } } };
}

/** Stop an upstream hard: no new connections, existing ones reset. */
async function kill(up: Upstream): Promise<void> {
  const closed = once(up.server, 'close');
  up.server.close();
  for (const s of up.connections) s.destroy();
  await closed;
}

/** Listen again on the same port. */
async function revive(up: Upstream): Promise<void> {
  up.server.listen(up.port, '127.0.0.1');
  await once(up.server, 'listening');
}

async function sequential(url: string, n: number, headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await request(url, { headers })).body.toString());
  return out;
}

function tally(names: string[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const n of names) t[n] = (t[n] ?? 0) + 1;
  return t;
}

describe('pools of upstreams: balancing, health, retries', () => {
  it('round-robin and weighted-round-robin distribute as configured', async () => {
    const ups = await three();
    const rr = await startProxy(pool(ups));
    assert.deepEqual(tally(await sequential(rr.url, 30)), { a: 10, b: 10, c: 10 });
    const wrr = await startProxy(pool(ups, { policy: 'weighted-round-robin' }, (_u, i) => ({ weight: [3, 1, 1][i] })));
    assert.deepEqual(tally(await sequential(wrr.url, 50)), { a: 30, b: 10, c: 10 });
  });

  it('least-connections sends new requests away from a member busy with slow ones', async () => {
    const held: Array<{ name: string; end: () => void }> = [];
    const ups = await three((name, req, res) => {
      if (req.url === '/slow') held.push({ name, end: () => res.end(name) });
      else res.end(name);
    });
    const proxy = await startProxy(pool(ups, { policy: 'least-connections' }));
    // Three slow requests go one per member; b's and c's finish, a's stays in flight.
    const slow = [0, 1, 2].map(() => request(`${proxy.url}/slow`));
    await waitFor(() => held.length === 3);
    assert.deepEqual(held.map((h) => h.name).sort(), ['a', 'b', 'c']);
    for (const h of held) if (h.name !== 'a') h.end();
    const fast = tally(await sequential(`${proxy.url}/fast`, 20));
    assert.deepEqual(fast, { b: 10, c: 10 }, 'a, busy, got none');
    held.find((h) => h.name === 'a')!.end();
    assert.deepEqual(
      (await Promise.all(slow)).map((r) => r.status),
      [200, 200, 200],
    );
  });

  it('hash on a header or cookie keeps each key on one member', async () => {
    const ups = await three();
    const byHeader = await startProxy(pool(ups, { policy: 'hash', hashKey: 'header:X-User' }));
    const byCookie = await startProxy(pool(ups, { policy: 'hash', hashKey: 'cookie:sid' }));
    const seen = new Set<string>();
    for (let user = 0; user < 12; user++) {
      const first = await sequential(byHeader.url, 4, { 'X-User': `user-${user}` });
      assert.equal(new Set(first).size, 1, `user-${user} stayed on one member: ${first.join()}`);
      seen.add(first[0]);
      const cookie = await sequential(byCookie.url, 3, { Cookie: `theme=dark; sid=s${user}; x=y` });
      assert.equal(new Set(cookie).size, 1);
    }
    assert.ok(seen.size >= 2, 'different keys reach different members');
  });

  it('retries a request that never reached a member on another one (connect refused), even a POST', async () => {
    const ups = await three((name, req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => res.end(`${name}:${Buffer.concat(chunks).toString()}`));
    });
    const proxy = await startProxy(pool(ups, { passive: { failures: 0 } }));
    await kill(ups[1]);
    const answers: string[] = [];
    for (let i = 0; i < 9; i++) {
      const r = await request(proxy.url, { method: 'POST', headers: { 'Content-Type': 'text/plain' } }, `body-${i}`);
      assert.equal(r.status, 200);
      answers.push(r.body.toString());
    }
    // Every body arrived whole, once, at a live member.
    assert.deepEqual(
      answers.map((a) => a.split(':')[1]),
      Array.from({ length: 9 }, (_, i) => `body-${i}`),
    );
    assert.ok(answers.every((a) => !a.startsWith('b:')));
  });

  it('retries a large upload whose first member refused, body intact (read from the client only once connected)', async () => {
    const up = await httpUpstream((req, res) => {
      const hash = createHash('sha256');
      req.on('data', (c: Buffer) => hash.update(c));
      req.on('end', () => res.end(hash.digest('hex')));
    });
    const dead = await httpUpstream(() => undefined);
    await kill(dead);
    const body = randomBytes(3 * 1024 * 1024);
    const want = createHash('sha256').update(body).digest('hex');
    for (const headers of [{}, { Expect: '100-continue' }]) {
      // A fresh proxy each time: round robin starts at the dead member.
      const proxy = await startProxy({
        pools: { web: { members: [{ url: dead.url }, { url: up.url }], passive: { failures: 0 } } },
      });
      const r = await request(
        proxy.url,
        { method: 'POST', headers: { ...headers, 'Content-Length': String(body.length) } },
        body,
      );
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), want);
    }
  });

  it('does not resend a request that reached a member unless it is idempotent and retries.idempotent is on', async () => {
    // Member 0 takes the request and drops the connection without answering; member 1 answers.
    const received: string[] = [];
    const dropper = await rawUpstream((socket: net.Socket) => {
      socket.on('data', (d: Buffer) => {
        received.push(d.toString('latin1').split('\r\n')[0]);
        socket.destroy();
      });
    });
    const good = await httpUpstream((req, res) => res.end(`good ${req.method}`));
    const members = [{ url: dropper.url }, { url: good.url }];
    // A fresh proxy per request: round robin then starts at the dropper every time.
    const proxy = async (idempotent: boolean) =>
      (await startProxy({ pools: { web: { members, passive: { failures: 0 }, retries: { idempotent } } } })).url;

    assert.equal((await request(await proxy(false))).status, 502, 'GET is not resent by default');
    const r = await request(await proxy(true));
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'good GET', 'GET is resent with retries.idempotent');
    const post = await request(await proxy(true), { method: 'POST' });
    assert.equal(post.status, 502, 'POST is never resent once it reached a member');
    const put = await request(await proxy(true), { method: 'PUT', headers: { 'Content-Length': '5' } }, 'hello');
    assert.equal(put.status, 502, 'a PUT whose body was streamed is never resent');
    assert.deepEqual(received, ['GET / HTTP/1.1', 'GET / HTTP/1.1', 'POST / HTTP/1.1', 'PUT / HTTP/1.1']);
  });

  it('bounds retries by retries.attempts', async () => {
    const ups = await three();
    await Promise.all(ups.map(kill));
    const proxy = await startProxy(pool(ups, { passive: { failures: 0 }, retries: { attempts: 2 } }));
    const r = await request(proxy.url);
    assert.equal(r.status, 502);
    assert.match(r.body.toString(), /SWY_ERR_UPSTREAM_CONNECT/);
  });

  it('ejects a failing member (passive), sends it nothing during the cool-down, and takes it back after', async () => {
    const ups = await three();
    const proxy = await startProxy(pool(ups, { passive: { failures: 2, window: 10_000, cooldown: 400 } }));
    const group = proxy.server.pools.get('web')!;
    await kill(ups[2]);
    // Every request succeeds: the dead member's refusals are retried elsewhere, and counted.
    for (const name of await sequential(proxy.url, 12)) assert.notEqual(name, 'c');
    assert.equal(group.members[2].healthy, false, 'c was ejected');
    await revive(ups[2]);
    ups[2].hits = 0;
    await waitFor(() => group.members[2].healthy);
    const after = tally(await sequential(proxy.url, 30));
    assert.equal(after.c, 10, `c gets traffic again: ${JSON.stringify(after)}`);
  });

  it("never ejects a pool's only member: it serves again as soon as it is back", async () => {
    const only = await httpUpstream((_req, res) => res.end('only'));
    const proxy = await startProxy({
      pools: { web: { members: [{ url: only.url }], passive: { failures: 1, cooldown: 60_000 } } },
    });
    await kill(only);
    for (let i = 0; i < 3; i++) assert.equal((await request(proxy.url)).status, 502);
    assert.equal(proxy.server.pools.get('web')!.members[0].healthy, true);
    await revive(only);
    const r = await request(proxy.url);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'only');
  });

  it('active checks take a member out after `fall` failures and back after `rise` passes', async () => {
    let bHealthy = true;
    const ups = await three((name, req, res) => {
      if (req.url === '/health') {
        res.statusCode = name === 'b' && !bHealthy ? 503 : 200;
        res.end();
        return;
      }
      res.end(name);
    });
    const proxy = await startProxy(
      pool(ups, { healthCheck: { path: '/health', interval: 30, timeout: 500, rise: 2, fall: 2 } }),
    );
    const group = proxy.server.pools.get('web')!;
    assert.deepEqual(tally(await sequential(proxy.url, 9)), { a: 3, b: 3, c: 3 });
    bHealthy = false;
    await waitFor(() => !group.members[1].healthy);
    assert.deepEqual(tally(await sequential(proxy.url, 10)), { a: 5, c: 5 });
    bHealthy = true;
    await waitFor(() => group.members[1].healthy);
    assert.equal(tally(await sequential(proxy.url, 9)).b, 3);
  });

  it('announces a health change for the pool that changed, not for every pool', async () => {
    const sick = await httpUpstream((_req, res) => {
      res.statusCode = 500;
      res.end();
    });
    const fine = await httpUpstream((_req, res) => res.end('ok'));
    const membership = new Membership(
      validate({
        pools: {
          a: { members: [{ url: sick.url }, { url: fine.url }], healthCheck: { path: '/', interval: 20, fall: 1 } },
          b: { members: [{ url: fine.url }] },
        },
      }).pools!,
      silentLogger,
    );
    const seen: string[][] = [];
    membership.onChange((s) => seen.push(Object.keys(s)));
    await membership.start();
    onCleanup(() => membership.stop());
    await waitFor(() => seen.length > 0);
    assert.deepEqual(seen[0], ['a']);
    assert.deepEqual(Object.keys(membership.snapshot()).sort(), ['a', 'b']);
  });

  it('answers 503 with Retry-After at once when every member is down', async () => {
    const ups = await three((_name, req, res) => {
      res.statusCode = req.url === '/health' ? 500 : 200;
      res.end();
    });
    const proxy = await startProxy(pool(ups, { healthCheck: { path: '/health', interval: 20, fall: 1 } }));
    const group = proxy.server.pools.get('web')!;
    await waitFor(() => group.members.every((m) => !m.healthy));
    const before = ups.reduce((n, u) => n + u.hits, 0);
    const r = await request(proxy.url);
    assert.equal(r.status, 503);
    assert.match(r.body.toString(), /SWY_ERR_NO_HEALTHY_UPSTREAM/);
    assert.equal(r.headers['retry-after'], '1');
    // Only health checks reached the members; the request did not.
    await delay(30);
    assert.ok(ups.every((u) => u.hits >= 1) && ups.reduce((n, u) => n + u.hits, 0) >= before);
  });

  it('limits connections per member and answers 503 with Retry-After past the queue timeout', async () => {
    const hold: http.ServerResponse[] = [];
    const up = await httpUpstream((_req, res) => {
      hold.push(res);
    });
    const proxy = await startProxy({
      pools: { web: { members: [{ url: up.url, maxConnections: 1 }], queueTimeout: 50 } },
    });
    const first = request(proxy.url);
    await waitFor(() => hold.length === 1);
    const second = await request(proxy.url);
    assert.equal(second.status, 503);
    assert.equal(second.headers['retry-after'], '1');
    assert.match(second.body.toString(), /SWY_ERR_POOL_QUEUE_TIMEOUT/);
    assert.equal(up.connections.length, 1);
    hold[0].end('done');
    assert.equal((await first).status, 200);
  });

  it('refuses at once past the queue length bound (maxQueue), with Retry-After', async () => {
    const hold: http.ServerResponse[] = [];
    const up = await httpUpstream((_req, res) => {
      hold.push(res);
    });
    const proxy = await startProxy({
      pools: { web: { members: [{ url: up.url, maxConnections: 1 }], maxQueue: 1, queueTimeout: 60_000 } },
    });
    const first = request(proxy.url);
    await waitFor(() => hold.length === 1);
    const queued = request(proxy.url);
    await waitFor(() => memberPool(proxy, 'web').stats().pending === 1);
    const refused = await request(proxy.url);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.match(refused.body.toString(), /SWY_ERR_POOL_QUEUE_FULL/);
    hold[0].end('one');
    await waitFor(() => hold.length === 2);
    hold[1].end('two');
    assert.deepEqual([(await first).body.toString(), (await queued).body.toString()], ['one', 'two']);
  });

  it('queues rather than refuses 1,500 concurrent clients waiting on one connection, with the default maxQueue', async function () {
    this.timeout(60_000);
    let first: http.ServerResponse | null = null;
    const up = await httpUpstream((_req, res) => {
      if (first === null) first = res;
      else res.end('ok');
    });
    const proxy = await startProxy({ pools: { web: { members: [{ url: up.url, maxConnections: 1 }] } } });
    const agent = new http.Agent({ maxSockets: Infinity });
    onCleanup(() => agent.destroy());
    const all = Array.from({ length: 1500 }, () => request(proxy.url, { agent }));
    await waitFor(() => memberPool(proxy, 'web').stats().pending === 1499);
    first!.end('ok');
    const statuses = (await Promise.all(all)).map((r) => r.status);
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
    );
  });

  it('loses no idempotent request under load when a member is killed, and uses it again once back', async () => {
    const ups = await three();
    const proxy = await startProxy(
      pool(ups, {
        retries: { idempotent: true },
        passive: { failures: 1, cooldown: 300 },
      }),
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    let stop = false;
    const failures: string[] = [];
    let done = 0;
    const loop = async (): Promise<void> => {
      while (!stop) {
        try {
          const r = await new Promise<number>((resolve, reject) => {
            http
              .get(`${proxy.url}/`, { agent }, (res) => {
                res.resume();
                res.on('end', () => resolve(res.statusCode!));
              })
              .on('error', reject);
          });
          if (r !== 200) failures.push(String(r));
        } catch (err) {
          failures.push((err as Error).message);
        }
        done++;
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await waitFor(() => done >= 200);
    await kill(ups[0]);
    const atKill = done;
    await waitFor(() => done >= atKill + 300);
    ups[0].hits = 0;
    await revive(ups[0]);
    await waitFor(() => ups[0].hits > 20);
    stop = true;
    await Promise.all(loops);
    agent.destroy();
    assert.deepEqual(failures, [], 'every request succeeded, before, during and after the kill');
  });
});
