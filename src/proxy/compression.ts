/**
 * A route's `compress`: the body streamed through gzip or Brotli.
 */
import { createBrotliCompress, createGzip, constants as zc, type BrotliCompress, type Gzip } from 'node:zlib';
import type { CompressConfig } from '../config/schema';
import { TransformFailedError } from '../errors';
import type { BodyFilter, FilterSink } from './body-filter';

/** gzip or Brotli, streamed: zlib's async streams compress on libuv's threads, with backpressure both ways. */
export class StreamingCompress implements BodyFilter {
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
