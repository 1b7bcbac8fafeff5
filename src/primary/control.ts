/**
 * How `switchyard reload` and `switchyard stop` find a running instance and learn what it did:
 * the primary writes its pid file, and beside it a status file (JSON) that it rewrites at start
 * and after every reload, successful or not. Neither needs the admin listener.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfigOverrides, ResolvedConfig } from '../config/load';

export interface ReloadOutcome {
  /** Counts reloads since start: `switchyard reload` waits for it to move. */
  generation: number;
  at: string;
  ok: boolean;
  error?: string;
  workers?: number;
  configHash?: string;
}

export interface InstanceStatus {
  pid: number;
  startedAt: string;
  /** The config file the instance re-reads on reload, and the flags on top of it. */
  configFile: string | null;
  overrides: ConfigOverrides;
  workers: number;
  configHash: string;
  lastReload: ReloadOutcome | null;
}

/** A short fingerprint of a configuration, to tell which one an instance runs. */
export function configHash(config: ResolvedConfig): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 12);
}

/** deploy/switchyard.service's RuntimeDirectory=switchyard. */
const SERVICE_RUNTIME_DIR = '/run/switchyard';

/** `pidFile`, or its default: systemd's runtime directory for the unit, else the temporary directory. */
export function pidFileOf(
  config: { readonly pidFile?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (config.pidFile !== undefined) return config.pidFile;
  const runtime = env.RUNTIME_DIRECTORY?.split(':')[0];
  if (runtime !== undefined && runtime !== '') return join(runtime, 'switchyard.pid');
  // The unit's RuntimeDirectory, seen from an operator's shell (where RUNTIME_DIRECTORY is unset).
  if (existsSync(SERVICE_RUNTIME_DIR)) return join(SERVICE_RUNTIME_DIR, 'switchyard.pid');
  return join(tmpdir(), 'switchyard.pid');
}

export function statusFileOf(pidFile: string): string {
  return `${pidFile}.status`;
}

/** Written whole or not at all (a reader never sees half a file). */
function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export class ControlFiles {
  private status: InstanceStatus;

  constructor(
    private readonly pidFile: string,
    configFile: string | null,
    overrides: ConfigOverrides,
    config: ResolvedConfig,
  ) {
    this.status = {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      configFile,
      overrides,
      workers: config.workerCount,
      configHash: configHash(config),
      lastReload: null,
    };
  }

  /** Throws when the files cannot be written (the caller logs it: the proxy runs without them). */
  write(): void {
    writeAtomically(this.pidFile, `${process.pid}\n`);
    writeAtomically(statusFileOf(this.pidFile), `${JSON.stringify(this.status)}\n`);
  }

  reloaded(outcome: Omit<ReloadOutcome, 'generation' | 'at'>, config: ResolvedConfig): void {
    const generation = (this.status.lastReload?.generation ?? 0) + 1;
    this.status = {
      ...this.status,
      ...(outcome.ok ? { workers: config.workerCount, configHash: configHash(config) } : {}),
      lastReload: { generation, at: new Date().toISOString(), ...outcome },
    };
    writeAtomically(statusFileOf(this.pidFile), `${JSON.stringify(this.status)}\n`);
  }

  get lastReload(): ReloadOutcome | null {
    return this.status.lastReload;
  }

  /** At stop: removed only while they are still ours (another instance may have taken the name). */
  remove(): void {
    try {
      if (readFileSync(this.pidFile, 'utf8').trim() !== String(process.pid)) return;
      unlinkSync(this.pidFile);
      unlinkSync(statusFileOf(this.pidFile));
    } catch {
      // already gone
    }
  }
}

export function readStatus(pidFile: string): InstanceStatus | null {
  try {
    return JSON.parse(readFileSync(statusFileOf(pidFile), 'utf8')) as InstanceStatus;
  } catch {
    return null;
  }
}

/** The pid in `pidFile` when that process is alive, else null. */
export function runningPid(pidFile: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}
