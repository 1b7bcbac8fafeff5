/**
 * The process log: one JSON object per line on stdout (journald and log shippers read it as is),
 * or one readable line each on a terminal (log.format). Every line carries the process role and
 * pid, so one stream can hold the primary and all workers.
 */
import { isatty } from 'node:tty';
import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export type LogFormat = 'auto' | 'json' | 'pretty';

/** `auto` decided: pretty on a terminal, JSON anywhere else (journald, pipes, files). */
export function resolveLogFormat(format: LogFormat): 'json' | 'pretty' {
  // isatty, not process.stdout.isTTY: creating process.stdout on a pipe or socket would make the
  // descriptor every process shares non-blocking under their synchronous log writes.
  return format === 'auto' ? (isatty(1) ? 'pretty' : 'json') : format;
}

/** The one time format of every terminal line, process and access alike. */
export const PRETTY_TIME = 'HH:MM:ss.l';

export function createLogger(
  role: string,
  level: LevelWithSilent,
  extra: Record<string, unknown> = {},
  format: LogFormat = 'json',
): Logger {
  const options = {
    level,
    base: { role, pid: process.pid, ...extra },
    // Milliseconds since the epoch, as in the access log's lines: one time format in one stream.
    timestamp: pino.stdTimeFunctions.epochTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (resolveLogFormat(format) === 'pretty') {
    // Loaded only for a terminal: a worker logging JSON carries none of it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as typeof import('pino-pretty');
    // Synchronous, like the JSON destination below: lines stay in order across processes.
    return pino(
      options,
      pretty({
        sync: true,
        colorize: true,
        singleLine: true,
        translateTime: `SYS:${PRETTY_TIME}`,
        ignore: 'pid,hostname,role,worker',
        messageFormat: (log: Record<string, unknown>, key: string) =>
          `${log.worker !== undefined ? `[worker ${log.worker as number}]` : `[${log.role as string}]`} ${(log[key] as string | undefined) ?? ''}`,
      }),
    );
  }
  // Synchronous writes: lines stay whole and in order across processes sharing stdout, and
  // none is lost when a process exits right after logging. maxWrite: lines that wait for a full
  // pipe leave in writes of at most PIPE_BUF, which a pipe takes whole, so a process killed
  // mid-write never leaves half a line (access-log.ts).
  return pino(options, pino.destination({ dest: 1, sync: true, maxWrite: 4096 }));
}

/** A listen() failure in one line: `EADDRINUSE: address already in use 127.0.0.1:80`. */
export function listenFailure(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const text = String(e?.message ?? err).replace(/^listen \w+: /, '');
  return e?.code === undefined ? text : `${e.code}: ${text}`;
}

/** An error as a log field: its code and message, never a second `msg`. */
export function errField(err: unknown): { code: string | undefined; message: string } {
  const e = err as { code?: unknown; message?: unknown; cause?: { code?: unknown } } | null;
  // A SwitchyardError's own code is logged beside it; the cause's (ECONNREFUSED) says more.
  const code = typeof e?.cause?.code === 'string' ? e.cause.code : e?.code;
  return {
    code: typeof code === 'string' ? code : undefined,
    message: typeof e?.message === 'string' ? e.message : String(err),
  };
}

/**
 * At most one line per interval (a second unless told) per kind, counting the rest into the next
 * (`alsoSinceLastLine`): an outage or a connection flood must not become a log flood.
 */
export class RarelyLogged {
  private readonly last = new Map<string, { at: number; since: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 1000,
  ) {}

  warn(kind: string, fields: Record<string, unknown>, msg: string): void {
    this.log('warn', kind, fields, msg);
  }

  log(level: 'warn' | 'error', kind: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const last = this.last.get(kind);
    if (last !== undefined && now - last.at < this.intervalMs) {
      last.since++;
      return;
    }
    const more = last === undefined || last.since === 0 ? {} : { alsoSinceLastLine: last.since };
    this.last.set(kind, { at: now, since: 0 });
    this.logger[level]({ ...fields, ...more }, msg);
  }
}
