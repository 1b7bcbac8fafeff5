/**
 * The byte stream under one client connection: what ClientConnection reads from and writes to.
 *
 * Plain TCP connections are driven straight on libuv's handle, through the same `tcp_wrap` and
 * `stream_wrap` bindings net.Socket is built on. A net.Socket (a Duplex with its two stream
 * states, event emitter, timers hooks) cost the new-connection path about 14 µs of CPU and the
 * idle connection about 3 KiB, measured with a bare accept-answer-close server: 31.6 µs per
 * connection through net.Socket against 17.4 on the handle, and 5.3 KiB per idle connection
 * against 2.1. Those were the two speed targets (45 µs per new connection, 4 KiB per idle one)
 * that a proxy built on net.Socket could not reach. TLS connections keep tls.TLSSocket, whose
 * record layer is not ours to redo.
 *
 * Both kinds behave alike for the connection: data arrives through `onData`, the peer's FIN
 * through `onEnd`, a failure or close through `onClose`; writes return false past a high-water
 * mark and `onDrain` follows once everything queued is out.
 */
import * as net from 'node:net';
import { latin1Slice, listenHandleOf, ownerSlot, streamWrap, UV_EOF } from '../node-internals';
import { giveBack } from '../io/body-chunks';
import { readBuffer } from '../io/read-buffer';
import { deferWrite, shouldDefer, SMALL_WRITE, writeBatchStats, type DeferredWriter } from '../io/write-batch';

/** The connection's side: called by the transport, never re-entered from write(). */
export interface TransportSink {
  onData(chunk: Buffer): void;
  /** The peer sent FIN. */
  onEnd(): void;
  /** A read or write failed, or the socket closed under us. */
  onClose(): void;
  /** Everything queued was written after a write returned false. */
  onDrain(): void;
}

export interface ClientTransport {
  readonly remoteAddress: string | undefined;
  start(sink: TransportSink): void;
  /**
   * Writes until the matching uncork() leave as one (writev). Nests. Small writes may also wait
   * for the end of the loop's I/O phase when it is busy (io/write-batch.ts).
   */
  cork(): void;
  uncork(): void;
  /**
   * Strings are written as latin1: they are header bytes, which llhttp hands over one char per
   * byte, so latin1 sends them back out unchanged.
   */
  write(chunk: Buffer | string): boolean;
  setReading(on: boolean): void;
  /**
   * Once queued writes are out: FIN, or close (see EndHow). True when the connection closed within
   * the call, cleanly: then no onClose follows, and the caller finishes its own close.
   */
  end(how: EndHow): boolean;
  destroy(): void;
  /** Give the socket to someone else (an Upgrade tunnel) as a net.Socket; this transport is done. */
  detach(): net.Socket;
}

/** How a client connection ends once its last response is written. */
export const enum EndHow {
  /** FIN only: the connection lingers, reading and dropping what the client still sends. */
  Fin,
  /** FIN, then close: the client may legitimately send more (we are closing a keep-alive connection). */
  FinThenClose,
  /**
   * Close, which sends the FIN after the written bytes: the client said Connection: close and its
   * request was read to the end, so it sends nothing more (RFC 9112 §9.6 "MUST NOT"). Skipping
   * the half-close step (a shutdown request, its callback, then close) cut a connection per
   * request from 44.9–46.2 to 39.2–39.8 µs in-process (wrk --close, access log and metrics on),
   * and p99 from 4.5 to 2.6 ms: nginx closes the same way when nothing is left to read. A client
   * that writes anyway meets a reset: autocannon, which writes its next request once it has read
   * the response, loses only that request; one that wrote before reading could lose the
   * response too, as it could with nginx.
   */
  Close,
}

// ---- plain TCP, on the handle ----

interface WriteReq {
  handle: TcpHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  transport: TcpTransport;
  /** Keeps the bytes of an asynchronous write alive until libuv is done with them. */
  keep: unknown;
}

interface ShutdownReq {
  handle: TcpHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
  transport: TcpTransport;
  thenClose: boolean;
}

/** The parts of tcp_wrap's TCP handle used here (see lib/net.js and lib/internal/stream_base_commons.js). */
export interface TcpHandle {
  onread: (this: TcpHandle, buffer: ArrayBuffer | undefined) => void;
  reading: boolean;
  readonly writeQueueSize: number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Buffer): number;
  writeLatin1String(req: WriteReq, data: string): number;
  writev(req: WriteReq, chunks: unknown[], allBuffers: boolean): number;
  shutdown(req: ShutdownReq): number;
  close(callback?: () => void): void;
  getpeername(out: PeerName): number;
  useUserBuffer(buffer: Uint8Array): void;
  setNoDelay(on: boolean): number;
  [owner: symbol]: TcpTransport | null | undefined;
}

const unavailable = (): never => {
  throw new Error('stream_wrap binding unavailable');
};
/** Whether plain TCP connections can be driven on their handles here. */
export const handleTransportAvailable = streamWrap !== null;
const { streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync } = streamWrap ?? {
  streamBaseState: new Int32Array(8),
  kReadBytesOrError: 0,
  kArrayBufferOffset: 1,
  kLastWriteWasAsync: 2,
};
const WriteWrap = (streamWrap?.WriteWrap ?? unavailable) as unknown as new () => WriteReq;
const ShutdownWrap = (streamWrap?.ShutdownWrap ?? unavailable) as unknown as new () => ShutdownReq;

/** Where a handle points to its transport (node-internals.ts: ownerSlot). */
let kOwner: symbol | null = null;

/** Past this many bytes queued in the kernel's stead, write() says stop (net.Socket's default). */
const HIGH_WATER_MARK = 16 * 1024;

/** What node's AddressToJS writes into getpeername's out-parameter, in the order it writes it. */
interface PeerName {
  address: string;
  family: string;
  port: number;
}
/**
 * One out-parameter for every connection (the call fills it synchronously), shaped as the call
 * leaves it: node then overwrites three properties in place instead of adding them to a new
 * object, 600 → 460 ns a call, once per connection (measured).
 */
const peerName: PeerName = { address: '', family: '', port: 0 };

export class TcpTransport implements ClientTransport, DeferredWriter {
  private sink: TransportSink | null = null;
  private address: string | undefined | null = null;
  private corks = 0;
  /** Writes held back: corked, or small ones waiting for the end of the I/O phase (write-batch.ts). */
  private corked: Array<string | Buffer> | null = null;
  private corkedBytes = 0;
  /** In write-batch's queue. */
  private deferred = false;
  /** Writes libuv has not finished yet. */
  private inFlight = 0;
  private needDrain = false;
  private ended = false;
  /** end() waits for the held writes it follows: its FIN (or close) goes out after them. */
  private endHeld: EndHow | null = null;
  private closed = false;

  constructor(private readonly handle: TcpHandle) {
    kOwner ??= ownerSlot(handle);
    handle[kOwner] = this;
    handle.onread = onTcpRead;
    handle.useUserBuffer(readBuffer);
  }

  get remoteAddress(): string | undefined {
    if (this.address === null) this.address = this.handle.getpeername(peerName) === 0 ? peerName.address : undefined;
    return this.address;
  }

  start(sink: TransportSink): void {
    this.sink = sink;
    this.setReading(true);
  }

  cork(): void {
    this.corks++;
  }

  uncork(): void {
    if (this.corks === 0 || --this.corks > 0) return;
    if (this.corked === null) return;
    if (this.mayWait(this.corkedBytes)) this.defer();
    else this.writeCorked();
  }

  /** Whether `bytes` held for this socket may wait for the end of the turn (write-batch.ts). */
  private mayWait(bytes: number): boolean {
    return bytes <= SMALL_WRITE && (this.deferred || shouldDefer());
  }

  private defer(): void {
    if (this.deferred) return;
    this.deferred = true;
    deferWrite(this);
  }

  /** The end of the I/O phase (write-batch.ts). */
  flushDeferred(): void {
    this.deferred = false;
    if (this.corks === 0) this.writeCorked();
    const how = this.endHeld;
    if (how !== null) {
      this.endHeld = null;
      if (!this.closed) this.finish(how, false);
    }
  }

  /** Everything held back goes out now, as one write. */
  private writeCorked(): void {
    const chunks = this.corked;
    if (chunks === null) return;
    this.corked = null;
    const bytes = this.corkedBytes;
    this.corkedBytes = 0;
    if (this.closed) return;
    if (chunks.length === 1) {
      this.writeNow(chunks[0]);
    } else if (bytes <= SMALL_WRITE) {
      // A head and a small body: one latin1 string. Node's writev copies strings into a
      // buffer of its own anyway, and parses an encoding per chunk.
      let joined = '';
      for (const c of chunks) joined += typeof c === 'string' ? c : latin1Slice(c, 0, c.length);
      this.writeNow(joined);
    } else {
      let allBuffers = true;
      for (const c of chunks)
        if (typeof c === 'string') {
          allBuffers = false;
          break;
        }
      let list: unknown[] = chunks;
      if (!allBuffers) {
        // writev's mixed form: chunk, encoding, chunk, encoding... (buffers ignore theirs).
        list = new Array<unknown>(chunks.length * 2);
        for (let i = 0; i < chunks.length; i++) {
          list[2 * i] = chunks[i];
          list[2 * i + 1] = 'latin1';
        }
      }
      const req = writeReq(this.handle, this);
      this.afterWrite(req, this.handle.writev(req, list, allBuffers), list);
    }
    // write() said stop while corked, and the whole batch went out at once: say go on.
    if (this.needDrain && this.inFlight === 0 && !this.closed) {
      this.needDrain = false;
      process.nextTick(emitDrain, this);
    }
  }

  write(chunk: string | Buffer): boolean {
    if (this.closed || this.ended) return false;
    const holding = this.corks > 0;
    if (!holding && !this.mayWait(this.corkedBytes + chunk.length)) {
      // Too big to wait, or not worth it: what waits goes first, then this, now.
      this.writeCorked();
      return this.closed ? false : this.writeNow(chunk);
    }
    (this.corked ??= []).push(chunk);
    this.corkedBytes += chunk.length;
    // Queued with the chunk in place: deferWrite may flush at once.
    if (!holding) this.defer();
    if (this.handle.writeQueueSize + this.corkedBytes < HIGH_WATER_MARK) return true;
    this.needDrain = true;
    return false;
  }

  private writeNow(chunk: string | Buffer): boolean {
    const req = writeReq(this.handle, this);
    const err =
      typeof chunk === 'string' ? this.handle.writeLatin1String(req, chunk) : this.handle.writeBuffer(req, chunk);
    return this.afterWrite(req, err, chunk);
  }

  private afterWrite(req: WriteReq, err: number, keep: unknown): boolean {
    if (err !== 0) {
      this.fail(true);
      return false;
    }
    if (streamBaseState[kLastWriteWasAsync] !== 0) {
      req.keep = keep;
      this.inFlight++;
    } else {
      giveBackAll(keep);
      spareReq = req;
    }
    if (this.handle.writeQueueSize < HIGH_WATER_MARK) return true;
    this.needDrain = true;
    return false;
  }

  /** From a write request. */
  writeDone(status: number): void {
    this.inFlight--;
    if (this.closed) return;
    if (status < 0) {
      this.fail();
      return;
    }
    if (this.inFlight === 0 && this.needDrain) {
      this.needDrain = false;
      this.sink?.onDrain();
    }
  }

  /** After a corked batch that went out whole. */
  drained(): void {
    if (!this.closed) this.sink?.onDrain();
  }

  setReading(on: boolean): void {
    const h = this.handle;
    if (this.closed || h.reading === on) return;
    h.reading = on;
    if ((on ? h.readStart() : h.readStop()) !== 0 && on) this.fail(true);
  }

  end(how: EndHow): boolean {
    if (this.closed || this.ended) return false;
    this.ended = true;
    // A response held for the end of the turn takes its FIN along: written at once, a closing
    // response woke its client on its own (write-batch.ts), and with a connection per request
    // every response closes. Measured that way (wrk --close, 50 connections, in-process):
    // 39.4–41.3 → 38.4–38.9 µs per request, nearly all of it kernel time, p99 3.6–3.9 → 3.1–3.3 ms.
    if (this.deferred && this.corks === 0) {
      this.endHeld = how;
      writeBatchStats.finsHeld++;
      return false;
    }
    // Whatever is still corked goes out ahead of the FIN.
    this.uncorkAll();
    return this.finish(how, true);
  }

  /**
   * `inCall`: from the caller's own end(). A close done at once is then reported by the return
   * value rather than by onClose on the next tick; a tick per connection (half of all `--close`
   * connections ended this way, the rest from the end-of-turn flush) ran node's tick and
   * microtask processing once more for each.
   */
  private finish(how: EndHow, inCall: boolean): boolean {
    // A write libuv still holds would be cancelled by close(): only the shutdown waits for it.
    if (how === EndHow.Close && this.inFlight === 0) {
      if (this.closed) return false;
      writeBatchStats.closedAtOnce++;
      if (!inCall) {
        this.fail();
        return false;
      }
      this.destroy();
      return true;
    }
    const thenClose = how !== EndHow.Fin;
    const req = new ShutdownWrap();
    req.handle = this.handle;
    req.oncomplete = onShutdown;
    req.transport = this;
    req.thenClose = thenClose;
    const err = this.handle.shutdown(req);
    // 1: done at once; anything else non-zero: the peer is gone (ENOTCONN) and nothing can follow.
    if (err !== 0 && (thenClose || err !== 1)) this.fail(true);
    return false;
  }

  /** From the shutdown request. */
  shutdownDone(status: number, thenClose: boolean): void {
    if (thenClose || status < 0) this.fail();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.corked = null;
    // Writes still queued are cancelled by libuv (their completions see `closed`).
    this.handle.close();
  }

  /**
   * Closed from here (a failure, or the close end() asked for): the connection learns of it at
   * once from libuv's callbacks, and on the next tick when a call of its own led here, so that a
   * write failing inside the handler's write() does not run the abort path under it. (Deferring
   * every close cost 3.5 µs per new connection, measured.)
   */
  fail(inCall = false): void {
    if (this.closed) return;
    this.destroy();
    if (inCall) process.nextTick(notifyClosed, this.sink);
    else this.sink?.onClose();
  }

  /** From onread: the peer's bytes or its end. */
  read(buffer: ArrayBuffer | undefined): void {
    if (this.closed) return;
    const n = streamBaseState[kReadBytesOrError];
    if (n > 0) {
      this.sink?.onData(
        buffer === undefined ? readBuffer.subarray(0, n) : Buffer.from(buffer, streamBaseState[kArrayBufferOffset], n),
      );
    } else if (n === UV_EOF) {
      this.setReading(false);
      this.sink?.onEnd();
    } else if (n < 0) {
      this.fail();
    }
  }

  detach(): net.Socket {
    this.uncorkAll();
    this.setReading(false);
    this.closed = true;
    this.handle[kOwner!] = null;
    // What net does on accept; the socket restarts reads itself (read(0) in its constructor).
    // The handle reads into the shared buffer (there is no undoing useUserBuffer), so the socket
    // gets net's own user-buffer form and copies each read into its stream, which the tunnel
    // pipes as usual; push() saying stop pauses the reads until the stream is drained.
    const socket: net.Socket = new net.Socket({
      handle: this.handle,
      allowHalfOpen: true,
      readable: true,
      writable: true,
      onread: {
        buffer: readBuffer,
        callback: (n: number, buf: Uint8Array) => socket.push(Buffer.from(buf.subarray(0, n))),
      },
    } as net.SocketConstructorOpts);
    return socket;
  }

  /** Corked or waiting, it goes out now: ahead of a FIN, or of a tunnel taking the socket. */
  private uncorkAll(): void {
    this.corks = 0;
    this.writeCorked();
  }
}

/**
 * A write request libuv never took: the write went out at once, and Node wraps the request object
 * only for a write that has to wait. The next write reuses it (a new one was about 200 bytes
 * of young garbage per write).
 */
let spareReq: WriteReq | null = null;

function writeReq(handle: TcpHandle, transport: TcpTransport): WriteReq {
  let req = spareReq;
  if (req === null) {
    req = new WriteWrap();
    req.oncomplete = onWriteComplete;
  } else {
    spareReq = null;
  }
  req.handle = handle;
  req.transport = transport;
  req.keep = null;
  return req;
}

function onWriteComplete(this: WriteReq, status: number): void {
  // Finished or cancelled, libuv is done with the bytes.
  giveBackAll(this.keep);
  this.keep = null;
  this.transport.writeDone(status);
}

/** What a write took (a chunk, or writev's list), once libuv is done with it (body-chunks.ts). */
function giveBackAll(written: unknown): void {
  if (Buffer.isBuffer(written)) giveBack(written);
  else if (Array.isArray(written)) for (const c of written) if (Buffer.isBuffer(c)) giveBack(c);
}

function onShutdown(this: ShutdownReq, status: number): void {
  this.transport.shutdownDone(status, this.thenClose);
}

function onTcpRead(this: TcpHandle, buffer: ArrayBuffer | undefined): void {
  this[kOwner!]?.read(buffer);
}

function notifyClosed(sink: TransportSink | null): void {
  sink?.onClose();
}

function emitDrain(t: TcpTransport): void {
  t.drained();
}

/**
 * Take over a listening net.Server's accepted handles: `onHandle` receives each new connection's
 * TCP handle instead of net wrapping it in a Socket. Works for a server listening on its own
 * socket and for a cluster worker's (both settings of cluster.schedulingPolicy hand the
 * connection to the same `onconnection` slot). Call after 'listening'.
 */
export function acceptHandles(server: net.Server, onHandle: (err: number, handle: TcpHandle) => void): boolean {
  const listenHandle = listenHandleOf(server);
  if (listenHandle === null) return false;
  // Linux copies TCP_NODELAY from the listening socket to each one it accepts: set there once, it
  // saves a setsockopt per connection. Elsewhere, and where the cluster's primary accepts
  // (round-robin: the worker's listening handle is a stand-in), each connection sets it.
  const inherited =
    process.platform === 'linux' &&
    typeof listenHandle.setNoDelay === 'function' &&
    listenHandle.setNoDelay(true) === 0;
  listenHandle.onconnection = inherited
    ? onHandle
    : (err: number, handle: TcpHandle) => {
        if (err === 0) handle.setNoDelay(true);
        onHandle(err, handle);
      };
  return true;
}

// ---- TLS (or any net.Socket) ----

export class SocketTransport implements ClientTransport {
  constructor(private readonly socket: net.Socket) {}

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  start(sink: TransportSink): void {
    const s = this.socket;
    s.on('data', (d: Buffer) => sink.onData(d));
    s.on('end', () => sink.onEnd());
    s.on('error', () => sink.onClose());
    s.on('close', () => sink.onClose());
    s.on('drain', () => sink.onDrain());
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  write(chunk: Buffer | string): boolean {
    return typeof chunk === 'string' ? this.socket.write(chunk, 'latin1') : this.socket.write(chunk);
  }

  setReading(on: boolean): void {
    if (on) this.socket.resume();
    else this.socket.pause();
  }

  end(how: EndHow): boolean {
    if (how !== EndHow.Fin) this.socket.destroySoon();
    else this.socket.end();
    return false;
  }

  destroy(): void {
    this.socket.destroy();
  }

  detach(): net.Socket {
    const s = this.socket;
    for (const event of ['data', 'end', 'drain', 'error', 'close']) s.removeAllListeners(event);
    return s;
  }
}
