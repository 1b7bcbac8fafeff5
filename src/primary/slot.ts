import type { Worker } from 'node:cluster';

/** One worker's place in the cluster: the worker in it now, and its restart history. */
export interface Slot {
  index: number;
  worker: Worker | null;
  startedAt: number;
  failures: number;
  listening: boolean;
  /** During a reload: the old worker, still serving, until its replacement listens. */
  standIn: Worker | null;
  timer: NodeJS.Timeout | null;
}

export function newSlot(index: number): Slot {
  return { index, worker: null, startedAt: 0, failures: 0, listening: false, standIn: null, timer: null };
}
