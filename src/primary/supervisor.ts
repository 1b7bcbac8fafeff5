/**
 * The primary process: it forks the workers, hands each its config, replaces the ones that die
 * (with a backoff, so a crash loop does not spin), and on SIGTERM/SIGINT drains them all before
 * exiting 0. It never handles a request and never imports the proxy: it knows config, IPC, logs.
 */
import cluster, { type Worker } from 'node:cluster';
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { deepFreeze, type ResolvedConfig } from '../config/load';
import { isWorkerMessage, type PrimaryMessage } from '../ipc';
import type { Logger } from '../log';

const WORKER_ENTRY = resolve(__dirname, '../../workers/proxy-worker.js');
const DEMO_ORIGIN_ENTRY = resolve(__dirname, '../demo/origin.js');

/** A worker that lived at least this long was healthy: its death starts the backoff afresh. */
const STABLE_UPTIME_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** Beyond the drain timeout, how long a worker may take to exit before it is killed. */
const EXIT_GRACE_MS = 5_000;

interface Slot {
  index: number;
  worker: Worker | null;
  startedAt: number;
  failures: number;
  listening: boolean;
  timer: NodeJS.Timeout | null;
}

export interface PrimaryHandle {
  /** Resolves once every worker listens. */
  ready: Promise<void>;
  /** Resolves when the primary has stopped (all workers exited). */
  stopped: Promise<void>;
  stop(reason: string): void;
}

export async function runPrimary(initial: ResolvedConfig, logger: Logger): Promise<PrimaryHandle> {
  process.title = 'switchyard: primary';
  let config = initial;
  let demo: ChildProcess | null = null;
  if (config.upstreams === undefined) {
    const started = await startDemoOrigin();
    demo = started.child;
    config = deepFreeze({ ...config, upstreams: [{ url: `http://127.0.0.1:${started.port}`, insecure: false }] });
    logger.info({ origin: config.upstreams![0]!.url }, 'no upstream configured: serving the built-in demo origin');
  }
  const isDemo = demo !== null;
  // Must be set before the first fork. "none" is the default because it measured half the CPU
  // per new connection (README, "Performance"), and a worker that dies cannot strand a
  // connection the primary had already handed to it.
  cluster.schedulingPolicy = config.schedulingPolicy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  cluster.setupPrimary({ exec: WORKER_ENTRY });

  const slots: Slot[] = [];
  let stopping = false;
  let everReady = false;
  let resolveReady!: () => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<void>((res, rej) => { resolveReady = res; rejectReady = rej; });
  ready.catch(() => undefined);
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((res) => { resolveStopped = res; });

  const spawn = (slot: Slot): void => {
    slot.timer = null;
    slot.listening = false;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ SWITCHYARD_WORKER_INDEX: String(slot.index) });
    slot.worker = worker;
    logger.info({ worker: worker.id, workerPid: worker.process.pid }, 'worker started');
    worker.send({ type: 'swy:start', config, demo: isDemo } satisfies PrimaryMessage);
    worker.on('message', (m: unknown) => {
      if (!isWorkerMessage(m)) return;
      if (m.type === 'swy:listening') {
        slot.listening = true;
        if (!everReady && slots.every((s) => s.listening)) {
          everReady = true;
          logger.info({ workers: slots.length, listen: `${m.host}:${m.port}` },
            `switchyard listening on ${config.tls ? 'https' : 'http'}://${config.listen} with ${slots.length} worker(s)`);
          resolveReady();
        }
      } else if (m.type === 'swy:fatal') {
        logger.error({ worker: worker.id }, m.message);
        // Before the first ready, a fatal error is the environment's (port taken, bad cert):
        // respawning cannot fix it, so stop and say so.
        if (!everReady) {
          rejectReady(new Error(m.message));
          stop('a worker could not start', 1);
        }
      }
    });
    worker.on('exit', (code, signal) => onExit(slot, worker, code, signal));
  };

  const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null): void => {
    if (slot.worker === worker) slot.worker = null;
    slot.listening = false;
    if (stopping) {
      logger.info({ worker: worker.id, workerPid: worker.process.pid, code, signal }, 'worker exited');
      if (slots.every((s) => s.worker === null)) finish();
      return;
    }
    const lived = Date.now() - slot.startedAt;
    slot.failures = lived >= STABLE_UPTIME_MS ? 1 : slot.failures + 1;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** (slot.failures - 1), BACKOFF_MAX_MS);
    logger.warn({ worker: worker.id, workerPid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay },
      'worker died; replacing it');
    slot.timer = setTimeout(() => spawn(slot), delay);
  };

  let exitCode = 0;
  let killTimer: NodeJS.Timeout | null = null;
  const finish = (): void => {
    if (killTimer !== null) clearTimeout(killTimer);
    demo?.kill('SIGTERM');
    logger.info({ exitCode }, 'switchyard stopped');
    resolveStopped();
  };

  const stop = (reason: string, code = 0): void => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    logger.info({ reason }, 'stopping: draining workers');
    for (const slot of slots) {
      if (slot.timer !== null) clearTimeout(slot.timer);
      slot.timer = null;
      const w = slot.worker;
      if (w !== null && w.isConnected()) w.send({ type: 'swy:drain' } satisfies PrimaryMessage);
    }
    killTimer = setTimeout(() => {
      for (const slot of slots) {
        if (slot.worker !== null) {
          logger.warn({ worker: slot.worker.id }, 'worker did not exit in time; killing it');
          slot.worker.process.kill('SIGKILL');
        }
      }
    }, config.timeouts.drain + EXIT_GRACE_MS);
    if (slots.every((s) => s.worker === null)) finish();
  };

  for (let i = 0; i < config.workerCount; i++) {
    slots.push({ index: i, worker: null, startedAt: 0, failures: 0, listening: false, timer: null });
  }
  slots.forEach(spawn);

  return {
    ready,
    stopped: stopped.then(() => { process.exitCode = exitCode; }),
    stop: (reason) => stop(reason),
  };
}

/** The demo origin runs in a child process of its own, so the primary still serves nothing. */
function startDemoOrigin(): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolvePort, reject) => {
    const child = fork(DEMO_ORIGIN_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (m: unknown) => {
      const port = (m as { port?: unknown } | null)?.port;
      if (typeof port === 'number') resolvePort({ child, port });
      else reject(new Error('demo origin did not report its port'));
    });
    child.once('exit', (code) => reject(new Error(`demo origin exited with code ${code}`)));
  });
}
