/**
 * A route's `transform`: the whole body, rewritten in the transform thread pool, then sent on
 * (compressed again when the route or the upstream's coding asks for it).
 */
import type { CompressConfig, TransformConfig } from '../config/schema';
import { TransformOverloadedError, type SwitchyardError } from '../errors';
import type { TransformTask } from '../transform/body';
import type { BodyContext, BodyFilter, FilterSink } from './body-filter';
import type { ClientRequest } from './client-request';
import { StreamingCompress } from './compression';
import { fieldsOf, rewriteFields, type HeadFacts } from './content-coding';

/**
 * The whole body, then one task in the transform pool. Past transform.maxBodySize while
 * buffering, it gives up and relays what it holds and the rest untransformed.
 */
export class BufferedTransform implements BodyFilter {
  private chunks: Buffer[] = [];
  private size = 0;
  private passthrough = false;
  /** Over the limit on a compressing route: the rest streams through this. */
  private stream: StreamingCompress | null = null;
  private aborted = false;

  constructor(
    private readonly cfg: TransformConfig,
    private readonly compress: CompressConfig | null,
    private readonly ctx: BodyContext,
    private readonly req: ClientRequest,
    private readonly status: number,
    private readonly reason: string,
    private readonly raw: string[],
    private readonly facts: HeadFacts,
    private readonly encodeTo: 'br' | 'gzip' | null,
    private readonly vary: boolean,
    private readonly sink: FilterSink,
  ) {}

  data(chunk: Buffer): boolean {
    if (this.passthrough) return this.stream !== null ? this.stream.data(chunk) : this.sink.write(chunk);
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > this.cfg.maxBodySize) {
      tooLarge(this.ctx, this.req, this.size, this.cfg.maxBodySize);
      return this.relayLarge();
    }
    return true;
  }

  /** Past the limit: untransformed from here, but compressed if the route compresses, as a declared large body is. */
  private relayLarge(): boolean {
    if (this.compress === null || this.encodeTo === null || this.facts.encoding !== null) return this.relayOriginal();
    this.passthrough = true;
    this.sink.sendHead(this.status, this.reason, rewriteFields(this.raw, this.encodeTo, null, true, true));
    const z = new StreamingCompress(this.encodeTo, this.compress, this.sink);
    this.stream = z;
    let ok = true;
    for (const c of this.chunks) ok = z.data(c);
    this.chunks = [];
    return ok;
  }

  /** Send the head and what was buffered as the upstream sent them; the rest follows as it comes. */
  private relayOriginal(): boolean {
    this.passthrough = true;
    this.sink.sendHead(
      this.status,
      this.reason,
      this.vary ? rewriteFields(this.raw, 'keep', null, false, true) : this.raw,
    );
    let ok = true;
    for (const c of this.chunks) ok = this.sink.write(c);
    this.chunks = [];
    this.sink.flush();
    return ok;
  }

  end(): void {
    if (this.passthrough) {
      if (this.stream !== null) this.stream.end();
      else this.sink.end();
      return;
    }
    const pool = this.ctx.pool;
    if (pool.full) {
      if (this.ctx.onOverload === 'reject') {
        this.ctx.count('overload_reject');
        this.sink.fail(new TransformOverloadedError());
        return;
      }
      this.ctx.count('overload_pass');
      this.ctx.logger.warn({ url: this.req.url }, 'transform queue full: body passed through untransformed');
      this.relayOriginal();
      this.sink.end();
      return;
    }
    // A body too small to be worth compressing goes out as the upstream encoded it.
    const tooSmall = this.compress !== null && this.facts.encoding === null && this.size < this.compress.minSize;
    const encodeTo = tooSmall ? null : this.encodeTo;
    // One copy into a buffer of our own, which then moves to the thread without another.
    const body = new ArrayBuffer(this.size);
    const view = new Uint8Array(body);
    let at = 0;
    for (const c of this.chunks) {
      view.set(c, at);
      at += c.length;
    }
    this.chunks = [];
    const encoding =
      this.facts.encoding === 'x-gzip' ? 'gzip' : (this.facts.encoding as TransformTask['contentEncoding']);
    const task: TransformTask = {
      body,
      contentEncoding: encoding,
      charset: this.facts.charset,
      rules: this.cfg.replace ?? null,
      module: this.cfg.module ?? null,
      // Only a user module reads the context: replace rules alone need no copy of the head.
      context:
        this.cfg.module === undefined
          ? null
          : {
              method: this.req.method,
              url: this.req.url,
              status: this.status,
              contentType: this.facts.type,
              headers: fieldsOf(this.raw),
            },
      encodeTo,
      gzipLevel: this.compress?.gzipLevel ?? 6,
      brotliQuality: this.compress?.brotliQuality ?? 4,
    };
    pool.run(task, this.cfg.timeout).then(
      (result) => {
        if (this.aborted) return;
        this.ctx.count(result.changed ? 'transformed' : 'unchanged');
        const out = Buffer.from(result.body);
        this.sink.sendHead(
          this.status,
          this.reason,
          rewriteFields(
            this.raw,
            result.encoding,
            out.length,
            result.changed || result.encoding !== encoding,
            this.vary,
          ),
        );
        this.sink.write(out);
        this.sink.end();
      },
      (err: SwitchyardError) => {
        if (this.aborted) return;
        this.ctx.count('failed');
        this.sink.fail(err);
      },
    );
  }

  clientDrained(): void {
    // Relaying (over the limit), the upstream waits on the client; transformed, nothing does:
    // the whole body is written at once.
    if (this.stream !== null) this.stream.clientDrained();
    else if (this.passthrough) this.sink.resumeUpstream();
  }

  abort(): void {
    // A task already running finishes in its thread; its result is dropped.
    this.aborted = true;
    this.chunks = [];
    this.stream?.abort();
  }
}

export function tooLarge(ctx: BodyContext, req: ClientRequest, size: number, max: number): void {
  ctx.count('too_large');
  ctx.logger.warn(
    { url: req.url, size, maxBodySize: max },
    'response transform skipped: body larger than transform.maxBodySize, passed through untransformed',
  );
}
