/**
 * The primary process: it forks the workers, hands each its config, replaces the ones that die
 * (with a backoff, so a crash loop does not spin), reloads without dropping a connection
 * (SIGHUP: new config, workers replaced one at a time), and on SIGTERM/SIGINT drains them all
 * before exiting 0. It tells systemd about each step. It never handles a request and never
 * imports the proxy: it knows config, IPC and logging, and it owns pool membership
 * (upstream/membership.ts: DNS, active checks, passive ejection), so that every worker routes by
 * one picture and each member is checked once rather than once per worker.
 */
import cluster, { type Worker } from 'node:cluster';
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { withDemoPool, type ConfigOverrides, type ResolvedConfig } from '../config/load';
import { parseHostPort } from '../config/schema';
import { isWorkerMessage, type PrimaryMessage } from '../ipc';
import { errField, listenFailure, type Logger } from '../log';
import { Membership, type MembershipSnapshot } from '../upstream/membership';
import { AdminServer } from './admin';
import { configHash, ControlFiles, pidFileOf } from './control';
import { SystemdNotifier } from './systemd';
import { nameProcess } from '../process-name';

/** A listener could not open (address in use, not permitted): the CLI says so in one line and exits 2. */
export class ListenError extends Error {}

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
  /** During a reload: the old worker, still serving, until its replacement listens. */
  standIn: Worker | null;
  timer: NodeJS.Timeout | null;
}

export interface PrimaryOptions {
  /** Re-reads and validates the configuration (SIGHUP); throws ConfigError when it is bad. */
  reload?: () => ResolvedConfig;
  env?: NodeJS.ProcessEnv;
  /** Where the config came from, for the status file `switchyard reload` reads (control.ts). */
  source?: { configFile: string | null; overrides: ConfigOverrides };
}

export interface PrimaryHandle {
  /** Resolves once every worker listens. */
  ready: Promise<void>;
  /** Resolves when the primary has stopped (all workers exited). */
  stopped: Promise<void>;
  stop(reason: string): void;
  reload(): Promise<void>;
  /** SIGUSR1: every worker reopens its access log file (logrotate). */
  reopenLogs(): void;
}

export async function runPrimary(
  initial: ResolvedConfig,
  logger: Logger,
  options: PrimaryOptions = {},
): Promise<PrimaryHandle> {
  nameProcess('switchyard: primary', 'switchyard');
  const notifier = SystemdNotifier.fromEnv(options.env ?? process.env, logger);
  let demo: ChildProcess | null = null;
  let demoUrl: string | undefined;
  if (Object.keys(initial.pools).length === 0) {
    const started = await startDemoOrigin();
    demo = started.child;
    demoUrl = `http://127.0.0.1:${started.port}`;
    logger.info({ origin: demoUrl }, 'no upstream configured: serving the built-in demo origin');
  }
  let admin: AdminServer | null = null;
  const control = new ControlFiles(
    pidFileOf(initial, options.env),
    options.source?.configFile ?? null,
    options.source?.overrides ?? {},
    initial,
  );
  const supervisor = new Supervisor(initial, demoUrl, logger, notifier, options.reload, control, () => {
    demo?.kill('SIGTERM');
    admin?.close();
  });
  await supervisor.startMembership();
  if (initial.admin.listen !== undefined) {
    admin = new AdminServer(
      () => supervisor.readiness(),
      () => supervisor.members(),
      logger,
    );
    const { host, port } = parseHostPort(initial.admin.listen)!;
    let address: string;
    try {
      address = await admin.listen(host, port);
    } catch (err) {
      demo?.kill('SIGTERM');
      supervisor.stopMembership();
      throw new ListenError(`admin.listen: cannot listen on ${initial.admin.listen}: ${listenFailure(err)}`);
    }
    supervisor.admin = admin;
    logger.info({ admin: address }, `admin listener on http://${address} (/metrics, /healthz, /readyz, /upstreams)`);
  }
  return supervisor.start();
}

class Supervisor {
  private config: ResolvedConfig;
  private readonly slots: Slot[] = [];
  private stopping = false;
  private reloading: Promise<void> | null = null;
  private everReady = false;
  private exitCode = 0;
  private resolveReady!: () => void;
  private rejectReady!: (err: Error) => void;
  private resolveStopped!: () => void;
  /** Counts worker restarts for /metrics, when the admin listener is on. */
  admin: AdminServer | null = null;
  private membership: Membership | null = null;
  /** Which membership a worker was started with: it hears that one's changes and reports to it. */
  private readonly membershipOf = new WeakMap<Worker, Membership>();

  constructor(
    initial: ResolvedConfig,
    private readonly demoUrl: string | undefined,
    private readonly logger: Logger,
    private readonly notifier: SystemdNotifier,
    private readonly reloadConfig: (() => ResolvedConfig) | undefined,
    private readonly control: ControlFiles,
    private readonly onStopped: () => void,
  ) {
    this.config = this.withDemo(initial);
  }

  start(): PrimaryHandle {
    // Must be set before the first fork. "none" is the default because it measured half the CPU
    // per new connection (README, "Performance"), and a worker that dies cannot strand a
    // connection the primary had already handed to it.
    cluster.schedulingPolicy = this.config.schedulingPolicy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
    cluster.setupPrimary({ exec: WORKER_ENTRY, execArgv: workerExecArgv() });
    const ready = new Promise<void>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    ready.catch(() => undefined);
    const stopped = new Promise<void>((res) => {
      this.resolveStopped = res;
    });
    for (let i = 0; i < this.config.workerCount; i++) this.slots.push(newSlot(i));
    for (const slot of this.slots) void this.spawn(slot);
    return {
      ready,
      stopped: stopped.then(() => {
        process.exitCode = this.exitCode;
      }),
      stop: (reason) => this.stop(reason),
      reload: () => this.reload(),
      reopenLogs: () => {
        for (const w of this.liveWorkers())
          if (w.isConnected()) w.send({ type: 'swy:reopen-logs' } satisfies PrimaryMessage);
      },
    };
  }

  /** The demo origin stays the upstream across reloads of a config that names none. */
  private withDemo(config: ResolvedConfig): ResolvedConfig {
    if (Object.keys(config.pools).length > 0 || this.demoUrl === undefined) return config;
    return withDemoPool(config, this.demoUrl);
  }

  /** Members and health for `config`'s pools, broadcast to the workers started with them. */
  private async newMembership(config: ResolvedConfig): Promise<Membership> {
    const membership = new Membership(config.pools, this.logger);
    membership.onChange((members) => {
      for (const w of this.liveWorkers()) {
        if (this.membershipOf.get(w) === membership && w.isConnected())
          w.send({ type: 'swy:members', members } satisfies PrimaryMessage);
      }
    });
    await membership.start();
    return membership;
  }

  async startMembership(): Promise<void> {
    this.membership = await this.newMembership(this.config);
  }

  stopMembership(): void {
    this.membership?.stop();
  }

  private get statusLine(): string {
    return `serving ${this.config.tls ? 'https' : 'http'}://${this.config.listen} with ${this.slots.length} worker(s)`;
  }

  /** Fork a worker into `slot`; resolves true once it listens, false if it dies first. */
  private spawn(slot: Slot): Promise<boolean> {
    slot.timer = null;
    slot.listening = false;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ SWITCHYARD_WORKER_INDEX: String(slot.index) });
    slot.worker = worker;
    this.logger.info({ worker: worker.id, workerPid: worker.process.pid }, 'worker started');
    const membership = this.membership!;
    this.membershipOf.set(worker, membership);
    worker.send({
      type: 'swy:start',
      config: this.config,
      demo: this.demoUrl !== undefined,
      members: membership.snapshot(),
    } satisfies PrimaryMessage);
    return new Promise<boolean>((resolveListening) => {
      worker.on('message', (m: unknown) => {
        if (!isWorkerMessage(m)) return;
        if (m.type === 'swy:upstream-failure') {
          membership.reportFailure(m.pool, m.url);
        } else if (m.type === 'swy:listening') {
          if (slot.worker === worker) slot.listening = true;
          resolveListening(true);
          if (!this.everReady && this.slots.every((s) => s.listening)) this.onFirstReady(`${m.host}:${m.port}`);
        } else if (m.type === 'swy:fatal') {
          this.logger.error({ worker: worker.id }, m.message);
          resolveListening(false);
          // Before the first ready, a fatal error is the environment's (port taken, bad cert):
          // respawning cannot fix it, so stop and say so.
          if (!this.everReady) {
            this.rejectReady(new Error(m.message));
            this.stop('a worker could not start', m.exitCode ?? 1);
          }
        }
      });
      worker.on('exit', (code, signal) => {
        resolveListening(false);
        this.onExit(slot, worker, code, signal);
      });
    });
  }

  private onFirstReady(address: string): void {
    this.everReady = true;
    this.logger.info(
      { workers: this.slots.length, listen: address },
      `switchyard listening on ${this.config.tls ? 'https' : 'http'}://${this.config.listen} with ${this.slots.length} worker(s)`,
    );
    this.notifier.ready(this.statusLine);
    this.writeControl(() => this.control.write());
    this.resolveReady();
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    const pid = worker.process.pid;
    if (slot.worker !== worker) {
      // A worker retired by a reload (or a replacement that failed to start) has left.
      this.logger.info({ worker: worker.id, workerPid: pid, code, signal }, 'retired worker exited');
      this.checkAllExited();
      return;
    }
    slot.worker = null;
    slot.listening = false;
    if (this.stopping) {
      this.logger.info({ worker: worker.id, workerPid: pid, code, signal }, 'worker exited');
      this.checkAllExited();
      return;
    }
    const lived = Date.now() - slot.startedAt;
    slot.failures = lived >= STABLE_UPTIME_MS ? 1 : slot.failures + 1;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** (slot.failures - 1), BACKOFF_MAX_MS);
    this.logger.warn(
      { worker: worker.id, workerPid: pid, code, signal, livedMs: lived, restartInMs: delay },
      'worker died; replacing it',
    );
    this.admin?.workerRestarts.inc();
    slot.timer = setTimeout(() => void this.spawn(slot), delay);
  }

  /**
   * SIGHUP: validate the new configuration first (a bad one changes nothing), then replace the
   * workers one at a time, each new one listening on the shared socket before the old one
   * starts to drain, so that no connection is refused or cut.
   */
  reload(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    if (this.reloading !== null) {
      this.logger.warn('reload requested while one is in progress; ignored');
      return this.reloading;
    }
    this.reloading = this.doReload().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  private async doReload(): Promise<void> {
    this.notifier.reloading();
    this.logger.info('reloading configuration');
    let next: ResolvedConfig;
    try {
      if (this.reloadConfig === undefined) throw new Error('no configuration source to reload from');
      next = this.withDemo(this.reloadConfig());
    } catch (err) {
      this.logger.error(
        { err: errField(err) },
        'reload failed: the new configuration was rejected; still running the old one',
      );
      this.notifier.ready(`${this.statusLine}; last reload failed: ${(err as Error).message.split('\n').join(' ')}`);
      this.writeControl(() => this.control.reloaded({ ok: false, error: (err as Error).message }, this.config));
      return;
    }
    if (next.schedulingPolicy !== this.config.schedulingPolicy) {
      this.logger.warn(
        { schedulingPolicy: next.schedulingPolicy },
        'schedulingPolicy changes take effect on restart, not on reload',
      );
    }
    const previous = this.config;
    const previousMembership = this.membership!;
    this.membership = await this.newMembership(next);
    this.config = next;
    let replaced = 0;
    for (let i = 0; i < Math.max(this.slots.length, next.workerCount) && !this.stopping; i++) {
      if (i >= next.workerCount) {
        // Fewer workers now: the surplus drains and is not replaced.
        const slot = this.slots[i];
        const old = slot.worker;
        slot.worker = null;
        if (old !== null) this.retire(old, 'reload');
        continue;
      }
      if (i >= this.slots.length) this.slots.push(newSlot(i));
      const slot = this.slots[i];
      if (slot.timer !== null) {
        clearTimeout(slot.timer); // it was waiting out a backoff: start it now, with the new config
        slot.timer = null;
      }
      const old = slot.worker;
      slot.standIn = old !== null && slot.listening ? old : null;
      const listening = await this.spawn(slot);
      slot.standIn = null;
      if (!listening) {
        this.logger.error({ slot: i }, 'reload failed: a new worker did not start; keeping the old workers');
        if (old !== null && slot.worker === null) {
          slot.worker = old;
          slot.listening = true;
        }
        this.config = previous;
        this.membership.stop();
        this.membership = previousMembership;
        this.notifier.ready(`${this.statusLine}; last reload failed`);
        this.writeControl(() =>
          this.control.reloaded(
            { ok: false, error: `worker ${i} of the new configuration did not start` },
            this.config,
          ),
        );
        return;
      }
      if (old !== null) this.retire(old, 'reload');
      replaced++;
    }
    this.slots.length = Math.min(this.slots.length, next.workerCount);
    // The retired workers are draining: they need no more news of the old pools.
    previousMembership.stop();
    this.logger.info({ replaced, workers: this.slots.length }, 'reload complete');
    this.notifier.ready(this.statusLine);
    this.writeControl(() =>
      this.control.reloaded({ ok: true, workers: this.slots.length, configHash: configHash(next) }, next),
    );
  }

  /** The pid and status files are for `switchyard reload` and `stop`: the proxy runs on without them. */
  private writeControl(write: () => void): void {
    try {
      write();
    } catch (err) {
      this.logger.warn(
        { err: errField(err) },
        'cannot write the pid or status file; `switchyard reload` and `stop` will not find this instance',
      );
    }
  }

  /**
   * Ask a worker to drain; kill it if it outlives its bound plus the grace. Retired by a reload,
   * its tunnels and streaming responses may go on for timeouts.streamDrain; stopping, everything
   * ends within timeouts.drain (the unit's TimeoutStopSec counts on it).
   */
  private retire(worker: Worker, reason: 'reload' | 'stop'): void {
    if (worker.isConnected()) worker.send({ type: 'swy:drain', reason } satisfies PrimaryMessage);
    const { drain, streamDrain } = this.config.timeouts;
    const bound = reason === 'reload' ? Math.max(drain, streamDrain) : drain;
    const kill = setTimeout(() => {
      if (worker.isDead()) return;
      this.logger.warn({ workerPid: worker.process.pid }, 'worker did not exit in time; killing it');
      worker.process.kill('SIGKILL');
    }, bound + EXIT_GRACE_MS);
    kill.unref();
  }

  /** For /upstreams and switchyard_upstream_up: the pools as workers now route by them. */
  members(): MembershipSnapshot {
    return this.membership?.snapshot() ?? {};
  }

  /** For /readyz: every worker listens, and the cluster is not stopping. */
  readiness(): { ready: boolean; detail: string } {
    if (this.stopping) return { ready: false, detail: 'stopping' };
    // A slot whose replacement is starting is still served by its old worker (a reload).
    const listening = this.slots.filter((s) => s.listening || (s.standIn !== null && !s.standIn.isDead())).length;
    const ready = this.everReady && listening === this.slots.length;
    const last = this.control.lastReload;
    const lastReload =
      last === null
        ? ''
        : last.ok
          ? `; last reload ${last.at}: ok`
          : `; last reload ${last.at} FAILED: ${last.error?.split('\n').join(' ')}`;
    return {
      ready,
      detail: `${listening}/${this.slots.length} workers listening${this.reloading !== null ? ', reloading' : ''}${lastReload}`,
    };
  }

  /** Workers not yet exited: current ones and retired ones still draining. */
  private liveWorkers(): Worker[] {
    return Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
  }

  private checkAllExited(): void {
    if (this.stopping && this.liveWorkers().length === 0) this.finish();
  }

  stop(reason: string, code = 0): void {
    if (this.stopping) return;
    this.stopping = true;
    this.exitCode = code;
    this.notifier.stopping();
    this.logger.info({ reason }, 'stopping: draining workers');
    for (const slot of this.slots) {
      if (slot.timer !== null) clearTimeout(slot.timer);
      slot.timer = null;
    }
    for (const w of this.liveWorkers()) this.retire(w, 'stop');
    this.checkAllExited();
  }

  private finished = false;
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.membership?.stop();
    this.control.remove();
    this.onStopped();
    this.notifier.close();
    this.logger.info({ exitCode: this.exitCode }, 'switchyard stopped');
    this.resolveStopped();
  }
}

function newSlot(index: number): Slot {
  return { index, worker: null, startedAt: 0, failures: 0, listening: false, standIn: null, timer: null };
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

/**
 * Node flags for the workers: the primary's own, and
 * - `--expose-gc`: a worker that goes idle runs one collection to give back its grown young
 *   generation (src/ops/heap-trim.ts); nothing else calls gc().
 * - `--max-semi-space-size=8` (MiB; Node 20's default is 16), unless the operator set a
 *   semi-space size (command line or NODE_OPTIONS). A scavenge's pause grows with the young
 *   generation rather than with what survives, and holds every request in flight: on `/small`
 *   p99 went 1.57–1.60 → 1.39–1.45 ms at the same CPU. Smaller still promotes what slow
 *   requests allocate: with a 20 ms upstream and 1,000 clients, 8 cost 3% more CPU per request
 *   and 4 cost 10% (README, "Performance").
 */
export function workerExecArgv(): string[] {
  const args = [...process.execArgv, '--expose-gc'];
  const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`;
  if (!/semi[-_]space/.test(given)) args.push('--max-semi-space-size=8');
  return args;
}
