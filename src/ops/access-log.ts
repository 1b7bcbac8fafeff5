/**
 * The access log: one line per request, JSON by default, or the NCSA common / combined formats.
 *
 * Lines go through pino's destination (sonic-boom), batched. To a pipe or socket (stdout under
 * journald): synchronously, a write per ~4 KiB of lines, each at most 4,096 bytes of whole lines,
 * so that lines from all workers sharing one stdout pipe never interleave (writes up to PIPE_BUF
 * are atomic), and a slow journald slows the worker instead of growing its memory, as nginx does.
 * To a regular file: asynchronously, ~64 KB per write, since Linux appends a write to a file
 * whole and a disk stall must not stall requests. The JSON line is built by a fixed-shape
 * serializer rather than pino's generic one, at under half its cost, on a path whose whole budget
 * is a couple of microseconds (docs/performance.md).
 * Logs go to stdout (journald) or to a file that SIGUSR1 reopens, for logrotate.
 */
import { fstatSync, statSync } from 'node:fs';
import pino from 'pino';
import { utf8Write } from '../node-internals';

export type AccessLogFormat = 'json' | 'common' | 'combined';

export interface AccessLogOptions {
  format: AccessLogFormat;
  /**
   * To a terminal (log.format pretty): JSON lines are shown as one readable, coloured line each,
   * in the process log's time format. Ignored for a file and for the NCSA formats.
   */
  pretty?: boolean;
  /** A file path; stdout when absent. */
  file?: string | undefined;
  worker: number;
  /** Told, at most once a second, how many lines a stalled disk made us drop. */
  onDrop?: (lines: number) => void;
  /** A write failed (disk full, EIO): the lines of that write are lost; writing goes on. */
  onError?: (err: NodeJS.ErrnoException) => void;
}

export interface AccessEntry {
  reqId: string;
  remote: string | undefined;
  method: string;
  path: string;
  /** HTTP/1.0, 1.1, 2.0. */
  httpMajor?: number;
  httpMinor: number;
  status: number;
  bytesIn: number;
  bytesOut: number;
  /** Total time, whole microseconds (integers print faster than fractions of a millisecond). */
  durationUs: number;
  /** Time until the upstream's response head arrived, µs; absent when none did. */
  upstreamUs: number | undefined;
  upstream: string | undefined;
  /** SWY_ERR_* when the request failed. */
  error: string | undefined;
  /** HTTPS: the TLS version (TLSv1.3), and whether the session was resumed. */
  tls?: string | undefined;
  tlsResumed?: boolean | undefined;
  /** Injected faults that hit the request, `name:kind,...`. */
  fault?: string | undefined;
  referer: string | undefined;
  userAgent: string | undefined;
}

type Destination = ReturnType<typeof pino.destination>;

/** Writes of up to PIPE_BUF bytes to a pipe are atomic: lines from several workers never mix. */
const PIPE_BUF = 4096;
/**
 * Linux appends one write() to a regular file whole (O_APPEND, under the inode lock), whatever its
 * size, so files take bigger batches: a sixteenth of the syscalls.
 */
const FILE_BATCH_BYTES = 64 * 1024;
/**
 * Lines waiting for a stalled disk or a failing destination, past which new ones are dropped
 * (and counted) rather than kept: memory stays bounded whatever the disk does.
 */
const MAX_BUFFERED = 64 * 1024 * 1024;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

export class AccessLog {
  private readonly destination: Destination;
  /** The file, when not stdout: only a file can be reopened. */
  private readonly file: string | undefined;
  private readonly worker: number;
  readonly format: AccessLogFormat;
  private readonly pretty: boolean;
  /** A regular file: written asynchronously, in large batches. Otherwise synchronously, ≤ PIPE_BUF. */
  private readonly toFile: boolean;
  /** Lines are written once this many bytes are pending. */
  private readonly batchBytes: number;
  private dropped = 0;
  private readonly timer: NodeJS.Timeout;
  private closing: Promise<void> | null = null;

  constructor(options: AccessLogOptions) {
    this.format = options.format;
    this.pretty = options.pretty === true && options.file === undefined && options.format === 'json';
    this.worker = options.worker;
    this.file = options.file;
    this.toFile = isRegularFile(options.file);
    this.batchBytes = this.toFile ? FILE_BATCH_BYTES : PIPE_BUF;
    this.batch = Buffer.allocUnsafeSlow(this.batchBytes);
    // To a file, writes go through libuv's threads: a disk that stalls (writeback throttling can
    // take milliseconds) must not stall every request of the worker. To a pipe (journald), a
    // reader that falls behind slows the worker instead, and memory stays flat.
    this.destination = pino.destination({
      dest: options.file ?? 1,
      sync: !this.toFile,
      mkdir: true,
      append: true,
      contentMode: 'buffer',
      maxLength: MAX_BUFFERED,
      // Batches that wait (a full pipe) are merged into one write of at most this: to a pipe, a
      // write over PIPE_BUF could go out in part, and a worker killed meanwhile would leave half a
      // line for the next process's line to run into.
      maxWrite: this.toFile ? 16 * FILE_BATCH_BYTES : PIPE_BUF,
    });
    // Without a listener a failed write would throw from inside sonic-boom and take the worker down.
    const onError = options.onError;
    this.destination.on('error', (err: NodeJS.ErrnoException) => onError?.(err));
    this.destination.on('drop', (data: Buffer) => {
      for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, i + 1)) this.dropped++;
    });
    const onDrop = options.onDrop;
    // Lines still pending when the worker stops are written by close(); a timer covers quiet times.
    this.timer = setInterval(() => {
      this.flush();
      if (this.dropped > 0 && onDrop !== undefined) {
        onDrop(this.dropped);
        this.dropped = 0;
      }
    }, 1000).unref();
  }

  log(e: AccessEntry): void {
    if (this.closing !== null) return;
    if (this.pretty) {
      this.append(prettyLine(e, this.worker));
      return;
    }
    if (this.format === 'json') {
      // Only the path is free text from the client. The method is an llhttp token, the address an
      // IP, the upstream an origin from the config, the request id checked by validRequestId.
      let line =
        `{"time":${Date.now()},"worker":${this.worker},"reqId":"${e.reqId}","remote":"${e.remote ?? ''}",` +
        `"method":"${e.method}","path":${JSON.stringify(e.path)},"status":${e.status},"bytesIn":${e.bytesIn},` +
        `"bytesOut":${e.bytesOut},"durationUs":${e.durationUs}`;
      if (e.upstreamUs !== undefined) line += `,"upstreamUs":${e.upstreamUs}`;
      if (e.upstream !== undefined) line += `,"upstream":"${e.upstream}"`;
      if (e.error !== undefined) line += `,"error":"${e.error}"`;
      // A version string from OpenSSL (TLSv1.3): no quoting needed.
      if (e.tls !== undefined) line += `,"tls":"${e.tls}","tlsResumed":${e.tlsResumed === true}`;
      // Fault and header names: letters, digits, _ . - (FAULT_NAME), and the kinds.
      if (e.fault !== undefined) line += `,"fault":"${e.fault}"`;
      this.append(`${line}}\n`);
      return;
    }
    // NCSA common / combined: host ident authuser [date] "request" status bytes ["referer" "agent"]
    let line = `${e.remote ?? '-'} - - [${clfDate()}] "${e.method} ${e.path} HTTP/${e.httpMajor ?? 1}.${e.httpMinor}" ${e.status} ${e.bytesOut === 0 ? '-' : e.bytesOut}`;
    if (this.format === 'combined') line += ` "${quote(e.referer)}" "${quote(e.userAgent)}"`;
    this.append(`${line}\n`);
  }

  /**
   * Lines wait here, encoded, until a batch is full: a write() per line cost as much as the line.
   * Bytes rather than a string: each line's string then dies young, where strings held until the
   * batch was written outlived a scavenge and were promoted, and the old generation's collections
   * cost more than the formatting (docs/performance.md).
   */
  private batch: Buffer;
  private batchLength = 0;

  private append(line: string): void {
    // A UTF-16 unit is at most 3 bytes of UTF-8: a line passing this check fits.
    if (this.batchLength + line.length * 3 > this.batchBytes) {
      this.flushPending();
      if (line.length * 3 > this.batchBytes) {
        // Longer than a batch (a very long path): on its own, not atomic on a pipe.
        this.writeBytes(Buffer.from(line));
        return;
      }
    }
    this.batchLength += utf8Write(this.batch, line, this.batchLength);
  }

  private flushPending(): void {
    if (this.batchLength === 0) return;
    const full = this.batch.subarray(0, this.batchLength);
    // The destination may hold the batch until the disk takes it: the next one gets new memory.
    this.batch = Buffer.allocUnsafeSlow(this.batchBytes);
    this.batchLength = 0;
    this.writeBytes(full);
  }

  private writeBytes(bytes: Buffer): void {
    // contentMode 'buffer' (see the constructor); pino's type knows only strings.
    (this.destination as unknown as { write(b: Buffer): boolean }).write(bytes);
  }

  /** logrotate moved the file away: open it again under its name. Stdout has nothing to reopen. */
  reopen(): void {
    // Lines logged before the rotation belong in the old file.
    this.flushPending();
    if (this.file === undefined || this.closing !== null) return;
    this.destination.reopen();
  }

  /** Hand pending lines to the destination (to a file they are written as soon as it can). */
  flush(): void {
    if (this.closing !== null) return;
    this.flushPending();
    if (this.toFile) return;
    try {
      this.destination.flushSync();
    } catch {
      // stdout closed: nothing left to write to
    }
  }

  /** The worker is stopping: every line written, the file closed. Idempotent. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.flushPending();
    clearInterval(this.timer);
    this.closing = new Promise((resolve) => {
      this.destination.once('close', () => resolve());
      this.destination.once('error', () => resolve());
      this.destination.end();
    });
    return this.closing;
  }
}

/** A regular file (or one still to be created), as opposed to a pipe, socket, terminal or device. */
function isRegularFile(file: string | undefined): boolean {
  try {
    return file === undefined ? fstatSync(1).isFile() : statSync(file).isFile();
  } catch (err) {
    return file !== undefined && (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

const COLOURS = ['', '\x1b[32m', '\x1b[32m', '\x1b[36m', '\x1b[33m', '\x1b[31m'];
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';

/**
 * One request for a terminal, as pino-pretty shows process lines (log.ts: PRETTY_TIME, local
 * time): `[12:04:05.123] INFO: [worker 1] GET /a → 200 12 B 0.4 ms ← http://127.0.0.1:3000 id=…`.
 */
function prettyLine(e: AccessEntry, worker: number): string {
  const d = new Date();
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const colour = COLOURS[Math.floor(e.status / 100)] ?? '';
  const level =
    e.status >= 500 ? '\x1b[31mERROR\x1b[39m' : e.status >= 400 ? '\x1b[33mWARN\x1b[39m' : '\x1b[32mINFO\x1b[39m';
  let line =
    `[${time}] ${level}: [worker ${worker}] ${e.method} ${JSON.stringify(e.path).slice(1, -1)} → ${colour}${e.status}${RESET}` +
    ` ${e.bytesOut} B ${(e.durationUs / 1000).toFixed(1)} ms`;
  if (e.upstream !== undefined) line += ` ← ${e.upstream}`;
  if (e.error !== undefined) line += ` ${colour}${e.error}${RESET}`;
  if (e.tls !== undefined) line += ` ${DIM}${e.tls}${e.tlsResumed === true ? ' resumed' : ''}${RESET}`;
  if (e.fault !== undefined) line += ` \x1b[35mfault ${e.fault}${RESET}`;
  return `${line} ${DIM}${e.remote ?? '-'} id=${e.reqId}${RESET}\n`;
}

function quote(s: string | undefined): string {
  return s === undefined ? '-' : s.replace(/["\\]/g, (c) => `\\${c}`);
}

let clfCached = '';
let clfSecond = -1;

/** The common log format's date, formatted at most once a second. */
function clfDate(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second !== clfSecond) {
    clfSecond = second;
    const d = new Date(second * 1000);
    const pad = (n: number) => String(n).padStart(2, '0');
    clfCached = `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
  }
  return clfCached;
}

/** A client-supplied X-Request-Id is kept only if it is short and plain (no log or header injection). */
export function validRequestId(id: string | null): id is string {
  return id !== null && /^[A-Za-z0-9._:@/+=-]{1,128}$/.test(id);
}
