/**
 * Recording (a route's `record`, docs/load-testing.md): a sampled share of the route's exchanges,
 * one JSON line each, for `switchyard replay`. A line holds the request (method, scheme, host,
 * path, fields, the body up to `maxBodySize` in base64), the answer's status and fields, the
 * timing and the request id. Credentials never reach the file: Authorization, Proxy-Authorization,
 * Cookie, Set-Cookie and the fields `redact` names are written as "[redacted]".
 * The line's format and the file are ops/recording.ts's.
 */
import type { RecordConfig } from '../config/schema';
import { BodyTee, type RequestBody } from '../io/body';
import { REDACTED, type RecordedExchange, type RecordingFile } from '../ops/recording';
import type { ClientRequest } from './client-request';

/** Always redacted, whatever `redact` says. */
const ALWAYS_REDACTED = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'];

export class Recorder {
  private readonly threshold: number;
  readonly redact: ReadonlySet<string>;

  constructor(
    readonly route: string,
    readonly config: RecordConfig,
    readonly file: RecordingFile,
  ) {
    this.threshold = config.percent / 100;
    this.redact = new Set([...ALWAYS_REDACTED, ...config.redact.map((n) => n.toLowerCase())]);
  }

  /** At the start of an exchange: its capture, or null when it is not sampled. */
  start(req: ClientRequest, source: RequestBody, scheme: 'http' | 'https', reqId: string): Capture | null {
    if (this.threshold < 1 && Math.random() >= this.threshold) return null;
    return new Capture(this, req, source, scheme, reqId);
  }

  redacted(raw: readonly string[]): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (let i = 0; i < raw.length; i += 2)
      out.push([raw[i], this.redact.has(raw[i].toLowerCase()) ? REDACTED : raw[i + 1]]);
    return out;
  }
}

/** One exchange being recorded: the request body as it goes by, then the line at its end. */
export class Capture extends BodyTee {
  private readonly t = Date.now();
  private chunks: Buffer[] = [];
  private size = 0;
  private truncated = false;
  private responseHeaders: Array<[string, string]> = [];

  constructor(
    private readonly recorder: Recorder,
    private readonly req: ClientRequest,
    source: RequestBody,
    private readonly scheme: 'http' | 'https',
    private readonly reqId: string,
  ) {
    super(source);
  }

  protected copy(chunk: Buffer): void {
    const room = this.recorder.config.maxBodySize - this.size;
    if (room <= 0) {
      if (chunk.length > 0) this.truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (kept.length < chunk.length) this.truncated = true;
    this.chunks.push(Buffer.from(kept));
    this.size += kept.length;
  }

  protected copied(): void {}

  head(rawHeaders: readonly string[]): void {
    this.responseHeaders = this.recorder.redacted(rawHeaders);
  }

  /** The exchange is over: its line is written. */
  done(durationMs: number, upstreamMs: number | undefined, error: string | undefined): void {
    const req = this.req;
    const line: RecordedExchange = {
      t: this.t,
      id: this.reqId,
      route: this.recorder.route,
      method: req.method,
      scheme: this.scheme,
      host: req.facts.host,
      path: req.url,
      headers: this.recorder.redacted(req.rawHeaders),
      ...(this.size > 0 ? { body: Buffer.concat(this.chunks).toString('base64') } : {}),
      ...(this.truncated ? { bodyTruncated: true } : {}),
      status: req.aborted ? 499 : req.status,
      responseHeaders: this.responseHeaders,
      durationMs: Math.round(durationMs * 1000) / 1000,
      ...(upstreamMs === undefined ? {} : { upstreamMs: Math.round(upstreamMs * 1000) / 1000 }),
      ...(error === undefined ? {} : { error }),
    };
    this.chunks = [];
    this.recorder.file.write(`${JSON.stringify(line)}\n`);
  }
}
