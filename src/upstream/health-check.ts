/**
 * One active health check: GET the configured path on a member, on a fresh connection (a pooled
 * one could hide a member that stopped accepting), and judge the status.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import { formatHostPort } from '../config/schema';
import type { HealthCheckConfig } from '../config/schema';
import type { UpstreamTarget } from './target';

export function statusPasses(status: number, expect: HealthCheckConfig['expectStatus']): boolean {
  if (typeof expect === 'number') return status === expect;
  return status >= 200 && status < (expect === '2xx' ? 300 : 400);
}

/** Resolves true when the member answered as expected within the timeout; never rejects. */
export function probe(target: UpstreamTarget, cfg: HealthCheckConfig): Promise<boolean> {
  if (target.http2) return probeHttp2(target, cfg);
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(ok);
    };
    const options: https.RequestOptions = {
      host: target.host,
      port: target.port,
      path: cfg.path,
      method: 'GET',
      agent: false,
      headers: { Host: target.authority, 'User-Agent': 'switchyard-health-check', Connection: 'close' },
      ...(target.tls ?? {}),
    };
    const req = (target.tls === null ? http : https).request(options, (res) => {
      const ok = statusPasses(res.statusCode ?? 0, cfg.expectStatus);
      // The verdict needs the whole response: a member that sends a head and stalls is not healthy.
      res.on('data', () => undefined);
      res.on('end', () => done(ok));
      res.on('error', () => done(false));
    });
    req.on('error', () => done(false));
    const timer = setTimeout(() => done(false), cfg.timeout);
    req.end();
  });
}

/** The same check over HTTP/2, on a session of its own (an h2c:// member, or https:// with http2). */
function probeHttp2(target: UpstreamTarget, cfg: HealthCheckConfig): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const scheme = target.tls === null ? 'http' : 'https';
    const session = http2.connect(`${scheme}://${formatHostPort(target.host, target.port)}`, {
      ...(target.tls ?? {}),
      settings: { enablePush: false },
    });
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(ok);
    };
    session.on('error', () => done(false));
    const timer = setTimeout(() => done(false), cfg.timeout);
    const req = session.request({
      ':path': cfg.path,
      ':authority': target.authority,
      'user-agent': 'switchyard-health-check',
    });
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', () => undefined);
    req.on('end', () =>
      done(req.rstCode === undefined || req.rstCode === 0 ? statusPasses(status, cfg.expectStatus) : false),
    );
    req.on('error', () => done(false));
    req.on('close', () => done(false));
    req.end();
  });
}
