/**
 * Plain TCP client connections, driven straight on libuv's handle through the same `tcp_wrap`
 * and `stream_wrap` bindings net.Socket is built on. A net.Socket (a Duplex with its two stream
 * states, event emitter and timer hooks) costs a new connection several times the CPU and an idle
 * one more than twice the memory; with it the targets for new connections and idle memory were
 * out of reach (docs/performance.md). HTTPS connections run here too, under tls_wrap's record
 * layer (tls-transport.ts). The private bindings are reached through node-internals.ts only.
 */
import * as net from 'node:net';
import { latin1Slice, ownerSlot, streamWrap, UV_EOF } from '../node-internals';
import { giveBack } from '../io/body-chunks';
import { readBuffer } from '../io/read-buffer';
import { deferWrite, shouldDefer, SMALL_WRITE, writeBatchStats, type DeferredWriter } from '../io/write-batch';
import { EndHow, type ClientTransport, type TlsSession, type TransportSink } from './client-transport';

interface WriteReq {
  handle: StreamHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  transport: TcpTransport;
  /** Keeps the bytes of an asynchronous write alive until libuv is done with them. */
  keep: unknown;
}

interface ShutdownReq {
  handle: StreamHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
  transport: TcpTransport;
  thenClose: boolean;
}

/**
 * The stream methods of a libuv stream handle (see lib/internal/stream_base_commons.js): a TCP
 * handle's, or tls_wrap's over one (tls-transport.ts), which reads and writes cleartext.
 */
export interface StreamHandle {
  onread: (this: StreamHandle, buffer: ArrayBuffer | undefined) => void;
  reading: boolean;
  readonly writeQueueSize: number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Buffer): number;
  writeLatin1String(req: WriteReq, data: string): number;
  writev(req: WriteReq, chunks: unknown[], allBuffers: boolean): number;
  shutdown(req: ShutdownReq): number;
  [owner: symbol]: unknown;
}

/** The parts of tcp_wrap's TCP handle used here (see lib/net.js). */
export interface TcpHandle extends StreamHandle {
  close(callback?: () => void): void;
  /** uv_tcp_close_reset: close with an RST (what net.Socket's resetAndDestroy calls). A non-zero result: not closed. */
  reset?(callback?: () => void): number;
  getpeername(out: PeerName): number;
  useUserBuffer(buffer: Uint8Array): void;
  setNoDelay(on: boolean): number;
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
 * object, once per connection.
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
  protected closed = false;
  protected readonly handle: StreamHandle;
  /**
   * A shutdown waits for the writes in flight to finish (TLS: tls_wrap writes its close_notify
   * only when no write is pending, else the FIN would go out without it).
   */
  protected readonly shutdownAfterWrites: boolean = false;
  private shutdownHeld: EndHow | null = null;

  /** `socket`: the TCP handle under `handle` when that is not the TCP handle itself (TLS). */
  constructor(
    handle: StreamHandle,
    protected readonly socket: TcpHandle = handle as TcpHandle,
  ) {
    this.handle = handle;
    kOwner ??= ownerSlot(handle);
    handle[kOwner] = this;
    handle.onread = onTcpRead;
    // Plain TCP reads into the shared buffer; tls_wrap hands over cleartext of its own.
    if (handle === socket) socket.useUserBuffer(readBuffer);
  }

  get tlsSession(): TlsSession | null {
    return null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get remoteAddress(): string | undefined {
    if (this.address === null) this.address = this.socket.getpeername(peerName) === 0 ? peerName.address : undefined;
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
    if (this.inFlight === 0 && this.shutdownHeld !== null) {
      const how = this.shutdownHeld;
      this.shutdownHeld = null;
      this.finish(how, false);
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
    // every response closes (docs/performance.md).
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
    if (this.inFlight > 0 && this.shutdownAfterWrites) {
      this.shutdownHeld = how;
      return false;
    }
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
    this.close(false);
  }

  reset(): void {
    this.close(true);
  }

  private close(reset: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.corked = null;
    // Writes still queued are cancelled by libuv (their completions see `closed`).
    if (reset) this.resetHandle();
    else this.closeHandle();
  }

  protected closeHandle(): void {
    this.socket.close();
  }

  protected resetHandle(): void {
    if (this.socket.reset?.() !== 0) this.socket.close();
  }

  /**
   * Closed from here (a failure, or the close end() asked for): the connection learns of it at
   * once from libuv's callbacks, and on the next tick when a call of its own led here, so that a
   * write failing inside the handler's write() does not run the abort path under it. (Deferring
   * every close cost every new connection a tick.)
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
    return this.socketOf();
  }

  /** A net.Socket over the handle, for a tunnel. */
  protected socketOf(): net.Socket {
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

function writeReq(handle: StreamHandle, transport: TcpTransport): WriteReq {
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

function onTcpRead(this: StreamHandle, buffer: ArrayBuffer | undefined): void {
  (this[kOwner!] as TcpTransport | null | undefined)?.read(buffer);
}

function notifyClosed(sink: TransportSink | null): void {
  sink?.onClose();
}

function emitDrain(t: TcpTransport): void {
  t.drained();
}
