/**
 * TLS client connections (or any net.Socket) as a ClientTransport.
 */
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { EndHow, type ClientTransport, type TlsSession, type TransportSink } from './client-transport';

export class SocketTransport implements ClientTransport {
  private session: TlsSession | null | undefined = undefined;

  constructor(private readonly socket: net.Socket) {}

  /** Asked of the handshake once per connection, when a request is logged. */
  get tlsSession(): TlsSession | null {
    if (this.session === undefined) {
      const s = this.socket;
      this.session =
        s instanceof tls.TLSSocket ? { version: s.getProtocol() ?? 'unknown', resumed: s.isSessionReused() } : null;
    }
    return this.session;
  }

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

  reset(): void {
    // Only a TCP handle can reset; a TLSSocket's handle is its TLS wrap, so it closes plainly.
    try {
      this.socket.resetAndDestroy();
    } catch {
      this.socket.destroy();
    }
  }

  detach(): net.Socket {
    const s = this.socket;
    for (const event of ['data', 'end', 'drain', 'error', 'close']) s.removeAllListeners(event);
    return s;
  }
}
