/**
 * Request heads written straight to a plain TCP socket's handle, through Node's stream_wrap
 * binding (node-internals.ts); where that is missing, through socket.write().
 */
import type { Socket } from 'node:net';
import { socketHandleOf, streamWrap, type StreamReq } from '../node-internals';

interface LatinWritable {
  writeLatin1String(req: StreamReq, data: string): number;
}

function ignoreCompletion(): void {
  // A failed write also fails the socket's reads, where the exchange learns of it.
}

/**
 * Write a request head straight to a plain TCP socket's handle, skipping net.Socket's Writable
 * machinery, a measurable part of a small request (docs/performance.md). Only when the stream
 * has nothing queued (so the bytes keep their order), is connected, and is not TLS; otherwise
 * through socket.write(). libuv copies the rest of a string that does not go out at once.
 */
export function writeLatin1(socket: Socket, head: string, plainTcp: boolean): void {
  const handle = plainTcp ? socketHandleOf<object & Partial<LatinWritable>>(socket) : null;
  if (
    streamWrap === null ||
    handle === null ||
    socket.connecting ||
    socket.writableLength !== 0 ||
    typeof handle.writeLatin1String !== 'function'
  ) {
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
