/**
 * Response bodies that do not pass through as they came: a route's `transform` (buffered, then
 * rewritten in the transform thread pool) and `compress` (gzip or Brotli, streamed through zlib's
 * own asynchronous streams, which run on libuv's thread pool and never on the event loop).
 *
 * The exchange asks `planBody()` once per response head. Most responses get null and stay on the
 * plain relay path; the rest get a filter that owns the body from there on.
 */
import type { CompressConfig, TransformConfig } from '../config/schema';
import type { BodyContext, BodyFilter, FilterSink } from './body-filter';
import type { ClientRequest } from './client-request';
import { StreamingCompress } from './compression';
import { DECODABLE, headFacts, negotiateEncoding, rewriteFields } from './content-coding';
import { BufferedTransform, tooLarge } from './transform-filter';

export type { BodyContext, BodyFilter, FilterSink, TransformOutcome } from './body-filter';

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
