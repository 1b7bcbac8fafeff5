/**
 * The messages between the primary and its workers. The primary sends a worker its frozen config
 * once, pool membership and health whenever they change, and later asks it to drain; a worker
 * reports when it listens, and the upstream failures it sees. Nothing else crosses.
 */
import type { ResolvedConfig } from './config/load';
import type { MembershipSnapshot } from './upstream/membership';

export type PrimaryMessage =
  | { type: 'swy:start'; config: ResolvedConfig; demo: boolean; members: MembershipSnapshot }
  /** Pool members or their health changed (DNS, active or passive checks): the changed pools only. */
  | { type: 'swy:members'; members: MembershipSnapshot }
  /** `reload`: tunnels and streaming responses get timeouts.streamDrain; `stop`: everything timeouts.drain. */
  | { type: 'swy:drain'; reason: 'reload' | 'stop' }
  | { type: 'swy:reopen-logs' };

export type WorkerMessage =
  | { type: 'swy:listening'; host: string; port: number }
  /** The worker cannot run; `exitCode` 2 when the cause is the configuration or the environment (a port in use). */
  | { type: 'swy:fatal'; message: string; exitCode?: number }
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
