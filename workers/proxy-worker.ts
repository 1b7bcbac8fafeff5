/**
 * Entry of each cluster worker process: wait for the primary's config, listen on the shared
 * socket, proxy until told (or signalled) to drain, then exit 0.
 */
import cluster from 'node:cluster';
import { isPrimaryMessage, type WorkerMessage } from '../src/ipc';
import { createLogger, type Logger } from '../src/log';
import { AccessLog } from '../src/ops/access-log';
import { HEAP_TRIM_DEFAULTS, startHeapTrim } from '../src/ops/heap-trim';
import { ProxyServer } from '../src/proxy/server';

let server: ProxyServer | null = null;
let accessLog: AccessLog | null = null;
let logger: Logger | null = null;
let drainMs = 30_000;
let stopHeapTrim: () => void = () => undefined;

function send(message: WorkerMessage): void {
  process.send?.(message);
}

async function drainAndExit(reason: string): Promise<void> {
  if (server === null) process.exit(0);
  stopHeapTrim();
  logger?.info({ reason }, 'draining');
  await server.drain(drainMs);
  // Every access log line on disk before the process goes, but never wait long on a stuck disk.
  if (accessLog !== null) await Promise.race([accessLog.close(), new Promise((r) => setTimeout(r, 2000))]);
  logger?.info('drained, exiting');
  // Let pino's last line reach stdout before the process goes.
  setImmediate(() => process.exit(0));
}

process.on('message', (message: unknown) => {
  if (!isPrimaryMessage(message)) return;
  switch (message.type) {
    case 'swy:start': {
      const { config, demo, members } = message;
      const id = cluster.worker?.id ?? 0;
      logger = createLogger('worker', config.log.level, { worker: id });
      drainMs = config.timeouts.drain;
      try {
        if (config.accessLog.enabled) {
          accessLog = new AccessLog({
            format: config.accessLog.format, file: config.accessLog.file, worker: id,
            onDrop: (lines) => logger?.warn({ lines, file: config.accessLog.file }, 'access log: lines dropped, the disk is not keeping up'),
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
        });
      } catch (err) {
        send({ type: 'swy:fatal', message: (err as Error).message });
        process.exit(1);
      }
      stopHeapTrim = startHeapTrim({
        ...HEAP_TRIM_DEFAULTS,
        onTrim: (before, after) => logger?.debug({ newSpaceBefore: before, newSpaceAfter: after }, 'idle: young generation trimmed'),
      });
      server.listen(config.listenAddress.host, config.listenAddress.port).then(
        (addr) => send({ type: 'swy:listening', host: addr.host, port: addr.port }),
        (err: Error) => {
          send({ type: 'swy:fatal', message: `cannot listen on ${config.listen}: ${err.message}` });
          process.exit(1);
        },
      );
      break;
    }
    case 'swy:members':
      server?.applyMembership(message.members);
      break;
    case 'swy:drain':
      void drainAndExit('primary asked');
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
