/**
 * Response bodies that do not pass through as they came: a route's `transform` (buffered, then
 * rewritten in the transform thread pool) and `compress` (gzip or Brotli, streamed through zlib's
 * own asynchronous streams, which run on libuv's thread pool and never on the event loop).
 *
 * The exchange asks `planBody()` once per response head. Most responses get null and stay on the
 * plain relay path; the rest get a filter that owns the body from there on.
 */
import { createBrotliCompress, createGzip, constants as zc, type BrotliCompress, type Gzip } from 'node:zlib';
import type { Logger } from 'pino';
import type { CompressConfig, TransformConfig } from '../config/schema';
import { TransformFailedError, TransformOverloadedError, type SwitchyardError } from '../errors';
import type { TransformTask } from '../transform/body';
import type { TransformPool } from '../transform/pool';
import type { ClientRequest } from './client-request';

/** What a filter drives: the client response, and the exchange around it. */
export interface FilterSink {
  /** Builds and writes the client head from upstream-style raw fields (route edits applied). */
  sendHead(status: number, reason: string, raw: string[]): void;
  write(chunk: Buffer): boolean;
  flush(): void;
  /** The response is complete. */
  end(): void;
  /** The response cannot be completed: answer with `err` if nothing was sent, else cut. */
  fail(err: SwitchyardError): void;
  /** The filter can take more body: let the upstream connection read again. */
  resumeUpstream(): void;
}

export interface BodyFilter {
  /** A body chunk from the upstream; false asks for a pause until resumeUpstream(). */
  data(chunk: Buffer): boolean;
  /** The upstream body is complete. */
  end(): void;
  /** The client can take more after a write returned false. */
  clientDrained(): void;
  /** The client is gone. */
  abort(): void;
}

export type TransformOutcome =
  'transformed' | 'unchanged' | 'too_large' | 'overload_pass' | 'overload_reject' | 'failed' | 'undecodable';

export interface BodyContext {
  pool: TransformPool;
  onOverload: 'pass' | 'reject';
  logger: Logger;
  count(outcome: TransformOutcome): void;
}

/** The fields of a response head that decide whether and how its body is filtered. */
interface HeadFacts {
  type: string;
  charset: BufferEncoding;
  encoding: string | null;
  length: number | null;
  noTransform: boolean;
  ranged: boolean;
}

function headFacts(raw: readonly string[]): HeadFacts {
  const f: HeadFacts = { type: '', charset: 'utf8', encoding: null, length: null, noTransform: false, ranged: false };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    if (name === 'content-type') {
      const [type, ...params] = value.split(';');
      f.type = type.trim().toLowerCase();
      for (const p of params) {
        const [k, v] = p.split('=');
        if (k?.trim().toLowerCase() === 'charset') {
          const cs = v?.trim().replace(/^"|"$/g, '').toLowerCase();
          if (cs === 'iso-8859-1' || cs === 'latin1' || cs === 'us-ascii' || cs === 'ascii') f.charset = 'latin1';
        }
      }
    } else if (name === 'content-encoding') {
      const e = value.trim().toLowerCase();
      f.encoding = e === '' || e === 'identity' ? null : e;
    } else if (name === 'content-length') {
      f.length = Number(value);
    } else if (name === 'cache-control') {
      if (/(^|[\s,])no-transform($|[\s,])/i.test(value)) f.noTransform = true;
    } else if (name === 'content-range') {
      f.ranged = true;
    }
  }
  return f;
}

/**
 * The client's preferred encoding among `offered` (in server preference order for ties), by the
 * q-values of its Accept-Encoding (RFC 9110 §12.5.3); null when none is acceptable.
 */
export function negotiateEncoding(
  acceptEncoding: string | null,
  offered: readonly ('br' | 'gzip')[],
): 'br' | 'gzip' | null {
  if (acceptEncoding === null) return null;
  const q = new Map<string, number>();
  for (const part of acceptEncoding.split(',')) {
    const [token, ...params] = part.trim().split(';');
    const name = token.trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*$/i.exec(p);
      if (m) weight = Number(m[1]);
    }
    q.set(name, Math.max(q.get(name) ?? -1, weight));
  }
  let best: 'br' | 'gzip' | null = null;
  let bestQ = 0;
  for (const enc of offered) {
    const weight = q.get(enc) ?? (enc === 'gzip' ? q.get('x-gzip') : undefined) ?? q.get('*') ?? 0;
    if (weight > bestQ) {
      best = enc;
      bestQ = weight;
    }
  }
  return best;
}

const DECODABLE = new Set(['gzip', 'x-gzip', 'deflate', 'br']);

/**
 * Header fields as the client will get them. `encoding` 'keep': the body is the upstream's (only
 * Vary may change); otherwise the body was re-encoded (null: identity) to `length` bytes (null:
 * unknown, sent chunked). A changed body's strong ETag becomes weak (RFC 9110 §8.8.1).
 */
function rewriteFields(
  raw: readonly string[],
  encoding: 'br' | 'gzip' | null | 'keep',
  length: number | null,
  changed: boolean,
  vary: boolean,
): string[] {
  const out: string[] = [];
  let varyDone = !vary;
  const newBody = encoding !== 'keep';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    let value = raw[i + 1];
    if (newBody && (lower === 'content-length' || lower === 'content-encoding')) continue;
    if (lower === 'etag' && changed && value.startsWith('"')) value = `W/${value}`;
    if (lower === 'vary' && vary) {
      varyDone = true;
      if (!/(^|,)\s*(accept-encoding|\*)\s*(,|$)/i.test(value)) value = `${value}, Accept-Encoding`;
    }
    out.push(name, value);
  }
  if (newBody && length !== null) out.push('Content-Length', String(length));
  if (newBody && encoding !== null) out.push('Content-Encoding', encoding);
  if (!varyDone) out.push('Vary', 'Accept-Encoding');
  return out;
}

export interface BodyPlan {
  /** The head to write now (null: the filter writes it later). */
  raw: string[] | null;
  filter: BodyFilter | null;
}

/**
 * Decide what happens to one response body. Returns null when it passes as it came (also for
 * 1xx/204/304, ranges and `Cache-Control: no-transform`; HEAD only gains Vary on compressing routes).
 */
export function planBody(
  transform: TransformConfig | null,
  compress: CompressConfig | null,
  ctx: BodyContext,
  req: ClientRequest,
  acceptEncoding: string | null,
  status: number,
  reason: string,
  raw: string[],
  sink: FilterSink,
): BodyPlan | null {
  if (status < 200 || status === 204 || status === 304 || status === 206) return null;
  const f = headFacts(raw);
  if (f.noTransform || f.ranged) return null;
  const compressible = compress !== null && compress.types.includes(f.type);
  // No body to change; but the Vary a GET would carry tells caches the same thing.
  if (req.method === 'HEAD')
    return compressible ? { raw: rewriteFields(raw, 'keep', null, false, true), filter: null } : null;
  if (transform !== null && transform.types.includes(f.type)) {
    if (f.encoding !== null && !DECODABLE.has(f.encoding)) {
      ctx.count('undecodable');
      ctx.logger.warn(
        { url: req.url, contentEncoding: f.encoding },
        'response transform skipped: unknown Content-Encoding',
      );
      return null;
    }
    if (f.length !== null && f.length > transform.maxBodySize) {
      // Untransformed, but still compressed below if the route compresses.
      tooLarge(ctx, req, f.length, transform.maxBodySize);
    } else {
      // Re-encode for the client: to what the route compresses to, or, when the upstream
      // compressed anyway, to what the client accepts of gzip and br.
      const offered = compressible ? compress.encodings : f.encoding !== null ? (['gzip', 'br'] as const) : [];
      const encodeTo = offered.length > 0 ? negotiateEncoding(acceptEncoding, offered) : null;
      return {
        raw: null,
        filter: new BufferedTransform(
          transform,
          compress,
          ctx,
          req,
          status,
          reason,
          raw,
          f,
          encodeTo,
          compressible || f.encoding !== null,
          sink,
        ),
      };
    }
  }
  if (!compressible) return null;
  if (f.encoding !== null || (f.length !== null && f.length < compress.minSize)) {
    // Not compressed by us, but the response still varies with Accept-Encoding for caches.
    return { raw: rewriteFields(raw, 'keep', null, false, true), filter: null };
  }
  const to = negotiateEncoding(acceptEncoding, compress.encodings);
  if (to === null) return { raw: rewriteFields(raw, 'keep', null, false, true), filter: null };
  sink.sendHead(status, reason, rewriteFields(raw, to, null, true, true));
  return { raw: null, filter: new StreamingCompress(to, compress, sink) };
}

function tooLarge(ctx: BodyContext, req: ClientRequest, size: number, max: number): void {
  ctx.count('too_large');
  ctx.logger.warn(
    { url: req.url, size, maxBodySize: max },
    'response transform skipped: body larger than transform.maxBodySize, passed through untransformed',
  );
}

/** gzip or Brotli, streamed: zlib's async streams compress on libuv's threads, with backpressure both ways. */
class StreamingCompress implements BodyFilter {
  private readonly z: Gzip | BrotliCompress;
  private done = false;

  constructor(encoding: 'br' | 'gzip', cfg: CompressConfig, sink: FilterSink) {
    this.z =
      encoding === 'gzip'
        ? createGzip({ level: cfg.gzipLevel })
        : createBrotliCompress({ params: { [zc.BROTLI_PARAM_QUALITY]: cfg.brotliQuality } });
    this.z.on('data', (c: Buffer) => {
      if (!sink.write(c)) this.z.pause();
      sink.flush();
    });
    this.z.on('drain', () => sink.resumeUpstream());
    this.z.on('end', () => {
      if (this.done) return;
      this.done = true;
      sink.end();
    });
    this.z.on('error', (err: Error) => {
      if (this.done) return;
      this.done = true;
      sink.fail(new TransformFailedError(`compression failed: ${err.message}`, { cause: err }));
    });
  }

  data(chunk: Buffer): boolean {
    return this.z.write(chunk);
  }

  end(): void {
    this.z.end();
  }

  clientDrained(): void {
    this.z.resume();
  }

  abort(): void {
    this.done = true;
    this.z.destroy();
  }
}

/**
 * The whole body, then one task in the transform pool. Past transform.maxBodySize while
 * buffering, it gives up and relays what it holds and the rest untransformed.
 */
class BufferedTransform implements BodyFilter {
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

function fieldsOf(raw: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    out[k] = out[k] === undefined ? raw[i + 1] : `${out[k]}, ${raw[i + 1]}`;
  }
  return out;
}
