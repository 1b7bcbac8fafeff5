/**
 * HTTPS client connections on bare handles: each accepted TCP handle is wrapped in tls_wrap's
 * TLSWrap, the record layer under every tls.TLSSocket, and driven like a plain TCP handle
 * (tcp-transport.ts), without the TLSSocket (a net.Socket Duplex and its TLS state machine in JS)
 * whose cost per connection made a handshake half again nginx's (docs/performance.md). The
 * handshake's callbacks are the ones lib/_tls_wrap.js installs: the certificate by SNI (with
 * ACME's challenge certificates and on-demand issuance), the protocol by ALPN, no renegotiation.
 * Where the binding is missing, server.ts serves HTTPS with tls.Server instead.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { errField, type Logger } from '../log';
import { nativeSecureContext, tlsWrap, type TlsWrapHandle } from '../node-internals';
import type { AcmeResponder } from './acme-responder';
import type { CertificateStore } from './certificate-store';
import { EndHow, type TlsSession } from './client-transport';
import { TcpTransport, type StreamHandle, type TcpHandle } from './tcp-transport';

/** Whether HTTPS connections can be driven on bare handles here. */
export const tlsHandlesAvailable = tlsWrap !== null;

/** ALPN's wire forms: HTTP/1.1 only, or h2 first. */
const HTTP11 = Buffer.from([8, ...Buffer.from('http/1.1', 'latin1')]);
const H2_HTTP11 = Buffer.from([2, ...Buffer.from('h2', 'latin1'), 8, ...Buffer.from('http/1.1', 'latin1')]);

export class TlsTransport extends TcpTransport {
  private session: TlsSession | null = null;
  /** Told the protocol ALPN chose, once the handshake is done (server.ts: h2 goes to HTTP/2). */
  onHandshake: ((protocol: string | false) => void) | null = null;
  protected override readonly shutdownAfterWrites = true;

  constructor(
    private readonly wrap: TlsWrapHandle,
    socket: TcpHandle,
  ) {
    super(wrap as unknown as StreamHandle, socket);
  }

  /** From tls_wrap, within the read that completed the handshake (before any cleartext). */
  handshakeDone(): void {
    const on = this.onHandshake;
    this.onHandshake = null;
    on?.(this.wrap.getALPNNegotiatedProtocol());
  }

  override get tlsSession(): TlsSession {
    this.session ??= { version: this.wrap.getProtocol() ?? 'unknown', resumed: this.wrap.isSessionReused() };
    return this.session;
  }

  /**
   * A TLS connection ends with close_notify: without it a client cannot tell a response read to
   * the end of the connection from a cut one, and OpenSSL marks the session not resumable. So
   * the plain close of a finished exchange (EndHow.Close) shuts down first here.
   */
  override end(how: EndHow): boolean {
    return super.end(how === EndHow.Close ? EndHow.FinThenClose : how);
  }

  protected override closeHandle(): void {
    const wrap = this.wrap;
    // What a TLSSocket does on close: the TCP handle first, then OpenSSL's state.
    this.socket.close(() => wrap.destroySSL());
  }

  protected override resetHandle(): void {
    const wrap = this.wrap;
    if (this.socket.reset?.(() => wrap.destroySSL()) !== 0) this.socket.close(() => wrap.destroySSL());
  }

  protected override socketOf(): net.Socket {
    // lib/_tls_wrap.js gives TLSWrap a close() that closes the TCP handle under it (_parent).
    return new net.Socket({
      handle: this.wrap,
      allowHalfOpen: true,
      readable: true,
      writable: true,
    } as net.SocketConstructorOpts);
  }
}

export interface TlsHandshakeOptions {
  store: CertificateStore;
  acme: AcmeResponder | null;
  /** Names a handshake may wait for a certificate for (ACME: configured, or any on demand). */
  waitsFor: ((name: string) => boolean) | null;
  ticketKeys: Buffer | null;
  logger: Logger;
  /** Offer h2 by ALPN (server.http2). */
  http2: boolean;
}

/** One HTTPS listener's handshakes: its default context and the callbacks every connection gets. */
export class TlsHandshakes {
  private context!: object;
  private ticketKeys: Buffer | null;

  constructor(private readonly options: TlsHandshakeOptions) {
    this.ticketKeys = options.ticketKeys;
    this.reloadDefault();
  }

  /** The certificate of clients without SNI (none under strictSni), read from the store again. */
  reloadDefault(): void {
    const context = tls.createSecureContext(this.options.store.defaultOptions);
    const native = nativeSecureContext(context);
    if (native === null) throw new Error('tls.createSecureContext gave no native context');
    // Tickets are sealed with the keys of the context a handshake starts on, whatever SNI picks.
    if (this.ticketKeys !== null) (native as { setTicketKeys(keys: Buffer): void }).setTicketKeys(this.ticketKeys);
    this.context = native;
  }

  setTicketKeys(keys: Buffer): void {
    this.ticketKeys = keys;
    (this.context as { setTicketKeys(keys: Buffer): void }).setTicketKeys(keys);
  }

  /** TLS over an accepted TCP handle: the handshake starts with the client's first bytes. */
  wrapHandle(handle: TcpHandle): TlsTransport {
    const wrap = tlsWrap!.wrap(handle, this.context, true, false);
    // As lib/_tls_wrap.js does: the methods it forwards to the TCP handle (close, setNoDelay,
    // getpeername) find it here, for node:http2 and tunnels that take the handle as a net.Socket.
    wrap._parent = handle;
    const transport = new TlsTransport(wrap, handle);
    const { acme, logger, http2 } = this.options;
    let handshakes = 0;
    wrap.onhandshakestart = () => {
      // Client-initiated renegotiation is refused (nginx and HAProxy do too): it buys a client
      // another full handshake's worth of our CPU for nothing.
      if (++handshakes > 1) transport.fail();
    };
    wrap.onhandshakedone = () => transport.handshakeDone();
    wrap.onclienthello = noop;
    wrap.onnewsession = noop;
    wrap.onkeylog = noop;
    wrap.onerror = (err) => {
      logger.debug({ err: errField(err) }, 'TLS handshake failed');
      transport.fail();
    };
    wrap.oncertcb = (info) => this.certificate(wrap, transport, info.servername);
    wrap.enableCertCb();
    if (acme !== null && typeof wrap.enableALPNCb === 'function') {
      wrap.ALPNCallback = (wire) =>
        selectAlpn(wire, (protocols) => acme.selectProtocol(wrap, servername(wrap), protocols, http2));
      wrap.enableALPNCb();
    } else {
      wrap.setALPNProtocols(http2 ? H2_HTTP11 : HTTP11);
    }
    return transport;
  }

  /** oncertcb: the context for the client's SNI name, then the handshake goes on. */
  private certificate(wrap: TlsWrapHandle, transport: TlsTransport, name: string | undefined): void {
    const { store, acme, waitsFor } = this.options;
    // No SNI name: the default context serves (or, without a certificate, the handshake fails).
    if (name === undefined || name === '') {
      wrap.certCbDone();
      return;
    }
    if (acme === null || waitsFor === null) {
      this.use(wrap, transport, store.select(name));
      return;
    }
    acme.choose(wrap, name, store, waitsFor, (context) => {
      if (!transport.isClosed) this.use(wrap, transport, context);
    });
  }

  private use(wrap: TlsWrapHandle, transport: TlsTransport, context: tls.SecureContext | null): void {
    // No certificate for the name under strictSni: the handshake is refused.
    if (context === null) {
      transport.fail();
      return;
    }
    const native = nativeSecureContext(context);
    if (native !== null) wrap.sni_context = native;
    wrap.certCbDone();
  }
}

function noop(): void {}

function servername(wrap: TlsWrapHandle): string | undefined {
  const name = wrap.getServername();
  return typeof name === 'string' ? name : undefined;
}

/** ALPN's wire list → the protocols; the chosen one's offset in the list, or undefined (refused). */
function selectAlpn(wire: Buffer, choose: (protocols: string[]) => string | undefined): number | undefined {
  const protocols: string[] = [];
  const offsets: number[] = [];
  for (let i = 0; i < wire.length; i += 1 + wire[i]) {
    offsets.push(i);
    protocols.push(wire.toString('latin1', i + 1, i + 1 + wire[i]));
  }
  const chosen = choose(protocols);
  if (chosen === undefined) return undefined;
  const index = protocols.indexOf(chosen);
  return index === -1 ? undefined : offsets[index];
}
