/**
 * A worker's side of ACME (the orders are the primary's, primary/acme-manager.ts): the
 * certificates it was given, served by SNI on every HTTPS listener; the answers to HTTP-01
 * challenges (`/.well-known/acme-challenge/TOKEN`); the TLS-ALPN-01 challenge certificates,
 * served only to a client that offers the `acme-tls/1` protocol (the CA's validator), never to a
 * browser; and on-demand requests for a name no certificate serves.
 */
import * as tls from 'node:tls';
import type { AcmeUpdate } from '../ipc';
import type { CertificateStore } from './certificate-store';

/** RFC 8737: the ALPN protocol of a TLS-ALPN-01 validation. */
const ACME_TLS = 'acme-tls/1';

export class AcmeResponder {
  /** Certificates by name (lower case), shared by every HTTPS listener's CertificateStore. */
  readonly certificates = new Map<string, tls.SecureContext>();
  private readonly http01 = new Map<string, string>();
  private readonly alpnChallenges = new Map<string, tls.SecureContext>();
  /** Handshakes whose client offered acme-tls/1 for a name with a challenge pending. */
  private readonly validations = new WeakSet<object>();
  private readonly wanted = new Map<string, Array<(error: string | null) => void>>();

  /**
   * `request` asks the primary for a certificate for a name (swy:acme-wanted); null when the
   * server runs without one (in-process), and then there is no on-demand issuance.
   */
  constructor(private readonly request: ((name: string) => void) | null) {}

  apply(update: AcmeUpdate): void {
    switch (update.kind) {
      case 'certificate':
        this.certificates.set(
          update.name.toLowerCase(),
          tls.createSecureContext({ cert: update.cert, key: update.key }),
        );
        break;
      case 'http-01':
        if (update.keyAuthorization === null) this.http01.delete(update.token);
        else this.http01.set(update.token, update.keyAuthorization);
        break;
      case 'tls-alpn-01':
        if (update.cert === null || update.key === null) this.alpnChallenges.delete(update.name.toLowerCase());
        else
          this.alpnChallenges.set(
            update.name.toLowerCase(),
            tls.createSecureContext({ cert: update.cert, key: update.key }),
          );
        break;
    }
  }

  /** The key authorization for an HTTP-01 token, when a challenge for it is pending. */
  keyAuthorization(token: string): string | undefined {
    return this.http01.get(token);
  }

  /** The ALPN callback: acme-tls/1 to a validator, else h2 (when offered), else HTTP/1.1, else refused. */
  selectProtocol(
    socket: object,
    servername: string | undefined,
    protocols: string[],
    http2: boolean,
  ): string | undefined {
    if (servername !== undefined && protocols.includes(ACME_TLS) && this.alpnChallenges.has(servername.toLowerCase())) {
      this.validations.add(socket);
      return ACME_TLS;
    }
    if (http2 && protocols.includes('h2')) return 'h2';
    return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
  }

  /** OpenSSL asks for ALPN before the certificate: a validator's handshake gets the challenge's. */
  challengeContext(socket: object, servername: string): tls.SecureContext | undefined {
    return this.validations.has(socket) ? this.alpnChallenges.get(servername.toLowerCase()) : undefined;
  }

  /**
   * The context a handshake for `name` gets (`socket` as the ALPN callback saw it): a TLS-ALPN-01
   * validator's challenge certificate, else the store's, else, for a name that may wait (a
   * configured one, or any on demand), the one obtained for it. `done` gets null for none.
   */
  choose(
    socket: object,
    name: string,
    store: CertificateStore,
    waitsFor: (name: string) => boolean,
    done: (context: tls.SecureContext | null) => void,
  ): void {
    const challenge = this.challengeContext(socket, name);
    if (challenge !== undefined) done(challenge);
    else if (store.lookup(name) !== null || !waitsFor(name)) done(store.select(name));
    else void this.obtain(name).then(() => done(store.select(name)));
  }

  /** Ask the primary for a certificate for `name`; resolves with null once this worker has it, or why not. */
  obtain(name: string): Promise<string | null> {
    if (this.request === null) return Promise.resolve('no certificate on demand here');
    const key = name.toLowerCase();
    return new Promise((resolve) => {
      const waiting = this.wanted.get(key);
      if (waiting !== undefined) {
        waiting.push(resolve);
        return;
      }
      this.wanted.set(key, [resolve]);
      this.request!(key);
    });
  }

  /** The primary's answer to `obtain` (swy:acme-answer). */
  answered(name: string, error: string | null): void {
    const waiting = this.wanted.get(name);
    this.wanted.delete(name);
    for (const resolve of waiting ?? []) resolve(error);
  }
}
