/**
 * The messages between the primary and its workers. The primary sends a worker its frozen config
 * once, pool membership and health whenever they change, and later asks it to drain; a worker
 * reports when it listens, and the upstream failures it sees. Nothing else crosses.
 */
import type { FaultEntry, ResolvedConfig } from './config/load';
import type { MembershipSnapshot } from './upstream/membership';

/**
 * What the primary's ACME manager tells every worker: a certificate to serve for a name, or a
 * challenge answer to give (null: no longer). Applied by proxy/acme-responder.ts.
 */
export type AcmeUpdate =
  | { kind: 'certificate'; name: string; cert: string; key: string }
  | { kind: 'http-01'; token: string; keyAuthorization: string | null }
  | { kind: 'tls-alpn-01'; name: string; cert: string | null; key: string | null };

export type PrimaryMessage =
  | {
      type: 'swy:start';
      config: ResolvedConfig;
      demo: boolean;
      members: MembershipSnapshot;
      /** TLS session ticket keys, base64: the same in every worker, so any worker resumes any session. */
      ticketKeys: string;
      /** Certificates and challenges the ACME manager holds now. */
      acme: AcmeUpdate[];
      /** The faults injected now (config and admin API). */
      faults: FaultEntry[];
    }
  /** The whole fault table replaces the last: apply, then answer swy:faults-applied with the same id. */
  | { type: 'swy:faults'; id: number; faults: FaultEntry[] }
  /** Apply, then answer swy:acme-applied with the same id. */
  | { type: 'swy:acme'; id: number; update: AcmeUpdate }
  /** The answer to swy:acme-wanted: every worker serves a certificate for `name` now, or `error` says why not. */
  | { type: 'swy:acme-answer'; name: string; error: string | null }
  /** The ticket keys were rotated. */
  | { type: 'swy:ticket-keys'; ticketKeys: string }
  /** Certificate or key files changed (and the primary checked them): read them again, in place. */
  | { type: 'swy:reload-certificates' }
  /** Pool members or their health changed (DNS, active or passive checks): the changed pools only. */
  | { type: 'swy:members'; members: MembershipSnapshot }
  /** `reload`: tunnels and streaming responses get timeouts.streamDrain; `stop`: everything timeouts.drain. */
  | { type: 'swy:drain'; reason: 'reload' | 'stop' }
  | { type: 'swy:reopen-logs' };

export type WorkerMessage =
  /** Every listener listens; `host`/`port` are the first's. */
  | { type: 'swy:listening'; host: string; port: number; addresses: Array<{ host: string; port: number }> }
  /** The outcome of swy:reload-certificates: the files served now, or why nothing changed. */
  | { type: 'swy:certificates-reloaded'; files: string[]; error?: string }
  /** The worker cannot run; `exitCode` 2 when the cause is the configuration or the environment (a port in use). */
  | { type: 'swy:fatal'; message: string; exitCode?: number }
  | { type: 'swy:acme-applied'; id: number }
  | { type: 'swy:faults-applied'; id: number }
  /** A handshake asked for `name` and no certificate serves it: obtain one on demand, if allowed. */
  | { type: 'swy:acme-wanted'; name: string }
  /** A request to this member failed in a way the passive health check counts. */
  | { type: 'swy:upstream-failure'; pool: string; url: string };

function isSwitchyardMessage(m: unknown): boolean {
  if (typeof m !== 'object' || m === null) return false;
  const type = (m as { type?: unknown }).type;
  return typeof type === 'string' && type.startsWith('swy:');
}

export function isPrimaryMessage(m: unknown): m is PrimaryMessage {
  return isSwitchyardMessage(m);
}

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return isSwitchyardMessage(m);
}
