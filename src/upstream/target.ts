/**
 * Where an upstream is and how to reach it (address, Host value, TLS options), from its config.
 * Kept apart from the pool so that the primary (health checks) can use it without loading the
 * connection code.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type * as tls from 'node:tls';
import type { UpstreamConfig } from '../config/schema';

export interface UpstreamTarget {
  readonly protocol: 'http:' | 'https:';
  readonly host: string;
  readonly port: number;
  /** The value for the Host header: host[:port], port omitted when it is the scheme's default. */
  readonly authority: string;
  /** For display and logs. */
  readonly origin: string;
  readonly tls: tls.ConnectionOptions | null;
  /** Speaks HTTP/2: an h2c:// origin, or https:// with `http2` (ALPN h2). */
  readonly http2: boolean;
}

export function targetFromConfig(u: UpstreamConfig): UpstreamTarget {
  const url = new URL(u.url);
  const https = url.protocol === 'https:';
  const http2 = url.protocol === 'h2c:' || (https && u.http2);
  const port = url.port === '' ? (https ? 443 : 80) : Number(url.port);
  // URL keeps brackets around IPv6 literals; sockets and SNI want the bare address.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  let tlsOptions: tls.ConnectionOptions | null = null;
  if (https) {
    const servername = u.servername ?? host;
    tlsOptions = {
      rejectUnauthorized: !u.insecure,
      // SNI must not carry an IP address (RFC 6066 §3). Node checks the certificate against
      // servername when given, else against the host, so an IP upstream is checked by IP SAN.
      ...(isIP(servername) === 0 ? { servername } : {}),
      ...(u.ca !== undefined ? { ca: readFileSync(u.ca) } : {}),
      ALPNProtocols: [http2 ? 'h2' : 'http/1.1'],
    };
  }
  return {
    protocol: https ? 'https:' : 'http:',
    host,
    port,
    authority: url.host,
    // A URL of a scheme it does not know (h2c) has the origin "null".
    origin: `${url.protocol}//${url.host}`,
    tls: tlsOptions,
    http2,
  };
}
