/**
 * The workers' supervisor in the primary: it forks them, hands each its config, replaces the ones
 * that die (with a backoff, so a crash loop does not spin), reloads without dropping a connection
 * (reload.ts), and on SIGTERM/SIGINT drains them all before exiting 0. It tells systemd about
 * each step. It owns pool membership (upstream/membership.ts: DNS, active checks, passive
 * ejection), so that every worker routes by one picture and each member is checked once rather
 * than once per worker.
 */
import cluster, { type Worker } from 'node:cluster';
import { resolve } from 'node:path';
import { withDemoPool, type ResolvedConfig } from '../config/load';
import { isWorkerMessage, type AcmeUpdate, type PrimaryMessage } from '../ipc';
import { formatHostPort } from '../config/schema';
import { errField, type Logger } from '../log';
import { Membership, type MembershipSnapshot } from '../upstream/membership';
import type { AdminServer } from './admin';
import type { ControlFiles } from './control';
import { certificateFiles, recheckCertificates } from '../config/listeners';
import { CertificateWatch } from './certificate-watch';
import { AcmeManager, type AcmePublisher } from './acme-manager';
import { AckRounds } from './broadcast';
import { FaultTable } from './faults';
import { reloadWorkers, type ReloadHost } from './reload';
import { TicketKeys } from './ticket-keys';
import { newSlot, type Slot } from './slot';
import type { SystemdNotifier } from './systemd';
import { workerExecArgv } from './worker-flags';

const WORKER_ENTRY = resolve(__dirname, '../../workers/proxy-worker.js');

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

/** A worker that lived at least this long was healthy: its death starts the backoff afresh. */
const STABLE_UPTIME_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** Beyond the drain timeout, how long a worker may take to exit before it is killed. */
const EXIT_GRACE_MS = 5_000;
/** A worker that has not applied an ACME update or a fault table by then is stuck: the rest goes on without it. */
const APPLY_TIMEOUT_MS = 10_000;

export class Supervisor implements ReloadHost, AcmePublisher {
  config: ResolvedConfig;
  readonly slots: Slot[] = [];
  stopping = false;
  private reloading: Promise<void> | null = null;
  private everReady = false;
  private exitCode = 0;
  private resolveReady!: () => void;
  private rejectReady!: (err: Error) => void;
  private resolveStopped!: () => void;
  /** Counts worker restarts for /metrics, when the admin listener is on. */
  admin: AdminServer | null = null;
  membership: Membership | null = null;
  private readonly ticketKeys = new TicketKeys((ticketKeys) => {
    for (const w of this.liveWorkers()) if (w.isConnected()) w.send({ type: 'swy:ticket-keys', ticketKeys });
  });
  private readonly certificateWatch = new CertificateWatch((changed) => this.reloadCertificates(changed));
  /** A certificate reload in flight: the workers yet to answer, and what they said. */
  private certificateRound: { pending: Set<Worker>; changed: string[]; errors: string[]; files: string[] } | null =
    null;
  /** Which membership a worker was started with: it hears that one's changes and reports to it. */
  private readonly membershipOf = new WeakMap<Worker, Membership>();
  /** Automatic certificates, when `acme` is configured; started once the workers listen. */
  private acme: AcmeManager | null = null;
  /** ACME updates and fault tables sent, and the workers yet to apply each. */
  private readonly rounds = new AckRounds(APPLY_TIMEOUT_MS);
  /** The faults injected now: the routes' and the admin API's (faults.ts). */
  readonly faults: FaultTable;

  constructor(
    initial: ResolvedConfig,
    private readonly demoUrl: string | undefined,
    readonly logger: Logger,
    readonly notifier: SystemdNotifier,
    readonly reloadConfig: (() => ResolvedConfig) | undefined,
    readonly control: ControlFiles,
    private readonly onStopped: () => void,
  ) {
    this.config = this.withDemo(initial);
    this.faults = new FaultTable(() => this.config, logger);
  }

  start(): PrimaryHandle {
    // Must be set before the first fork. "none" is the default because the primary then passes no
    // connection over IPC (under half the CPU per new connection: docs/performance.md), and a
    // worker that dies cannot strand a connection the primary had already handed to it.
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
    this.certificateWatch.watch(certificateFiles(this.config.listeners));
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
  withDemo(config: ResolvedConfig): ResolvedConfig {
    if (Object.keys(config.pools).length > 0 || this.demoUrl === undefined) return config;
    return withDemoPool(config, this.demoUrl);
  }

  /** Members and health for `config`'s pools, broadcast to the workers started with them. */
  async newMembership(config: ResolvedConfig): Promise<Membership> {
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

  get statusLine(): string {
    const urls = this.config.listeners.map((l) => `${l.tls !== null ? 'https' : 'http'}://${l.address}`);
    return `serving ${urls.join(', ')} with ${this.slots.length} worker(s)`;
  }

  /** Fork a worker into `slot`; resolves true once it listens, false if it dies first. */
  spawn(slot: Slot): Promise<boolean> {
    slot.timer = null;
    slot.listening = false;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ SWITCHYARD_WORKER_INDEX: String(slot.index) });
    slot.worker = worker;
    this.logger.info({ event: 'worker-started', worker: worker.id, workerPid: worker.process.pid }, 'worker started');
    const membership = this.membership!;
    this.membershipOf.set(worker, membership);
    worker.send({
      type: 'swy:start',
      config: this.config,
      demo: this.demoUrl !== undefined,
      members: membership.snapshot(),
      ticketKeys: this.ticketKeys.current,
      acme: this.acme?.state() ?? [],
      faults: this.faults.entries(),
    } satisfies PrimaryMessage);
    // A message to a worker that is exiting fails with EPIPE on the worker's emitter: without a
    // listener that would take the primary down (seen on Node 26 when a worker that could not
    // listen exits as the primary stops it). Its 'exit' follows and is handled there.
    worker.on('error', (err) =>
      this.logger.debug({ worker: worker.id, err: errField(err) }, 'a message to a worker failed; it is exiting'),
    );
    return new Promise<boolean>((resolveListening) => {
      worker.on('message', (m: unknown) => {
        if (!isWorkerMessage(m)) return;
        if (m.type === 'swy:upstream-failure') {
          membership.reportFailure(m.pool, m.url);
        } else if (m.type === 'swy:acme-applied' || m.type === 'swy:faults-applied') {
          this.rounds.ack(worker, m.id);
        } else if (m.type === 'swy:acme-wanted') {
          void this.acmeWanted(worker, m.name);
        } else if (m.type === 'swy:certificates-reloaded') {
          this.certificatesReloaded(worker, m.files, m.error);
        } else if (m.type === 'swy:listening') {
          if (slot.worker === worker) slot.listening = true;
          resolveListening(true);
          if (!this.everReady && this.slots.every((s) => s.listening)) this.onFirstReady(m.addresses);
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
        this.rounds.gone(worker);
        this.onExit(slot, worker, code, signal);
      });
    });
  }

  private onFirstReady(addresses: Array<{ host: string; port: number }>): void {
    this.everReady = true;
    const urls = this.config.listeners.map((l, i) => {
      const a = addresses[i] ?? { host: l.host, port: l.port };
      return `${l.tls !== null ? 'https' : 'http'}://${formatHostPort(a.host, a.port)}${l.redirect !== null ? ' (redirect to https)' : ''}`;
    });
    this.logger.info(
      {
        event: 'listening',
        workers: this.slots.length,
        listen: formatHostPort(addresses[0].host, addresses[0].port),
        listeners: urls,
      },
      `switchyard listening on ${urls.join(', ')} with ${this.slots.length} worker(s)`,
    );
    for (const warning of this.config.warnings) this.logger.warn({ event: 'config-warning' }, warning);
    this.notifier.ready(this.statusLine);
    this.writeControl(() => this.control.write());
    this.resolveReady();
    // HTTP-01 and TLS-ALPN-01 challenges are answered by the workers: they listen now.
    this.syncAcme();
  }

  /** The ACME manager for the config now served: started, restarted when `acme` changed, or stopped. */
  private syncAcme(): void {
    const wanted = this.config.acme;
    if (this.acme !== null && JSON.stringify(this.acme.config) === JSON.stringify(wanted)) return;
    this.acme?.stop();
    this.acme = wanted === undefined || this.stopping ? null : new AcmeManager(wanted, this, this.logger);
    this.acme?.start();
  }

  /** AcmePublisher: every worker applies `update`; resolves when all have (or are gone). */
  async publish(update: AcmeUpdate): Promise<void> {
    const missing = await this.rounds.send(this.liveWorkers(), (id) => ({ type: 'swy:acme', id, update }));
    if (missing.length > 0)
      this.logger.warn(
        { workers: missing.map((w) => w.id) },
        'acme: some workers did not apply an update in time; going on without them',
      );
  }

  /**
   * FaultPublisher: every worker applies the fault table as it is now. Resolves with how many
   * workers have it, and the ids of those that did not answer in time.
   */
  async publishFaults(): Promise<{ workers: number; missing: number[] }> {
    const workers = this.liveWorkers().filter((w) => w.isConnected());
    const faults = this.faults.entries();
    const missing = await this.rounds.send(workers, (id) => ({ type: 'swy:faults', id, faults }));
    return { workers: workers.length - missing.length, missing: missing.map((w) => w.id) };
  }

  /** A worker's handshake met a name without a certificate: on demand, when allowed. */
  private async acmeWanted(worker: Worker, name: string): Promise<void> {
    const error = this.acme === null ? 'acme is not configured' : await this.acme.onDemand(name);
    if (worker.isConnected()) worker.send({ type: 'swy:acme-answer', name, error } satisfies PrimaryMessage);
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    const pid = worker.process.pid;
    if (slot.worker !== worker) {
      // A worker retired by a reload (or a replacement that failed to start) has left.
      this.logger.info(
        { event: 'worker-exited', worker: worker.id, workerPid: pid, code, signal },
        'retired worker exited',
      );
      this.checkAllExited();
      return;
    }
    slot.worker = null;
    slot.listening = false;
    if (this.stopping) {
      this.logger.info({ event: 'worker-exited', worker: worker.id, workerPid: pid, code, signal }, 'worker exited');
      this.checkAllExited();
      return;
    }
    const lived = Date.now() - slot.startedAt;
    slot.failures = lived >= STABLE_UPTIME_MS ? 1 : slot.failures + 1;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** (slot.failures - 1), BACKOFF_MAX_MS);
    this.logger.warn(
      { event: 'worker-died', worker: worker.id, workerPid: pid, code, signal, livedMs: lived, restartInMs: delay },
      'worker died; replacing it',
    );
    this.admin?.workerRestarts.inc();
    slot.timer = setTimeout(() => void this.spawn(slot), delay);
  }

  /** SIGHUP: one reload at a time (reload.ts). */
  reload(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    if (this.reloading !== null) {
      this.logger.warn('reload requested while one is in progress; ignored');
      return this.reloading;
    }
    this.reloading = reloadWorkers(this).finally(() => {
      this.reloading = null;
      // The files of the configuration now served (a failed reload kept the old one).
      if (!this.stopping) this.certificateWatch.watch(certificateFiles(this.config.listeners));
      if (!this.stopping) this.syncAcme();
    });
    return this.reloading;
  }

  /**
   * Certificate or key files changed: checked here first (a pair that no longer loads changes
   * nothing), then every worker reads them again in place.
   */
  private reloadCertificates(changed: string[]): void {
    if (this.stopping || this.reloading !== null) return;
    try {
      for (const warning of recheckCertificates(this.config.listeners))
        this.logger.warn({ event: 'config-warning' }, warning);
    } catch (err) {
      this.logger.error(
        { event: 'certificates-refused', changed, err: errField(err) },
        'certificate files changed but do not load; still serving the previous certificates',
      );
      return;
    }
    const workers = this.liveWorkers().filter((w) => w.isConnected());
    this.certificateRound = { pending: new Set(workers), changed, errors: [], files: [] };
    for (const w of workers) w.send({ type: 'swy:reload-certificates' } satisfies PrimaryMessage);
    if (workers.length === 0) this.certificatesReloaded(null, [], undefined);
  }

  private certificatesReloaded(worker: Worker | null, files: string[], error: string | undefined): void {
    const round = this.certificateRound;
    if (round === null) return;
    if (worker !== null) round.pending.delete(worker);
    if (error !== undefined) round.errors.push(`worker ${worker?.id}: ${error}`);
    if (files.length > 0) round.files = files;
    if (round.pending.size > 0) return;
    this.certificateRound = null;
    if (round.errors.length > 0) {
      this.logger.error(
        { event: 'certificates-refused', changed: round.changed, errors: round.errors },
        'certificate reload failed in some workers; they serve the previous certificates',
      );
    } else {
      this.logger.info(
        { event: 'certificates-reloaded', changed: round.changed, files: round.files },
        `certificates reloaded in place: ${round.changed.join(', ')} changed`,
      );
    }
  }

  /** The pid and status files are for `switchyard reload` and `stop`: the proxy runs on without them. */
  writeControl(write: () => void): void {
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
  retire(worker: Worker, reason: 'reload' | 'stop'): void {
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
    this.ticketKeys.stop();
    this.certificateWatch.stop();
    this.acme?.stop();
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
