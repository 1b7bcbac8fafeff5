/**
 * Entry of each cluster worker process: wait for the primary's config, listen on the shared
 * socket, proxy until told (or signalled) to drain, then exit 0.
 */
import cluster from 'node:cluster';
import { isPrimaryMessage, type WorkerMessage } from '../src/ipc';
import { createLogger, errField, listenFailure, RarelyLogged, resolveLogFormat, type Logger } from '../src/log';
import { capabilities } from '../src/node-internals';
import { nameProcess } from '../src/process-name';
import { AccessLog } from '../src/ops/access-log';
import { HEAP_TRIM_DEFAULTS, startHeapTrim } from '../src/ops/heap-trim';
import { ProxyServer } from '../src/proxy/server';
import type { ResolvedConfig } from '../src/config/load';

let server: ProxyServer | null = null;
let accessLog: AccessLog | null = null;
let logger: Logger | null = null;
let drainMs = 30_000;
let streamDrainMs = 30_000;
let stopHeapTrim: () => void = () => undefined;

function send(message: WorkerMessage): void {
  process.send?.(message);
}

/**
 * Stop once, whoever asks first: a terminal's Ctrl-C signals every process of the group, so a
 * worker hears its own SIGINT and then the primary's drain request. Each later ask waits on the
 * same drain (one drain, one close of the access log, exit 0).
 */
let stopping: Promise<void> | null = null;
function drainAndExit(reason: string, longLivedMs = drainMs): Promise<void> {
  stopping ??= drainOnce(reason, longLivedMs);
  return stopping;
}

async function drainOnce(reason: string, longLivedMs: number): Promise<void> {
  if (server === null) process.exit(0);
  stopHeapTrim();
  logger?.info({ event: 'draining', reason }, 'draining');
  await server.drain(drainMs, longLivedMs);
  // Every access log line on disk before the process goes, but never wait long on a stuck disk.
  if (accessLog !== null) await Promise.race([accessLog.close(), new Promise((r) => setTimeout(r, 2000))]);
  logger?.info('drained, exiting');
  // Let pino's last line reach stdout before the process goes.
  setImmediate(() => process.exit(0));
}

/** A failing access log is counted every time and logged at most once a minute, never thrown. */
let accessLogErrors: RarelyLogged | null = null;
function accessLogFailed(err: NodeJS.ErrnoException, file: string | undefined): void {
  server?.handler.metrics?.countAccessLogError();
  if (logger === null) return;
  accessLogErrors ??= new RarelyLogged(logger, 60_000);
  accessLogErrors.log(
    'error',
    'access-log',
    { event: 'access-log-error', file: file ?? 'stdout', err: errField(err) },
    'access log: a write failed; its lines are lost',
  );
}

process.on('message', (message: unknown) => {
  if (!isPrimaryMessage(message)) return;
  switch (message.type) {
    case 'swy:start': {
      const { config, demo, members, ticketKeys, acme, faults } = message;
      const id = cluster.worker?.id ?? 0;
      // `ps` and `top` tell the workers apart, as they tell the primary (supervisor.ts).
      nameProcess(`switchyard: worker ${id}`, `switchyard-w${id}`);
      logger = createLogger('worker', config.log.level, { worker: id }, config.log.format);
      drainMs = config.timeouts.drain;
      streamDrainMs = config.timeouts.streamDrain;
      const fast = capabilities();
      logger.info(
        { event: 'node-internals', node: process.version, execArgv: process.execArgv, ...fast },
        Object.values(fast).every(Boolean)
          ? 'node internals: every fast path on'
          : 'node internals: some fast paths off, public-API fallbacks in use',
      );
      try {
        if (config.accessLog.enabled) {
          accessLog = new AccessLog({
            format: config.accessLog.format,
            file: config.accessLog.file,
            worker: id,
            pretty: resolveLogFormat(config.log.format) === 'pretty',
            onDrop: (lines) =>
              logger?.warn(
                { lines, file: config.accessLog.file },
                'access log: lines dropped, the disk is not keeping up',
              ),
            onError: (err) => accessLogFailed(err, config.accessLog.file),
          });
        }
        server = new ProxyServer(config, logger, {
          accessLog,
          metrics: true,
          membership: {
            snapshot: members,
            reportFailure: (pool, url) => send({ type: 'swy:upstream-failure', pool, url }),
          },
          ...(demo ? { extraRequestHeaders: `X-Switchyard-Worker: ${id} (pid ${process.pid})\r\n` } : {}),
          ticketKeys: Buffer.from(ticketKeys, 'base64'),
          requestCertificate: (name) => send({ type: 'swy:acme-wanted', name }),
          workerIndex: Number(process.env.SWITCHYARD_WORKER_INDEX ?? 0),
        });
        server.applyFaults(faults);
        for (const update of acme) server.acme?.apply(update);
      } catch (err) {
        send({ type: 'swy:fatal', message: (err as Error).message });
        process.exit(1);
      }
      stopHeapTrim = startHeapTrim({
        ...HEAP_TRIM_DEFAULTS,
        onTrim: (before, after) =>
          logger?.debug({ newSpaceBefore: before, newSpaceAfter: after }, 'idle: young generation trimmed'),
      });
      server.listenAll().then(
        (addresses) => send({ type: 'swy:listening', host: addresses[0].host, port: addresses[0].port, addresses }),
        (err: Error & { listener?: string; address?: string }) => {
          const code = (err as NodeJS.ErrnoException).code;
          send({
            type: 'swy:fatal',
            message: `${err.listener ?? 'listen'}: cannot listen on ${listenAddressOf(err, config)}: ${listenFailure(err)}`,
            exitCode: code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' ? 2 : 1,
          });
          process.exit(1);
        },
      );
      break;
    }
    case 'swy:members':
      server?.applyMembership(message.members);
      break;
    case 'swy:drain':
      // A reload's retired worker lets tunnels and streams run on; a stop does not.
      void drainAndExit(
        message.reason === 'reload' ? 'reload' : 'primary asked',
        message.reason === 'reload' ? Math.max(drainMs, streamDrainMs) : drainMs,
      );
      break;
    case 'swy:ticket-keys':
      server?.setTicketKeys(Buffer.from(message.ticketKeys, 'base64'));
      break;
    case 'swy:reload-certificates':
      try {
        send({ type: 'swy:certificates-reloaded', files: server?.reloadCertificates() ?? [] });
      } catch (err) {
        send({ type: 'swy:certificates-reloaded', files: [], error: (err as Error).message });
      }
      break;
    case 'swy:acme':
      try {
        server?.acme?.apply(message.update);
      } catch (err) {
        logger?.error({ err: errField(err) }, 'acme: an update from the primary did not apply');
      }
      send({ type: 'swy:acme-applied', id: message.id });
      break;
    case 'swy:faults':
      server?.applyFaults(message.faults);
      send({ type: 'swy:faults-applied', id: message.id });
      break;
    case 'swy:acme-answer':
      server?.acme?.answered(message.name, message.error);
      break;
    case 'swy:reopen-logs':
      accessLog?.reopen();
      break;
  }
});

// systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process, workers included.
process.on('SIGTERM', () => void drainAndExit('SIGTERM'));
process.on('SIGINT', () => void drainAndExit('SIGINT'));
// A lost primary means nobody supervises us: finish what is in flight and go.
process.on('disconnect', () => void drainAndExit('primary gone'));

process.on('uncaughtException', (err) => {
  // A bug, not a client or upstream error (those are handled where they occur). The primary
  // replaces this worker; carrying on in an unknown state could cross-deliver responses.
  (logger ?? createLogger('worker', 'info')).fatal({ err }, 'uncaught exception, exiting');
  process.exit(70);
});

/** The address a failed listen was for (server.ts marks the error with its listener). */
function listenAddressOf(err: { address?: string }, config: ResolvedConfig): string {
  return err.address ?? config.listenAddress.host + ':' + String(config.listenAddress.port);
}
