/**
 * Node's stream_wrap binding: the write and shutdown requests net.Socket itself writes through.
 * The client side drives whole connections on it (proxy/client-transport.ts); the upstream side
 * writes each request head with it (connection.ts).
 *
 * `process.binding` for it is on Node's allow-list (net, tls and http2 are built on it); it is
 * deprecated only in documentation (DEP0111), without a runtime warning. Should a future Node drop
 * it, `streamWrap` is null and both sides go back to net.Socket's own writes rather than fail.
 */
import type { Socket } from 'node:net';

/** A write or shutdown request: `oncomplete` runs with the request as `this` once libuv is done. */
export interface StreamReq {
  handle: object;
  oncomplete: (status: number) => void;
}

export interface StreamWrapBinding {
  WriteWrap: new () => StreamReq;
  ShutdownWrap: new () => StreamReq;
  /** Filled by each read and write: bytes read or an error, where the data starts, whether a write went async. */
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

function load(): { binding: StreamWrapBinding; uvEof: number } | null {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding;
    const streamWrap = binding('stream_wrap') as StreamWrapBinding;
    const uvEof = (binding('uv') as { UV_EOF: number }).UV_EOF;
    return typeof streamWrap.WriteWrap === 'function' && typeof uvEof === 'number' ? { binding: streamWrap, uvEof } : null;
  } catch {
    return null;
  }
}

const loaded = load();
export const streamWrap: StreamWrapBinding | null = loaded?.binding ?? null;
export const UV_EOF = loaded?.uvEof ?? -4095;

interface LatinWritable {
  writeLatin1String(req: StreamReq, data: string): number;
}

function ignoreCompletion(): void {
  // A failed write also fails the socket's reads, where the exchange learns of it.
}

/**
 * Write a request head straight to a plain TCP socket's handle: net.Socket's Writable machinery
 * cost 0.65 µs per proxied request (in-process, /small, interleaved runs). Only when the stream
 * has nothing queued (so the bytes keep their order), is connected, and is not TLS; otherwise
 * through socket.write(). libuv copies the rest of a string that does not go out at once.
 */
export function writeHead(socket: Socket, head: string, plainTcp: boolean): void {
  const handle = (socket as unknown as { _handle: (object & Partial<LatinWritable>) | null })._handle;
  if (streamWrap === null || !plainTcp || handle === null || socket.connecting || socket.writableLength !== 0
    || typeof handle.writeLatin1String !== 'function') {
    socket.write(head, 'latin1');
    return;
  }
  let req = spareReq;
  if (req === null) {
    req = new streamWrap.WriteWrap();
    req.oncomplete = ignoreCompletion;
  } else {
    spareReq = null;
  }
  req.handle = handle;
  // A pooled connection the upstream already closed: destroying it surfaces as a reset, which
  // the exchange reports as a stale connection to retry.
  const err = handle.writeLatin1String(req, head);
  if (err !== 0) {
    socket.destroy();
    return;
  }
  // Node wraps the request object only for a write that has to wait: one that went out at once
  // leaves it free for the next head (a new one is young garbage of every request).
  if (streamWrap.streamBaseState[streamWrap.kLastWriteWasAsync] === 0) spareReq = req;
}

let spareReq: StreamReq | null = null;
