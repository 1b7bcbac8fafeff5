/**
 * The reload transaction (SIGHUP): validate the new configuration first (a bad one changes
 * nothing), then replace the workers one at a time, each new one listening on the shared socket
 * before the old one starts to drain, so that no connection is refused or cut. A new worker that
 * does not start rolls the whole reload back: the old workers, config and membership stay.
 */
import type { Worker } from 'node:cluster';
import type { ResolvedConfig } from '../config/load';
import { errField, type Logger } from '../log';
import type { Membership } from '../upstream/membership';
import { configHash, type ControlFiles } from './control';
import { newSlot, type Slot } from './slot';
import type { SystemdNotifier } from './systemd';

/** What the reload drives: the supervisor's state and its steps (supervisor.ts). */
export interface ReloadHost {
  config: ResolvedConfig;
  membership: Membership | null;
  readonly slots: Slot[];
  readonly stopping: boolean;
  readonly logger: Logger;
  readonly notifier: SystemdNotifier;
  readonly control: ControlFiles;
  readonly reloadConfig: (() => ResolvedConfig) | undefined;
  readonly statusLine: string;
  withDemo(config: ResolvedConfig): ResolvedConfig;
  newMembership(config: ResolvedConfig): Promise<Membership>;
  spawn(slot: Slot): Promise<boolean>;
  retire(worker: Worker, reason: 'reload' | 'stop'): void;
  writeControl(write: () => void): void;
}

export async function reloadWorkers(host: ReloadHost): Promise<void> {
  host.notifier.reloading();
  host.logger.info('reloading configuration');
  let next: ResolvedConfig;
  try {
    if (host.reloadConfig === undefined) throw new Error('no configuration source to reload from');
    next = host.withDemo(host.reloadConfig());
  } catch (err) {
    host.logger.error(
      { err: errField(err) },
      'reload failed: the new configuration was rejected; still running the old one',
    );
    host.notifier.ready(`${host.statusLine}; last reload failed: ${(err as Error).message.split('\n').join(' ')}`);
    host.writeControl(() => host.control.reloaded({ ok: false, error: (err as Error).message }, host.config));
    return;
  }
  if (next.schedulingPolicy !== host.config.schedulingPolicy) {
    host.logger.warn(
      { schedulingPolicy: next.schedulingPolicy },
      'schedulingPolicy changes take effect on restart, not on reload',
    );
  }
  const previous = host.config;
  const previousMembership = host.membership!;
  host.membership = await host.newMembership(next);
  host.config = next;
  let replaced = 0;
  for (let i = 0; i < Math.max(host.slots.length, next.workerCount) && !host.stopping; i++) {
    if (i >= next.workerCount) {
      // Fewer workers now: the surplus drains and is not replaced.
      const slot = host.slots[i];
      const old = slot.worker;
      slot.worker = null;
      if (old !== null) host.retire(old, 'reload');
      continue;
    }
    if (i >= host.slots.length) host.slots.push(newSlot(i));
    const slot = host.slots[i];
    if (slot.timer !== null) {
      clearTimeout(slot.timer); // it was waiting out a backoff: start it now, with the new config
      slot.timer = null;
    }
    const old = slot.worker;
    slot.standIn = old !== null && slot.listening ? old : null;
    const listening = await host.spawn(slot);
    slot.standIn = null;
    if (!listening) {
      host.logger.error({ slot: i }, 'reload failed: a new worker did not start; keeping the old workers');
      if (old !== null && slot.worker === null) {
        slot.worker = old;
        slot.listening = true;
      }
      host.config = previous;
      host.membership.stop();
      host.membership = previousMembership;
      host.notifier.ready(`${host.statusLine}; last reload failed`);
      host.writeControl(() =>
        host.control.reloaded({ ok: false, error: `worker ${i} of the new configuration did not start` }, host.config),
      );
      return;
    }
    if (old !== null) host.retire(old, 'reload');
    replaced++;
  }
  host.slots.length = Math.min(host.slots.length, next.workerCount);
  // The retired workers are draining: they need no more news of the old pools.
  previousMembership.stop();
  host.logger.info({ event: 'reload-complete', replaced, workers: host.slots.length }, 'reload complete');
  host.notifier.ready(host.statusLine);
  host.writeControl(() =>
    host.control.reloaded({ ok: true, workers: host.slots.length, configHash: configHash(next) }, next),
  );
}
