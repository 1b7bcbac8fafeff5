/**
 * The one schema for switchyard's configuration: it validates, supplies every default, and is
 * emitted as config.schema.json for editors (`npm run build`). The README's configuration
 * reference lists the same keys; a test fails when the two drift apart.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** Milliseconds, as an integer: config files stay diffable and unambiguous. */
const ms = (what: string) =>
  z.number().int().min(1).max(2_147_483_647).describe(`${what}, in milliseconds`);

/** `HOST:PORT`, `[IPv6]:PORT`; port 0 asks the OS for a free one (tests use it). */
export function parseHostPort(value: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2]!;
  if (m[1] !== undefined && isIP(host) !== 6) return null;
  return { host, port };
}

const hostPort = z.string().refine((v) => parseHostPort(v) !== null, {
  message: 'expected HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000, with a port from 0 to 65535',
});

/** An upstream is an origin only: a path in the URL would silently be ignored, so it is refused. */
export function parseUpstreamUrl(value: string): URL | null {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return null;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  if (u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) return null;
  return u;
}

const upstreamUrl = z.string().refine((v) => parseUpstreamUrl(v) !== null, {
  message: 'expected an http:// or https:// origin URL such as http://127.0.0.1:3000 (no path, query or credentials)',
});

function isCidr(v: string): boolean {
  const [addr, bits, extra] = v.split('/');
  if (extra !== undefined || addr === undefined) return false;
  const family = isIP(addr);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

const cidr = z.string().refine(isCidr, {
  message: 'expected an IP address or CIDR range, e.g. 10.0.0.0/8, 127.0.0.1 or fd00::/8',
});

export const UpstreamSchema = z.strictObject({
  url: upstreamUrl.describe('Origin of the upstream server: http://host:port or https://host:port.'),
  insecure: z.boolean().default(false)
    .describe('https:// only: accept any certificate. Never use it across an untrusted network. Default false.'),
  ca: z.string().min(1).optional()
    .describe('https:// only: PEM file of the CA(s) to verify the upstream against, instead of the system CAs.'),
  servername: z.string().min(1).optional()
    .describe('https:// only: the TLS SNI name and the name checked in the certificate. Default: the URL\'s host.'),
});

export const ConfigSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:8000')
    .describe('Address the proxy listens on, HOST:PORT. Default 127.0.0.1:8000.'),
  workers: z.union([z.literal('auto'), z.number().int().min(1).max(1024)]).default('auto')
    .describe('Worker processes: a number, or "auto" for one per CPU (os.availableParallelism()). Default "auto".'),
  schedulingPolicy: z.enum(['none', 'round-robin']).default('none')
    .describe('How new connections reach workers: "none" (workers accept from the shared socket) or "round-robin" (the primary accepts and hands each over). Default "none".'),
  tls: z.strictObject({
    cert: z.string().min(1).describe('PEM certificate chain file for the HTTPS listener.'),
    key: z.string().min(1).describe('PEM private key file for the HTTPS listener.'),
  }).optional().describe('Serve HTTPS on the listener. Default: plain HTTP.'),
  upstreams: z.array(UpstreamSchema).min(1).optional()
    .describe('Servers requests are forwarded to, taken in turn. Default: the built-in demo origin.'),
  preserveHost: z.boolean().default(false)
    .describe('Forward the client\'s Host header instead of the upstream\'s host. Default false.'),
  trustedProxies: z.array(cidr).default([])
    .describe('Clients whose X-Forwarded-For/-Proto/-Host are kept and appended to; everyone else\'s are replaced. Default [].'),
  timeouts: z.strictObject({
    connect: ms('Upstream TCP + TLS connect timeout').default(5_000),
    responseHeader: ms('Time the upstream may take to start its response head').default(60_000),
    idle: ms('Upstream connection silent mid-exchange before it is aborted').default(60_000),
    drain: ms('Graceful stop: time in-flight requests get before connections are closed').default(30_000),
  }).prefault({}),
  pool: z.strictObject({
    maxConnections: z.number().int().min(1).max(65_536).default(256)
      .describe('Connections per upstream per worker; requests past it wait in a queue. Default 256.'),
    queueTimeout: ms('Time a request may wait for a free upstream connection before a 503').default(30_000),
    keepAliveTimeout: ms('Idle pooled upstream connections are closed after this (keep it below the upstream\'s own keep-alive timeout)').default(4_000),
  }).prefault({}),
  server: z.strictObject({
    keepAliveTimeout: ms('Idle client keep-alive connections are closed after this').default(5_000),
    headersTimeout: ms('Time a client may take to send its request head (408 after)').default(30_000),
    requestTimeout: ms('Time a client may take to send a whole request (408 after); uploads need room').default(300_000),
    maxHeaderSize: z.number().int().min(1024).max(1_048_576).default(16_384)
      .describe('Largest client request head, in bytes (431 past it). Default 16384.'),
    maxConnections: z.number().int().min(1).max(1_000_000).default(10_000)
      .describe('Client connections one worker holds at once; past it, new connections are closed at accept. Default 10000.'),
    maxBodySize: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0)
      .describe('Largest request body in bytes, declared or chunked (413 past it); 0 for no limit. Default 0.'),
  }).prefault({}),
  admin: z.strictObject({
    listen: hostPort.optional()
      .describe('Address of the admin listener (/metrics, /healthz, /readyz), HOST:PORT. Keep it on loopback or a private network. Default: none (off).'),
  }).prefault({}),
  accessLog: z.strictObject({
    enabled: z.boolean().default(true).describe('Write one line per request. Default true.'),
    format: z.enum(['json', 'common', 'combined']).default('json')
      .describe('json (pino), or the NCSA common / combined formats. Default json.'),
    file: z.string().min(1).optional()
      .describe('Append to this file instead of stdout; SIGUSR1 reopens it (logrotate). Default: stdout.'),
  }).prefault({}),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
      .describe('Minimum level of the JSON log on stdout. Default info.'),
  }).prefault({}),
});

export type Config = z.infer<typeof ConfigSchema>;
export type UpstreamConfig = z.infer<typeof UpstreamSchema>;

/** JSON Schema for editors (YAML language servers read it via `# yaml-language-server: $schema=`). */
export function configJsonSchema(): object {
  return {
    ...z.toJSONSchema(ConfigSchema, { io: 'input' }),
    title: 'switchyard configuration',
  };
}
