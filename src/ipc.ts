/**
 * The messages between the primary and its workers. The primary sends a worker its frozen config
 * once and later asks it to drain; a worker reports when it listens. Nothing else crosses.
 */
import type { ResolvedConfig } from './config/load';

export type PrimaryMessage =
  | { type: 'swy:start'; config: ResolvedConfig; demo: boolean }
  | { type: 'swy:drain' }
  | { type: 'swy:reopen-logs' };

export type WorkerMessage =
  | { type: 'swy:listening'; host: string; port: number }
  | { type: 'swy:fatal'; message: string };

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
