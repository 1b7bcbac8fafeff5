/**
 * A message every live worker must apply, and the wait for each to say so: ACME certificates and
 * challenges, and the fault table. A worker that exits counts as done (its replacement starts
 * with the new state); one that does not answer in time is named, and the round goes on without it.
 */
import type { Worker } from 'node:cluster';
import type { PrimaryMessage } from '../ipc';

export class AckRounds {
  private readonly rounds = new Map<number, { pending: Set<Worker>; done: (missing: Worker[]) => void }>();
  private lastId = 0;

  constructor(private readonly timeoutMs: number) {}

  /** Sends `message(id)` to each of `workers`; resolves with those that did not apply it in time. */
  send(workers: readonly Worker[], message: (id: number) => PrimaryMessage): Promise<Worker[]> {
    const live = workers.filter((w) => w.isConnected());
    if (live.length === 0) return Promise.resolve([]);
    const id = ++this.lastId;
    return new Promise<Worker[]>((resolve) => {
      const timer = setTimeout(() => {
        const round = this.rounds.get(id);
        this.rounds.delete(id);
        resolve(round === undefined ? [] : [...round.pending]);
      }, this.timeoutMs);
      this.rounds.set(id, {
        pending: new Set(live),
        done: () => {
          clearTimeout(timer);
          resolve([]);
        },
      });
      const m = message(id);
      for (const w of live) w.send(m);
    });
  }

  /** `worker` applied round `id`. */
  ack(worker: Worker, id: number): void {
    const round = this.rounds.get(id);
    if (round === undefined || !round.pending.delete(worker) || round.pending.size > 0) return;
    this.rounds.delete(id);
    round.done([]);
  }

  /** `worker` exited: no round waits for it. */
  gone(worker: Worker): void {
    for (const id of [...this.rounds.keys()]) this.ack(worker, id);
  }
}
