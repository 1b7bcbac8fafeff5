/**
 * The certificates of one HTTPS listener, chosen per handshake by the client's SNI name: an exact
 * subject alternative name first, then one obtained by ACME for that name (acme-responder.ts),
 * then a wildcard one label up (`*.example.com` serves `a.example.com`, not `example.com` nor
 * `a.b.example.com`), then the default certificate, or a refused handshake under strictSni. `replace()` swaps every certificate at once (a hot reload):
 * handshakes from then on get the new ones; connections already open keep theirs.
 */
import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import { certificateNames, type ResolvedTls } from '../config/listeners';

/** One certificate and its key, as PEM text, with the file it came from (for the default). */
export interface CertificatePem {
  readonly certPath: string;
  readonly cert: string;
  readonly key: string;
}

export interface CertificateSet {
  readonly pems: readonly CertificatePem[];
  readonly defaultCertificate: string;
  readonly strictSni: boolean;
}

export class CertificateStore {
  private exact = new Map<string, tls.SecureContext>();
  private wildcard = new Map<string, tls.SecureContext>();
  private fallback: tls.SecureContext | null = null;
  private defaultPem: CertificatePem | null = null;

  /** `managed`: the ACME certificates by name, shared by every listener of the worker. */
  constructor(
    set: CertificateSet,
    private readonly managed: ReadonlyMap<string, tls.SecureContext> | null = null,
  ) {
    this.replace(set);
  }

  /** Every certificate at once; throws (changing nothing) when one does not load. */
  replace(set: CertificateSet): void {
    const exact = new Map<string, tls.SecureContext>();
    const wildcard = new Map<string, tls.SecureContext>();
    let fallback: tls.SecureContext | null = null;
    let defaultPem: CertificatePem | null = null;
    for (const pem of set.pems) {
      const context = tls.createSecureContext({ cert: pem.cert, key: pem.key });
      for (const name of certificateNames(pem.cert)) {
        // The first certificate listed for a name wins, as in the order given.
        const map = name.startsWith('*.') ? wildcard : exact;
        const key = name.startsWith('*.') ? name.slice(2) : name;
        if (!map.has(key)) map.set(key, context);
      }
      if (pem.certPath === set.defaultCertificate) {
        fallback = context;
        defaultPem = pem;
      }
    }
    this.exact = exact;
    this.wildcard = wildcard;
    this.fallback = set.strictSni ? null : fallback;
    this.defaultPem = set.strictSni ? null : defaultPem;
  }

  /** For the server's own options: the certificate of clients without SNI (none under strictSni). */
  get defaultOptions(): { cert?: string; key?: string } {
    return this.defaultPem === null ? {} : { cert: this.defaultPem.cert, key: this.defaultPem.key };
  }

  select(servername: string): tls.SecureContext | null {
    return this.lookup(servername) ?? this.fallback;
  }

  /** The certificate that carries `servername`, without the default. */
  lookup(servername: string): tls.SecureContext | null {
    const name = servername.toLowerCase().replace(/\.$/, '');
    const exact = this.exact.get(name) ?? this.managed?.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wild = this.wildcard.get(name.slice(dot + 1));
      if (wild !== undefined) return wild;
    }
    return null;
  }

  /** tls.createServer's SNICallback. */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    const context = this.select(servername);
    if (context === null) cb(new Error(`no certificate for ${JSON.stringify(servername)}`));
    else cb(null, context);
  };
}

/** A listener's certificate and key files, read now. */
export function readCertificateSet(t: ResolvedTls): CertificateSet {
  return {
    pems: t.certificates.map((c) => ({
      certPath: c.cert,
      cert: readFileSync(c.cert, 'latin1'),
      key: readFileSync(c.key, 'latin1'),
    })),
    defaultCertificate: t.defaultCertificate,
    strictSni: t.strictSni,
  };
}
