/**
 * What the hash policy hashes for a request (pools[].hashKey): the client's address, a header or
 * a cookie.
 */
import { findHeader } from '../http1/fields';
import type { UpstreamPool } from '../upstream/pool';
import type { ClientRequest } from './client-request';

/** The value the hash policy hashes, or null (no such header or cookie: round robin instead). */
export function hashKeyFor(req: ClientRequest, pool: UpstreamPool): string | null {
  const source = pool.hash;
  if (source === null) return null;
  switch (source.kind) {
    case 'ip':
      return req.remoteAddress ?? null;
    case 'header':
      return findHeader(req.rawHeaders, source.name);
    case 'cookie':
      return cookieValue(req.rawHeaders, source.name);
  }
}

function cookieValue(raw: readonly string[], name: string): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length !== 6 || raw[i].toLowerCase() !== 'cookie') continue;
    for (const pair of raw[i + 1].split(';')) {
      const eq = pair.indexOf('=');
      if (eq !== -1 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return null;
}
