/**
 * One response body in, the transformed body out:
 *
 *   decode (gzip, deflate, br) → replace rules → user module → encode (br, gzip) for the client
 *
 * Runs in a worker thread of the transform pool (workers/transform-task.ts is piscina's entry),
 * or on the event loop when transformPool.threads is 0 (comparisons only). Synchronous zlib is
 * right here: the thread has nothing else to do.
 */
import * as zlib from 'node:zlib';

export interface ReplaceSpec {
  from?: string | undefined;
  regex?: string | undefined;
  flags: string;
  to: string;
}

export interface TransformContext {
  method: string;
  url: string;
  status: number;
  contentType: string;
  /** Response header fields, lower-case names. */
  headers: Record<string, string>;
}

export interface TransformTask {
  body: ArrayBuffer;
  /** How the upstream encoded the body; null for identity. */
  contentEncoding: 'gzip' | 'deflate' | 'br' | null;
  /** Node's name for the body's charset. */
  charset: BufferEncoding;
  rules: readonly ReplaceSpec[] | null;
  module: string | null;
  /** What the module is told about the response; null without a module. */
  context: TransformContext | null;
  /** What to encode the result to for the client; null for identity. */
  encodeTo: 'br' | 'gzip' | null;
  gzipLevel: number;
  brotliQuality: number;
}

export interface TransformResult {
  body: ArrayBuffer;
  encoding: 'br' | 'gzip' | null;
  /** Whether the content (before encoding) differs from what the upstream sent. */
  changed: boolean;
}

type UserTransform = (
  body: Buffer,
  context: TransformContext,
) => Buffer | string | Uint8Array | Promise<Buffer | string | Uint8Array>;

const compiled = new Map<string, Array<(text: string) => string>>();
const modules = new Map<string, UserTransform>();

function compile(rules: readonly ReplaceSpec[]): Array<(text: string) => string> {
  const key = JSON.stringify(rules);
  let fns = compiled.get(key);
  if (fns === undefined) {
    fns = rules.map((r) => {
      if (r.from !== undefined) {
        const from = r.from;
        return (text: string) => text.split(from).join(r.to);
      }
      const re = new RegExp(r.regex!, `${r.flags}g`);
      return (text: string) => text.replace(re, r.to);
    });
    compiled.set(key, fns);
  }
  return fns;
}

/**
 * A user module, loaded once per thread. require() takes CommonJS and (Node ≥ 20.19) ES modules
 * alike; a module that fails to load is tried again on the next body (it may have been fixed).
 */
function loadModule(path: string): UserTransform {
  let fn = modules.get(path);
  if (fn === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require(path) as unknown;
    const candidates = [m, (m as { default?: unknown } | null)?.default];
    const found = candidates.find((c) => typeof c === 'function');
    if (found === undefined) throw new TypeError(`transform module ${path} exports no function`);
    fn = found as UserTransform;
    modules.set(path, fn);
  }
  return fn;
}

function decode(body: Buffer, encoding: TransformTask['contentEncoding']): Buffer {
  switch (encoding) {
    case null:
      return body;
    case 'gzip':
      return zlib.gunzipSync(body);
    case 'deflate':
      return zlib.inflateSync(body);
    case 'br':
      return zlib.brotliDecompressSync(body);
  }
}

function encode(body: Buffer, to: TransformTask['encodeTo'], task: TransformTask): Buffer {
  switch (to) {
    case null:
      return body;
    case 'gzip':
      return zlib.gzipSync(body, { level: task.gzipLevel });
    case 'br':
      return zlib.brotliCompressSync(body, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: task.brotliQuality,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length,
        },
      });
  }
}

/** An ArrayBuffer holding exactly `b`'s bytes, without a copy when `b` already spans one. */
function ownBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const out = new ArrayBuffer(b.length);
  new Uint8Array(out).set(b);
  return out;
}

export async function runTransform(task: TransformTask): Promise<TransformResult> {
  const original = decode(Buffer.from(task.body), task.contentEncoding);
  let body: Buffer = original;
  if (task.rules !== null) {
    let text = original.toString(task.charset);
    for (const fn of compile(task.rules)) text = fn(text);
    body = Buffer.from(text, task.charset);
  }
  if (task.module !== null) {
    const fn = loadModule(task.module);
    const out = await fn(body, task.context!);
    if (typeof out === 'string') body = Buffer.from(out, task.charset);
    else if (out instanceof Uint8Array) body = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    else
      throw new TypeError(
        `transform module ${task.module} returned ${out === null ? 'null' : typeof out}, not a Buffer or string`,
      );
  }
  const changed = body !== original && !body.equals(original);
  if (!changed && task.encodeTo === task.contentEncoding) {
    // Nothing to do after all: the bytes as they came.
    return { body: task.body, encoding: task.encodeTo, changed };
  }
  return { body: ownBuffer(encode(body, task.encodeTo, task)), encoding: task.encodeTo, changed };
}
