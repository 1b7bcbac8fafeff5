/**
 * Every private Node.js internal switchyard uses, and nothing else: the one place to look when a
 * Node.js release changes one of them. The fast paths they serve were each chosen from
 * measurements (docs/performance.md); each has a public-API fallback except
 * llhttp itself, without which switchyard cannot run and says so.
 *
 * `capabilities()` is checked at each worker's start, which logs one line naming the fast paths
 * in use. SWITCHYARD_NODE_INTERNALS=off reports every optional internal as missing, so the
 * fallbacks can be tested (and used, should a Node release break a fast path in the field).
 */
/* eslint-disable @typescript-eslint/no-require-imports */

const disabled = process.env.SWITCHYARD_NODE_INTERNALS === 'off';

// ---- llhttp, through node:http's own binding (required) ----

export interface HTTPParserInstance {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  /** Bytes parsed, or an Error with `code` (HPE_*) and `reason`. */
  execute(data: Buffer): number | ParseError;
  /** Signals EOF: completes a read-until-close body, or returns an Error if a message was cut short. */
  finish(): undefined | ParseError;
  close(): void;
  free(): void;
  remove(): void;
  [key: number]: unknown;
}

export interface ParseError extends Error {
  code: string;
  reason: string;
  bytesParsed: number;
}

export interface HTTPParserConstructor {
  new (): HTTPParserInstance;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnMessageBegin: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
}

/**
 * node:http's client costs about twice as much CPU per request as driving its llhttp binding
 * directly over a pooled socket; `_http_common` has exported it, unchanged in shape, since
 * Node 12. There is no public equivalent short of node:http itself, so its absence is fatal.
 */
function loadHttpCommon(): { HTTPParser: HTTPParserConstructor; methods: string[] } | null {
  try {
    const common = require('_http_common') as { HTTPParser?: HTTPParserConstructor; methods?: string[] };
    const P = common.HTTPParser;
    if (typeof P !== 'function' || typeof P.kOnHeadersComplete !== 'number' || !Array.isArray(common.methods))
      return null;
    return { HTTPParser: P, methods: common.methods };
  } catch {
    return null;
  }
}

const httpCommon = loadHttpCommon();
if (httpCommon === null) {
  throw new Error(
    `switchyard needs node:http's llhttp binding (_http_common.HTTPParser), which Node.js ${process.version} does not export; ` +
      'supported: Node.js 20.19 and later 20.x, 22, 24 and 26',
  );
}
export const HTTPParser: HTTPParserConstructor = httpCommon.HTTPParser;
/** llhttp's method names, by the index its head callback passes. */
export const METHODS: readonly string[] = httpCommon.methods;

// ---- stream_wrap: write and shutdown requests on libuv stream handles ----

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

/**
 * `process.binding('stream_wrap')` is on Node's allow-list (net, tls and http2 are built on it)
 * and deprecated only in documentation (DEP0111), without a runtime warning. Fallback: net.Socket.
 */
function loadStreamWrap(): { binding: StreamWrapBinding; uvEof: number } | null {
  if (disabled) return null;
  try {
    const binding = (process as unknown as { binding: (this: void, name: string) => unknown }).binding;
    const streamWrap = binding('stream_wrap') as StreamWrapBinding;
    const uvEof = (binding('uv') as { UV_EOF: number }).UV_EOF;
    const ok =
      typeof streamWrap.WriteWrap === 'function' &&
      typeof streamWrap.ShutdownWrap === 'function' &&
      streamWrap.streamBaseState instanceof Int32Array &&
      typeof uvEof === 'number';
    return ok ? { binding: streamWrap, uvEof } : null;
  } catch {
    return null;
  }
}

const loadedStreamWrap = loadStreamWrap();
export const streamWrap: StreamWrapBinding | null = loadedStreamWrap?.binding ?? null;
export const UV_EOF = loadedStreamWrap?.uvEof ?? -4095;

// ---- tls_wrap: TLS on a bare TCP handle ----

/**
 * tls_wrap's TLSWrap, the record layer under every tls.TLSSocket: a stream handle of its own
 * (reads give cleartext, writes take it) over the TCP handle it wraps. The methods and callback
 * slots used here are the ones lib/_tls_wrap.js uses, unchanged from Node 12 through 26.
 */
export interface TlsWrapHandle {
  onread: (this: TlsWrapHandle, buffer: ArrayBuffer | undefined) => void;
  reading: boolean;
  readonly writeQueueSize: number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: object, data: Buffer): number;
  writeLatin1String(req: object, data: string): number;
  writev(req: object, chunks: unknown[], allBuffers: boolean): number;
  shutdown(req: object): number;
  /** Server side: the callbacks of the handshake. */
  onhandshakestart: (this: TlsWrapHandle, now: number) => void;
  onhandshakedone: (this: TlsWrapHandle) => void;
  onclienthello: (this: TlsWrapHandle, hello: unknown) => void;
  oncertcb: (this: TlsWrapHandle, info: { servername?: string }) => void;
  onnewsession: (this: TlsWrapHandle) => void;
  onkeylog: (this: TlsWrapHandle) => void;
  onerror: (this: TlsWrapHandle, err: Error) => void;
  ALPNCallback?: (this: TlsWrapHandle, protocols: Buffer) => number | undefined;
  /** The SNI name's context, set from oncertcb before certCbDone(). */
  sni_context?: object;
  enableCertCb(): void;
  certCbDone(): void;
  enableALPNCb(): void;
  setALPNProtocols(wire: Buffer): void;
  getServername(): string | false;
  getProtocol(): string | null;
  getALPNNegotiatedProtocol(): string | false;
  isSessionReused(): boolean;
  destroySSL(): void;
  /** The TCP handle under it: lib/_tls_wrap.js forwards close(), setNoDelay() and the like there. */
  _parent?: object;
  [owner: symbol]: unknown;
}

export interface TlsWrapBinding {
  wrap(handle: object, context: object, isServer: boolean, hasActiveWrite: boolean): TlsWrapHandle;
}

/**
 * `process.binding('tls_wrap')`, on the same allow-list as stream_wrap. A TLSSocket (a net.Socket
 * Duplex with its TLS state machine in JS) costs about 200 µs of CPU per handshake on top of
 * OpenSSL's work (docs/performance.md); driven straight, the handshake costs what OpenSSL does.
 * Fallback: tls.Server and its TLSSockets.
 */
function loadTlsWrap(): TlsWrapBinding | null {
  if (disabled || streamWrap === null) return null;
  try {
    const binding = (process as unknown as { binding: (this: void, name: string) => unknown }).binding;
    const tlsWrap = binding('tls_wrap') as Partial<TlsWrapBinding>;
    return typeof tlsWrap.wrap === 'function' ? (tlsWrap as TlsWrapBinding) : null;
  } catch {
    return null;
  }
}

export const tlsWrap: TlsWrapBinding | null = loadTlsWrap();

/** The native SecureContext inside a tls.SecureContext (what tls_wrap takes), or null. */
export function nativeSecureContext(context: object): object | null {
  const native = (context as { context?: unknown }).context;
  return typeof native === 'object' && native !== null ? native : null;
}

// ---- net.Server's listening handle and its accepted TCP handles ----

/** The listening handle of a net.Server (its `_handle`), whose `onconnection` receives each new connection. */
export interface ListenHandle {
  onconnection: unknown;
  setNoDelay?: (on: boolean) => number;
}

/**
 * Whether a listening server's accepted connections can be taken as bare TCP handles: needs
 * stream_wrap and a `_handle` with an `onconnection` slot. Fallback: net.Socket per connection.
 */
export function listenHandleOf(server: object): ListenHandle | null {
  if (streamWrap === null) return null;
  const handle = (server as { _handle?: unknown })._handle;
  if (handle === null || typeof handle !== 'object' || !('onconnection' in handle)) return null;
  return handle;
}

/** The `_handle` of a net.Socket, or null (TLS, not yet connected, destroyed, or no fast path). */
export function socketHandleOf<T extends object>(socket: object): T | null {
  if (streamWrap === null) return null;
  const handle = (socket as { _handle?: unknown })._handle;
  return handle !== null && typeof handle === 'object' ? (handle as T) : null;
}

let ownerSymbol: symbol | null = null;
/**
 * The slot every stream handle has for its owner (net keeps its Socket there). Using it, not a
 * property of our own, keeps the handle's shape: no 64-byte property store per connection.
 * Fallback: a symbol of our own.
 */
export function ownerSlot(handle: object): symbol {
  ownerSymbol ??=
    (disabled ? undefined : Object.getOwnPropertySymbols(handle).find((s) => s.description === 'owner_symbol')) ??
    Symbol('switchyard.owner');
  return ownerSymbol;
}

// ---- Buffer's own latin1 and UTF-8 coders, under toString() and write() ----

type FastBuffer = Buffer & {
  latin1Slice?(start: number, end: number): string;
  utf8Write?(s: string, offset: number): number;
};
const probe = Buffer.alloc(4) as FastBuffer;
const fastCoders = !disabled && typeof probe.latin1Slice === 'function' && typeof probe.utf8Write === 'function';

/**
 * `buf.toString('latin1', start, end)` without its argument handling (a head and a small body
 * are joined into one string per response).
 */
export const latin1Slice: (buf: Buffer, start: number, end: number) => string = fastCoders
  ? (buf, start, end) => (buf as FastBuffer).latin1Slice!(start, end)
  : (buf, start, end) => buf.toString('latin1', start, end);

/**
 * `buf.write(s, offset, 'utf8')`, which spends as long normalising its arguments as encoding a
 * log line (1.3% of a worker's CPU). Returns the bytes written.
 */
export const utf8Write: (buf: Buffer, s: string, offset: number) => number = fastCoders
  ? (buf, s, offset) => (buf as FastBuffer).utf8Write!(s, offset)
  : (buf, s, offset) => buf.write(s, offset, 'utf8');

// ---- prom-client's default metrics, one file each ----

type Collect = (register: undefined, config: object) => void;

/**
 * One of prom-client's default metrics by its file under lib/metrics (the package has no exports
 * map), or null where that path does not load. Fallback: collectDefaultMetrics, all of them.
 */
export function promDefaultMetric(name: string): Collect | null {
  if (disabled) return null;
  try {
    const collect = require(`prom-client/lib/metrics/${name}`) as unknown;
    return typeof collect === 'function' ? (collect as Collect) : null;
  } catch {
    return null;
  }
}

// ---- the check ----

export interface Capabilities {
  /** Plain TCP clients driven on their handles, and request heads written straight to the handle. */
  tcpHandles: boolean;
  /** TLS clients driven on tls_wrap over their TCP handles. */
  tlsHandles: boolean;
  /** Buffer's latin1Slice / utf8Write. */
  bufferCoders: boolean;
  /** prom-client's default metrics one by one (without the GC observer). */
  promMetricFiles: boolean;
}

/** Which fast paths this Node.js offers (llhttp is checked at load: without it nothing runs). */
export function capabilities(): Capabilities {
  return {
    tcpHandles: streamWrap !== null,
    tlsHandles: tlsWrap !== null,
    bufferCoders: fastCoders,
    promMetricFiles: promDefaultMetric('processCpuTotal') !== null,
  };
}
