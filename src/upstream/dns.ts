/**
 * Pool members from DNS: A/AAAA (one member per address, at a fixed port) or SRV (one per record
 * of the best priority, at its target and port, weighted by the record's weight).
 */
import { promises as dns } from 'node:dns';
import { formatHostPort, type DnsConfig, type MemberConfig } from '../config/schema';

export interface DnsAnswer {
  members: MemberConfig[];
  /** When to ask again, in ms. */
  refreshMs: number;
}

const MIN_TTL_MS = 1_000;
const MAX_TTL_MS = 3_600_000;
const SRV_DEFAULT_MS = 30_000;

/** Answers that mean "no such records", as opposed to "could not ask". */
export const NO_RECORDS = new Set(['ENOTFOUND', 'ENODATA']);

export async function resolveMembers(cfg: DnsConfig): Promise<DnsAnswer> {
  const resolver = new dns.Resolver({ timeout: 2_000, tries: 2 });
  if (cfg.servers !== undefined) resolver.setServers([...cfg.servers]);
  const tlsFields =
    cfg.scheme === 'https'
      ? {
          insecure: cfg.insecure,
          servername: cfg.servername ?? cfg.name,
          http2: cfg.http2,
          ...(cfg.ca !== undefined ? { ca: cfg.ca } : {}),
        }
      : { insecure: false, http2: false };
  const member = (host: string, port: number, weight = 1): MemberConfig => ({
    url: `${cfg.scheme}://${formatHostPort(host, port)}`,
    weight,
    ...tlsFields,
  });
  if (cfg.type === 'SRV') {
    const records = await resolver.resolveSrv(cfg.name);
    // RFC 2782: lower priority values are tried first; the others are fallbacks.
    const best = Math.min(...records.map((r) => r.priority));
    const members = records
      .filter((r) => r.priority === best)
      .map((r) => member(r.name.replace(/\.$/, ''), r.port, Math.min(1000, Math.max(1, r.weight))));
    return { members: dedupe(members), refreshMs: cfg.interval ?? SRV_DEFAULT_MS };
  }
  const records =
    cfg.type === 'A'
      ? await resolver.resolve4(cfg.name, { ttl: true })
      : await resolver.resolve6(cfg.name, { ttl: true });
  const port = cfg.port ?? (cfg.scheme === 'https' ? 443 : 80);
  const ttl = Math.min(...records.map((r) => r.ttl)) * 1000;
  const refreshMs = cfg.interval ?? Math.min(MAX_TTL_MS, Math.max(MIN_TTL_MS, ttl));
  return { members: dedupe(records.map((r) => member(r.address, port))), refreshMs };
}

function dedupe(members: MemberConfig[]): MemberConfig[] {
  const seen = new Map<string, MemberConfig>();
  for (const m of members) if (!seen.has(m.url)) seen.set(m.url, m);
  return [...seen.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
}
