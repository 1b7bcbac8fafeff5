/**
 * Routes: host (exact and wildcard), path prefix, method and header matches, first match wins,
 * 404 when nothing matches; per-route path rewrite, header edits both ways, Location rewrite.
 */
import assert from 'node:assert/strict';
import type * as http from 'node:http';
import { Router } from '../../src/proxy/router';
import type { UpstreamPool } from '../../src/upstream/pool';
import { routing, validate } from '../../src/config/load';
import { httpUpstream, rawExchange, request, startProxy, type Upstream } from '../support/helpers';

/** An upstream that answers with its name, and records what it received. */
async function named(name: string): Promise<Upstream & { seen: http.IncomingMessage[] }> {
  const seen: http.IncomingMessage[] = [];
  const up = await httpUpstream((req, res) => {
    seen.push(req);
    const location = req.headers['x-test-redirect'];
    if (typeof location === 'string') {
      res.setHeader('Location', location);
      res.setHeader('Content-Location', location);
    }
    res.setHeader('X-Upstream-Internal', 'secret');
    res.setHeader('X-Served-By', name);
    res.end(`${name} ${req.url}`);
  });
  return Object.assign(up, { seen });
}

describe('routing', () => {
  it('matches exact and wildcard hosts, path prefixes on segment boundaries, methods and headers; the first match wins', async () => {
    const [site, api, wild, canary, fallback] = await Promise.all(
      ['site', 'api', 'wild', 'canary', 'fallback'].map(named),
    );
    const pool = (u: Upstream) => ({ members: [{ url: u.url }] });
    const proxy = await startProxy({
      pools: { site: pool(site), api: pool(api), wild: pool(wild), canary: pool(canary), fallback: pool(fallback) },
      routes: [
        { match: { host: 'example.com', header: { 'X-Canary': '1' } }, pool: 'canary' },
        { match: { host: ['example.com', 'www.example.com'], path: '/api', method: ['GET', 'POST'] }, pool: 'api' },
        { match: { host: 'example.com' }, pool: 'site' },
        { match: { host: '*.example.com' }, pool: 'wild' },
        { pool: 'fallback' },
      ],
    });
    const get = async (host: string, path: string, extra: Record<string, string> = {}, method = 'GET') =>
      (await request(`${proxy.url}${path}`, { method, headers: { Host: host, ...extra } })).body.toString();

    assert.equal(await get('example.com', '/'), 'site /');
    assert.equal(await get('EXAMPLE.com.:8000', '/'), 'site /', 'case, port and trailing dot are ignored');
    assert.equal(await get('example.com', '/api'), 'api /api');
    assert.equal(await get('example.com', '/api/v1/x?y=1'), 'api /api/v1/x?y=1');
    assert.equal(await get('example.com', '/api?y=1'), 'api /api?y=1');
    assert.equal(await get('example.com', '/apix'), 'site /apix', 'a prefix matches whole segments only');
    assert.equal(await get('example.com', '/api', {}, 'DELETE'), 'site /api', 'method mismatch falls through');
    assert.equal(await get('www.example.com', '/api/x'), 'api /api/x');
    assert.equal(
      await get('www.example.com', '/other'),
      'wild /other',
      'the wildcard route applies where the exact one does not match',
    );
    assert.equal(await get('a.example.com', '/api'), 'wild /api');
    assert.equal(await get('a.b.example.com', '/'), 'fallback /', 'a wildcard matches one label');
    assert.equal(await get('example.org', '/'), 'fallback /');
    assert.equal(await get('example.com', '/api', { 'X-Canary': '1' }), 'canary /api', 'earlier routes win');
    assert.equal(await get('example.com', '/api', { 'X-Canary': '2' }), 'api /api', 'header values must match exactly');
  });

  it('matches and forwards one normalised path, so encodings and dot segments cannot slip past a route', async () => {
    const [admin, app] = await Promise.all(['admin', 'app'].map(named));
    const proxy = await startProxy({
      pools: { admin: { members: [{ url: admin.url }] }, app: { members: [{ url: app.url }] } },
      routes: [{ match: { path: '/admin' }, pool: 'admin' }, { pool: 'app' }],
    });
    const body = async (path: string) =>
      (await rawExchange(proxy.port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)).split(
        '\r\n\r\n',
      )[1];
    assert.equal(await body('/%61dmin/users'), 'admin /admin/users', 'percent-encoded unreserved characters');
    assert.equal(await body('/static/../admin'), 'admin /admin', 'dot segments');
    assert.equal(await body('/%2e%2e/admin/x'), 'admin /admin/x', 'encoded dot segments');
    assert.equal(await body('/admin%2Fx'), 'app /admin%2Fx', '%2F stays encoded: it is not a segment boundary');
    assert.equal(await body('/a/./b?next=/../admin'), 'app /a/b?next=/../admin', 'the query is left alone');
    assert.equal(await body('/plain/path'), 'app /plain/path');
  });

  it('answers 404 with a body naming the host and path when no route matches', async () => {
    const up = await named('only');
    const proxy = await startProxy({
      pools: { only: { members: [{ url: up.url }] } },
      routes: [{ match: { host: 'known.test' }, pool: 'only' }],
    });
    const r = await request(`${proxy.url}/missing`, { headers: { Host: 'unknown.test' } });
    assert.equal(r.status, 404);
    assert.match(
      r.body.toString(),
      /^404 Not Found \(SWY_ERR_NO_ROUTE\): no route matches host "unknown.test" and path "\/missing"\n$/,
    );
    assert.equal(up.seen.length, 0);
    // The connection stays usable: a 404 is an answer, not a protocol error.
    const raw = await rawExchange(
      proxy.port,
      'GET /a HTTP/1.1\r\nHost: nope\r\n\r\nGET /b HTTP/1.1\r\nHost: known.test\r\nConnection: close\r\n\r\n',
    );
    assert.match(raw, /^HTTP\/1\.1 404 [\s\S]*HTTP\/1\.1 200 [\s\S]*only \/b$/);
  });

  it('rewrites the path (strip, add, replace a prefix) and undoes it in Location headers', async () => {
    const up = await named('app');
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [
        { match: { path: '/strip' }, pool: 'app', rewrite: { stripPrefix: '/strip' } },
        { match: { path: '/add' }, pool: 'app', rewrite: { addPrefix: '/inner' } },
        {
          match: { path: '/old/' },
          pool: 'app',
          rewrite: { stripPrefix: '/old/', addPrefix: '/v2/' },
          rewriteLocation: true,
        },
        { pool: 'app', rewriteLocation: true },
      ],
    });
    const body = async (path: string) =>
      (await request(`${proxy.url}${path}`, { headers: { Host: 'public.test' } })).body.toString();
    assert.equal(await body('/strip/a/b?c=d'), 'app /a/b?c=d');
    assert.equal(await body('/strip'), 'app /');
    assert.equal(await body('/strip?q'), 'app /?q');
    assert.equal(await body('/add/x'), 'app /inner/add/x');
    assert.equal(await body('/old/page'), 'app /v2/page');

    const redirect = async (path: string, location: string) =>
      (await request(`${proxy.url}${path}`, { headers: { Host: 'public.test:8443', 'X-Test-Redirect': location } }))
        .headers.location;
    // A redirect to the member itself becomes one to the public host; the prefix swap is undone.
    assert.equal(await redirect('/old/page', `${up.url}/v2/next?x=1`), 'http://public.test:8443/old/next?x=1');
    const both = await request(`${proxy.url}/old/page`, {
      headers: { Host: 'public.test:8443', 'X-Test-Redirect': '/v2/moved' },
    });
    assert.equal(both.headers['content-location'], '/old/moved');
    assert.equal(await redirect('/old/page', '/v2/relative'), '/old/relative');
    assert.equal(await redirect('/plain', `${up.url}`), 'http://public.test:8443/');
    // Elsewhere, and look-alike hosts, are left alone.
    assert.equal(await redirect('/plain', 'https://elsewhere.test/x'), 'https://elsewhere.test/x');
    assert.equal(await redirect('/plain', `${up.url}0/x`), `${up.url}0/x`);
  });

  it("edits request and response headers per route, after the proxy's own", async () => {
    const up = await named('app');
    const proxy = await startProxy({
      pools: { app: { members: [{ url: up.url }] } },
      routes: [
        {
          pool: 'app',
          requestHeaders: {
            set: { 'X-Env': 'prod', 'X-Forwarded-Proto': 'https', Host: 'internal.test' },
            add: { 'X-Tag': 'two' },
            remove: ['Cookie', 'Via'],
          },
          responseHeaders: {
            set: { 'Cache-Control': 'no-store' },
            add: { 'X-Frame-Options': 'DENY' },
            remove: ['X-Upstream-Internal'],
          },
        },
      ],
    });
    const r = await request(`${proxy.url}/`, { headers: { 'X-Env': 'dev', 'X-Tag': 'one', Cookie: 'a=b' } });
    assert.equal(r.status, 200);
    const got = up.seen[0];
    assert.equal(got.headers['x-env'], 'prod', "set replaces the client's value");
    assert.equal(got.headers['x-tag'], 'one, two', "add keeps the client's value");
    assert.equal(got.headers.cookie, undefined);
    assert.equal(got.headers.via, undefined, "the proxy's own fields can be removed too");
    assert.equal(got.headers['x-forwarded-proto'], 'https', 'and set');
    assert.equal(got.headers.host, 'internal.test');
    assert.equal(got.rawHeaders.filter((h) => h.toLowerCase() === 'x-forwarded-proto').length, 1);
    assert.equal(r.headers['cache-control'], 'no-store');
    assert.equal(r.headers['x-frame-options'], 'DENY');
    assert.equal(r.headers['x-upstream-internal'], undefined);
    assert.equal(r.headers['x-served-by'], 'app');
  });

  it('refuses routes that name a missing pool, and header edits of framing fields, naming the key', () => {
    assert.throws(
      () => startProxySync({ pools: { a: { members: [{ url: 'http://127.0.0.1:1' }] } }, routes: [{ pool: 'b' }] }),
      /routes\[0\]\.pool: got "b"; expected the name of a pool: a/,
    );
    assert.throws(
      () =>
        validate({
          pools: { a: { members: [{ url: 'http://127.0.0.1:1' }] } },
          routes: [{ pool: 'a', requestHeaders: { set: { 'Content-Length': '1' } } }],
        }),
      /routes\[0\]\.requestHeaders\.set\.Content-Length/,
    );
    assert.throws(
      () =>
        startProxySync({
          pools: { a: { members: [{ url: 'http://127.0.0.1:1' }] }, b: { members: [{ url: 'http://127.0.0.1:2' }] } },
        }),
      /routes: got nothing; expected a list of routes, since there are 2 pools/,
    );
    assert.throws(() => validate({ pools: { a: {} } }), /pools\.a: .*expected either `members` or `dns`/);
  });

  it('finds the right route among 10,000 hosts (the table is maps, not a list)', () => {
    const routes = [];
    for (let i = 0; i < 10_000; i++)
      routes.push({ match: { host: `site${i}.example.com` }, pool: i % 2 === 0 ? 'even' : 'odd' });
    routes.push({ match: { host: '*.example.net' }, pool: 'odd' });
    const config = validate({
      pools: { even: { members: [{ url: 'http://127.0.0.1:1' }] }, odd: { members: [{ url: 'http://127.0.0.1:2' }] } },
      routes,
    });
    const pools = new Map<string, UpstreamPool>([
      ['even', { name: 'even' } as UpstreamPool],
      ['odd', { name: 'odd' } as UpstreamPool],
    ]);
    const router = new Router(routing(config).routes, pools);
    for (const i of [0, 1, 4242, 9999]) {
      assert.equal(router.match(`site${i}.example.com`, '/', 'GET', [])?.index, i);
    }
    assert.equal(router.match('x.example.net', '/', 'GET', [])?.index, 10_000);
    assert.equal(router.match('site10000.example.com', '/', 'GET', []), null);
  });
});

/** What loadConfig does after the schema: the cross-checks between routes and pools. */
function startProxySync(config: Record<string, unknown>): void {
  routing(validate(config));
}
