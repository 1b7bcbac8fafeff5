/**
 * Recordings (a route's `record`): the JSON line written per exchange (proxy/recorder.ts writes
 * them, `switchyard replay` reads them), and the file it goes to. Each worker appends to its own
 * file (its number before the extension), so lines never interleave; a file past `maxFileSize` is
 * rotated (FILE.1, FILE.2, … up to `keep`).
 */
import { createWriteStream, existsSync, renameSync, statSync, unlinkSync, type WriteStream } from 'node:fs';
import { extname } from 'node:path';
import { errField, RarelyLogged, type Logger } from '../log';

export const REDACTED = '[redacted]';
/** One line of a recording, as `switchyard replay` reads it. */
export interface RecordedExchange {
  /** Start of the request, milliseconds since the epoch. */
  t: number;
  id: string;
  route: string;
  method: string;
  scheme: 'http' | 'https';
  host: string | null;
  path: string;
  /** [name, value] as the client sent them (redacted ones as "[redacted]"). */
  headers: Array<[string, string]>;
  /** Base64; absent for no body. */
  body?: string;
  /** The body was longer than `maxBodySize`: only its start is here. */
  bodyTruncated?: boolean;
  status: number;
  responseHeaders: Array<[string, string]>;
  durationMs: number;
  upstreamMs?: number;
  error?: string;
}

/** `traffic.jsonl` for worker 2 → `traffic.2.jsonl`. */
export function workerFile(file: string, worker: number): string {
  const ext = extname(file);
  return ext === '' ? `${file}.${worker}` : `${file.slice(0, -ext.length)}.${worker}${ext}`;
}

/** One worker's recording file, shared by the routes that name it; rotated by size. */
export class RecordingFile {
  private stream: WriteStream;
  private size: number;
  private readonly errors: RarelyLogged;

  constructor(
    readonly path: string,
    private readonly maxSize: number,
    private readonly keep: number,
    private readonly logger: Logger,
  ) {
    this.errors = new RarelyLogged(logger, 60_000);
    this.size = existsSync(path) ? statSync(path).size : 0;
    this.stream = this.open();
  }

  private open(): WriteStream {
    const stream = createWriteStream(this.path, { flags: 'a' });
    stream.on('error', (err) =>
      this.errors.log(
        'error',
        `record ${this.path}`,
        { event: 'record-error', file: this.path, err: errField(err) },
        'record: a write failed; its lines are lost',
      ),
    );
    return stream;
  }

  write(line: string): void {
    this.stream.write(line);
    this.size += Buffer.byteLength(line);
    if (this.size >= this.maxSize) this.rotate();
  }

  private rotate(): void {
    this.stream.end();
    try {
      if (this.keep === 0) unlinkSync(this.path);
      else {
        for (let i = this.keep - 1; i >= 1; i--) {
          if (existsSync(`${this.path}.${i}`)) renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        }
        renameSync(this.path, `${this.path}.1`);
      }
    } catch (err) {
      this.logger.warn({ file: this.path, err: errField(err) }, 'record: rotating the file failed');
    }
    this.size = 0;
    this.stream = this.open();
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(resolve));
  }
}
