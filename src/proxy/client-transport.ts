/**
 * The byte stream under one client connection: what ClientConnection reads from and writes to.
 * Plain TCP connections are driven straight on libuv's handle (tcp-transport.ts), TLS ones
 * through their tls.TLSSocket (socket-transport.ts).
 *
 * Both kinds behave alike for the connection: data arrives through `onData`, the peer's FIN
 * through `onEnd`, a failure or close through `onClose`; writes return false past a high-water
 * mark and `onDrain` follows once everything queued is out.
 */
import type * as net from 'node:net';

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

/** The TLS session of an HTTPS connection, for the access log. */
export interface TlsSession {
  /** TLSv1.3, TLSv1.2. */
  readonly version: string;
  /** Resumed from a ticket or session id, not a full handshake. */
  readonly resumed: boolean;
}

export interface ClientTransport {
  readonly remoteAddress: string | undefined;
  /** null on plain TCP. */
  readonly tlsSession: TlsSession | null;
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
  /** Closed with a TCP RST rather than a FIN (an injected fault); over TLS, no close_notify either. */
  reset(): void;
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
   * the half-close step (a shutdown request, its callback, then close) saves a tenth of a new
   * connection's cost (docs/performance.md): nginx closes the same way when nothing is left to read. A client
   * that writes anyway meets a reset: autocannon, which writes its next request once it has read
   * the response, loses only that request; one that wrote before reading could lose the
   * response too, as it could with nginx.
   */
  Close,
}

// ---- plain TCP, on the handle ----
