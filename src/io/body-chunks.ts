/**
 * Memory for the large body chunks copied out of the shared read buffer (connection.ts), taken
 * back once a client socket has written them, so that the next chunk reuses it.
 *
 * Why: with an ArrayBuffer of its own per chunk, large responses are a stream of memory outside
 * V8's heap, which V8 answers with full collections, many a second on /64k; reusing the memory
 * nearly halved that case's CPU per request (docs/performance.md).
 *
 * The rule that keeps it safe: only the client transport gives a chunk back, and only once libuv
 * is done with its bytes (the write finished at once, or its completion came). Nothing else keeps
 * a chunk after handing it to the transport; a chunk that never reaches one (a transform keeps
 * it, the client is on TLS) is simply left to the garbage collector.
 */

/** A read is at most the read buffer's size, so every chunk fits one of these. */
const CHUNK_BYTES = 64 * 1024;
/** Smaller chunks slice Node's own 8 KiB allocation pool (Buffer.allocUnsafe) instead. */
export const LARGE_CHUNK = 4 * 1024;
/** Kept for reuse at most: 1 MiB per worker. */
const MAX_FREE = 16;

const free: ArrayBuffer[] = [];
const ours = new WeakSet<ArrayBuffer>();

/** Memory for `length` (LARGE_CHUNK < length ≤ 64 KiB) body bytes. */
export function takeChunk(length: number): Buffer {
  let memory = free.pop();
  if (memory === undefined) {
    memory = new ArrayBuffer(CHUNK_BYTES);
    ours.add(memory);
  }
  return Buffer.from(memory, 0, length);
}

/** libuv is done with `chunk`'s bytes: if takeChunk made it, its memory serves the next chunk. */
export function giveBack(chunk: Buffer): void {
  if (chunk.length <= LARGE_CHUNK || chunk.byteOffset !== 0) return;
  const memory = chunk.buffer as ArrayBuffer;
  // Listed twice, one block would back two chunks at once.
  if (!ours.has(memory) || free.length >= MAX_FREE || free.includes(memory)) return;
  free.push(memory);
}
