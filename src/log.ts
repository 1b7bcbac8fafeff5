/**
 * The process log: one JSON object per line on stdout (journald and log shippers read it as is).
 * Every line carries the process role and pid, so one stream can hold the primary and all workers.
 */
import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export function createLogger(role: string, level: LevelWithSilent, extra: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { role, pid: process.pid, ...extra },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    // Synchronous writes: lines stay whole and in order across processes sharing stdout, and
    // none is lost when a process exits right after logging.
  }, pino.destination({ dest: 1, sync: true }));
}
