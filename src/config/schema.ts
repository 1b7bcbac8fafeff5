/**
 * The one schema for switchyard's configuration: it validates, supplies every default, and is
 * emitted as config.schema.json for editors (`npm run build`). So is the reference,
 * docs/configuration.md (reference.ts); a test fails when either drifts from it.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** Connections to one upstream member, per worker. */
const connectionLimit = () => z.number().int().min(1).max(65_536);

/** Milliseconds, as an integer: config files stay diffable and unambiguous. */
const ms = (what: string) => z.number().int().min(1).max(2_147_483_647).describe(`${what}, in milliseconds`);

/** The other way: `HOST:PORT`, with an IPv6 address in brackets. */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** `HOST:PORT`, `[IPv6]:PORT`; port 0 asks the OS for a free one (tests use it). */
export function parseHostPort(value: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2];
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
  if (u.protocol !== 'http:' && u.protocol !== 'https:' && u.protocol !== 'h2c:') return null;
  if (u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) return null;
  return u;
}

const upstreamUrl = z.string().refine((v) => parseUpstreamUrl(v) !== null, {
  message:
    'expected an http://, https:// or h2c:// origin URL such as http://127.0.0.1:3000 (no path, query or credentials)',
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
  url: upstreamUrl.describe(
    'Origin of the upstream server: http://host:port, https://host:port, or h2c://host:port for HTTP/2 in cleartext (prior knowledge).',
  ),
  http2: z
    .boolean()
    .default(false)
    .describe(
      'https:// only: speak HTTP/2 to this upstream (ALPN h2), many requests multiplexed over few connections. h2c:// origins always speak HTTP/2.',
    ),
  insecure: z
    .boolean()
    .default(false)
    .describe('https:// only: accept any certificate. Never use it across an untrusted network.'),
  ca: z
    .string()
    .min(1)
    .optional()
    .describe('https:// only: PEM file of the CA(s) to verify the upstream against, instead of the system CAs.'),
  servername: z
    .string()
    .min(1)
    .optional()
    .describe("https:// only: the TLS SNI name and the name checked in the certificate. Default: the URL's host."),
});

/** Members and pools default to the top-level `pool` settings; these override them per pool. */
export const MemberSchema = UpstreamSchema.extend({
  weight: z
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(1)
    .describe('Share of traffic under weighted-round-robin, and weight under hash.'),
  maxConnections: connectionLimit()
    .optional()
    .describe("Connections to this member per worker. Default: the pool's maxConnections."),
});

const HASH_KEY = /^(?:ip|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|cookie:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$/;

export const POLICIES = ['round-robin', 'weighted-round-robin', 'least-connections', 'random-two', 'hash'] as const;

export const HealthCheckSchema = z.strictObject({
  path: z.string().startsWith('/').default('/').describe('Path requested (GET) on each member.'),
  interval: ms('Time between checks of one member').default(5_000),
  timeout: ms('A check without a complete response in this time fails').default(2_000),
  expectStatus: z
    .union([z.number().int().min(100).max(599), z.enum(['2xx', '2xx-3xx'])])
    .default('2xx')
    .describe('Status a healthy member answers: a number, "2xx" or "2xx-3xx".'),
  rise: z.number().int().min(1).max(100).default(2).describe('Consecutive passes that bring a down member back.'),
  fall: z.number().int().min(1).max(100).default(3).describe('Consecutive failures that take a member down.'),
});

export const PassiveHealthSchema = z.strictObject({
  failures: z
    .number()
    .int()
    .min(0)
    .max(10_000)
    .default(5)
    .describe('Failures within `window` that eject a member; 0 turns passive checks off.'),
  window: ms('Period over which failures are counted').default(10_000),
  cooldown: ms('How long an ejected member gets no traffic before it is tried again').default(30_000),
  on5xx: z.boolean().default(false).describe('Count 5xx responses from the member as failures too.'),
});

export const RetrySchema = z.strictObject({
  attempts: z
    .number()
    .int()
    .min(1)
    .max(20)
    .default(3)
    .describe('Tries per request, the first included, each on a member not tried yet. 1 turns retries off.'),
  timeout: ms('No new try starts once this much time has passed since the request arrived').default(10_000),
  idempotent: z
    .boolean()
    .default(false)
    .describe(
      'Also retry GET, HEAD, OPTIONS, PUT and DELETE that failed after reaching the member (reset, timeout before the response head), if no body was streamed.',
    ),
});

export const DnsSchema = z.strictObject({
  name: z.string().min(1).describe('DNS name whose records are the members.'),
  type: z
    .enum(['A', 'AAAA', 'SRV'])
    .default('A')
    .describe('A or AAAA: one member per address, at `port`; SRV: one per record, at its target and port.'),
  port: z
    .number()
    .int()
    .min(1)
    .max(65_535)
    .optional()
    .describe("A/AAAA only: the members' port. Default 80, or 443 with scheme https."),
  scheme: z
    .enum(['http', 'https', 'h2c'])
    .default('http')
    .describe('Members are http://, https:// or h2c:// (HTTP/2 in cleartext).'),
  http2: z.boolean().default(false).describe('scheme https only: speak HTTP/2 to the members (ALPN h2).'),
  interval: ms("Re-resolve this often; default: the records' TTL (A/AAAA, 1 s to 1 h) or 30 s (SRV)").optional(),
  servers: z
    .array(hostPort)
    .min(1)
    .optional()
    .describe("DNS servers to ask, HOST:PORT. Default: the system's resolvers."),
  insecure: z.boolean().default(false).describe('https only: accept any certificate.'),
  ca: z.string().min(1).optional().describe('https only: PEM CA file to verify members against.'),
  servername: z
    .string()
    .min(1)
    .optional()
    .describe('https only: TLS SNI name and certificate name. Default: the DNS name.'),
});

export const PoolSchema = z
  .strictObject({
    members: z
      .array(MemberSchema)
      .min(1)
      .optional()
      .describe('Static members. A pool has `members` or `dns`, not both.'),
    dns: DnsSchema.optional().describe('Take the members from DNS, re-resolved while running.'),
    policy: z
      .enum(POLICIES)
      .default('round-robin')
      .describe('How a member is chosen: round-robin, weighted-round-robin, least-connections, random-two or hash.'),
    hashKey: z
      .string()
      .regex(HASH_KEY, 'expected "ip", "header:NAME" or "cookie:NAME"')
      .default('ip')
      .describe('policy hash only: what is hashed: "ip", "header:NAME" or "cookie:NAME".'),
    maxConnections: connectionLimit()
      .optional()
      .describe('Connections per member per worker. Default: pool.maxConnections.'),
    queueTimeout: ms(
      "Time a request may wait for a member's free connection (then 503 with Retry-After). Default: pool.queueTimeout",
    ).optional(),
    maxQueue: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .optional()
      .describe(
        "Requests that may wait for one member's connection per worker; past it, 503 at once. Default: pool.maxQueue.",
      ),
    healthCheck: HealthCheckSchema.optional().describe('Active health checks. Default: none.'),
    passive: PassiveHealthSchema.prefault({}).describe(
      'Passive health checks: ejection by the failures the workers see.',
    ),
    retries: RetrySchema.prefault({}).describe('Retries on another member (docs/routing.md).'),
  })
  .refine((p) => (p.members === undefined) !== (p.dns === undefined), {
    message: 'expected either `members` or `dns` (exactly one)',
  });

const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected a header field name');
const headerValue = z.string().regex(/^[^\r\n\0]*$/, 'expected a header value without CR, LF or NUL');

/** Framing and per-connection fields belong to the proxy: editing them could desynchronise a hop. */
export const PROTECTED_HEADERS = [
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
];
const editableName = headerName.refine((n) => !PROTECTED_HEADERS.includes(n.toLowerCase()), {
  message: `expected a field name other than ${PROTECTED_HEADERS.join(', ')} (framing is the proxy's)`,
});

export const HeaderOpsSchema = z.strictObject({
  set: z.record(editableName, headerValue).optional().describe('Replace these fields (added when absent).'),
  add: z.record(editableName, headerValue).optional().describe('Append these fields, keeping existing ones.'),
  remove: z.array(editableName).optional().describe('Remove these fields.'),
});

const hostPattern = z
  .string()
  .regex(
    /^(?:\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$|^\[[0-9A-Fa-f:.]+\]$/,
    'expected a host name, "*.example.com" (one label) or an [IPv6] literal, without a port',
  );
const oneOrMany = <T extends z.ZodType>(t: T) => z.union([t, z.array(t).min(1)]);

/** Bodies `replace` and user modules work on, and `compress` compresses, unless configured. */
export const TEXT_TYPES = [
  'text/html',
  'text/css',
  'text/plain',
  'text/xml',
  'text/javascript',
  'application/javascript',
  'application/json',
  'application/xml',
  'application/xhtml+xml',
  'image/svg+xml',
];
export const COMPRESSIBLE_TYPES = [
  ...TEXT_TYPES,
  'text/csv',
  'text/markdown',
  'application/ld+json',
  'application/manifest+json',
  'application/rss+xml',
  'application/atom+xml',
  'application/wasm',
  'font/ttf',
  'font/otf',
];

const mediaType = z
  .string()
  .regex(/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/, 'expected a lower-case media type such as text/html');

function compiles(pattern: string, flags: string): boolean {
  try {
    new RegExp(pattern, flags);
    return true;
  } catch {
    return false;
  }
}

export const ReplaceRuleSchema = z
  .strictObject({
    from: z.string().min(1).optional().describe('Literal text to replace, every occurrence.'),
    regex: z
      .string()
      .min(1)
      .optional()
      .describe('A JavaScript regular expression instead of `from`; every match is replaced.'),
    flags: z
      .string()
      .regex(/^[imsu]*$/, 'expected regex flags from i, m, s, u')
      .default('')
      .describe('regex only: flags (i, m, s, u; g is implied).'),
    to: z.string().describe('Replacement; with `regex`, $1… refer to groups.'),
  })
  .refine((r) => (r.from === undefined) !== (r.regex === undefined), {
    message: 'expected either `from` or `regex` (exactly one)',
  })
  .refine((r) => r.regex === undefined || compiles(r.regex, r.flags), {
    message: 'expected a valid regular expression',
  });

export const TransformSchema = z
  .strictObject({
    replace: z.array(ReplaceRuleSchema).min(1).optional().describe('Replacements applied in order to text bodies.'),
    module: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A JavaScript file exporting `(body, context) => body | Promise<body>`, run in the transform thread pool after `replace`.',
      ),
    types: z.array(mediaType).min(1).default(TEXT_TYPES).describe('Media types transformed.'),
    maxBodySize: z
      .number()
      .int()
      .min(1)
      .max(512 * 1024 * 1024)
      .default(8 * 1024 * 1024)
      .describe(
        'Largest body buffered for a transform, in bytes; larger ones pass through untransformed (logged and counted).',
      ),
    timeout: ms('Time one transform may take; past it, 502').default(5_000),
  })
  .refine((t) => t.replace !== undefined || t.module !== undefined, {
    message: 'expected `replace`, `module` or both',
  });

export const CompressSchema = z.strictObject({
  encodings: z
    .array(z.enum(['br', 'gzip']))
    .min(1)
    .default(['br', 'gzip'])
    .describe('Encodings offered, preferred first when the client rates them equally.'),
  minSize: z
    .number()
    .int()
    .min(0)
    .default(1024)
    .describe('Smaller responses (by Content-Length) are sent as they are.'),
  types: z.array(mediaType).min(1).default(COMPRESSIBLE_TYPES).describe('Media types compressed.'),
  gzipLevel: z.number().int().min(1).max(9).default(6).describe('gzip level, 1 (fast) to 9 (small).'),
  brotliQuality: z
    .number()
    .int()
    .min(0)
    .max(11)
    .default(4)
    .describe('Brotli quality, 0 (fast) to 11 (small; far too slow for on-the-fly use).'),
});

/** Strict-Transport-Security (RFC 6797): `true` for the defaults, or its settings. */
export const HstsSchema = z.union([
  z.boolean(),
  z.strictObject({
    maxAge: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .default(31_536_000)
      .describe('How long browsers remember to use HTTPS only, in seconds (max-age).'),
    includeSubDomains: z.boolean().default(false).describe('The rule covers every subdomain too.'),
    preload: z.boolean().default(false).describe("Ask to be put on the browsers' preload list (hstspreload.org)."),
  }),
]);

/** What a route's `match`, and a fault's, may ask of a request besides its host. */
const requestConditions = {
  path: z
    .string()
    .startsWith('/')
    .optional()
    .describe('Path prefix, matched on whole segments: /api matches /api and /api/x, not /apix. Default: any.'),
  method: oneOrMany(z.string().regex(/^[A-Z]+$/, 'expected an upper-case method such as GET'))
    .optional()
    .describe('Methods. Default: any.'),
  header: z
    .record(headerName, z.string())
    .optional()
    .describe('Fields that must be present with exactly this value ("*": present with any value). Default: none.'),
};

/** A fault's or a record's name: it labels metrics and access log marks, and names it in the admin API. */
export const FAULT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const faultName = z.string().regex(FAULT_NAME, 'expected a name of 1 to 64 letters, digits, _ . -');
const percent = (what: string) =>
  z.number().min(0).max(100).default(100).describe(`${what}, in percent (0 to 100; fractions allowed).`);

/** What a fault injects: exactly one kind each. */
export const FAULT_KINDS = ['delay', 'abort', 'bandwidth', 'partial', 'stall'] as const;

/**
 * One injected fault (docs/load-testing.md): the same shape in a route's `faults` and in the admin
 * API's `PUT /faults/NAME`.
 */
export const FaultSchema = z
  .strictObject({
    percent: percent('Share of the matching requests the fault hits'),
    route: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Only requests served by the route with this `name`. A fault under a route's `faults` is that route's. Default: every route.",
      ),
    match: z
      .strictObject(requestConditions)
      .optional()
      .describe('Which requests the fault may hit; every given condition must hold. Default: all.'),
    side: z
      .enum(['request', 'response'])
      .optional()
      .describe(
        'request: before the upstream is called (it never sees the request); response: once the upstream answered, on its answer. Default: request for delay, abort and stall; response for bandwidth and partial, which only apply there.',
      ),
    delay: z
      .union([
        ms('A fixed delay'),
        z
          .strictObject({
            p50: ms('Median delay'),
            p99: ms('99th percentile delay'),
          })
          .refine((d) => d.p99 >= d.p50, { message: 'expected p99 >= p50', path: ['p99'] }),
      ])
      .optional()
      .describe(
        'Hold the request (or the response head) this long: milliseconds, or `{ p50, p99 }` for delays drawn from the log-normal distribution with that median and 99th percentile.',
      ),
    abort: z
      .strictObject({
        status: z.number().int().min(200).max(599).optional().describe('Answer with this status, from the proxy.'),
        reset: z.literal(true).optional().describe('Reset the client connection (TCP RST; RST_STREAM over HTTP/2).'),
      })
      .refine((a) => (a.status === undefined) !== (a.reset === undefined), {
        message: 'expected exactly one of `status` or `reset: true`',
      })
      .optional()
      .describe('Answer with a status of your choice, or reset the connection, instead of the upstream answer.'),
    bandwidth: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Send the response body at most this fast, in bytes per second.'),
    partial: z
      .strictObject({
        bytes: z.number().int().min(0).describe('Body bytes sent before the connection is cut.'),
      })
      .optional()
      .describe('Send the response head and this much of the body, then cut the connection.'),
    stall: z
      .literal(true)
      .optional()
      .describe(
        "Withhold the upstream's answer until the proxy's own timeout: on the request side, no head within `timeouts.responseHeader` (504); on the response side, the head, then no body within `timeouts.idle` (the connection is cut).",
      ),
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 1)
      .optional()
      .describe(
        'Seed of the random source that decides hits and draws delays, for repeatable runs (each worker adds its index). Default: unseeded.',
      ),
  })
  .refine((f) => FAULT_KINDS.filter((k) => f[k] !== undefined).length === 1, {
    message: `expected exactly one of ${FAULT_KINDS.join(', ')}`,
  })
  .refine((f) => f.side !== 'request' || (f.bandwidth === undefined && f.partial === undefined), {
    message: 'expected side: response (bandwidth and partial act on the response body)',
    path: ['side'],
  });

export const MirrorSchema = z.strictObject({
  pool: z.string().min(1).describe('The shadow pool (under `pools`) that gets the copies.'),
  percent: percent("Share of the route's requests copied"),
  maxBodySize: z
    .number()
    .int()
    .min(0)
    .max(64 * 1024 * 1024)
    .default(64 * 1024)
    .describe(
      'Request bodies up to this are copied, in bytes; a request with a larger body is not mirrored (counted).',
    ),
  maxInFlight: z
    .number()
    .int()
    .min(1)
    .max(100_000)
    .default(64)
    .describe(
      'Mirrored requests under way at once, per worker; past it, a copy is dropped and counted, never queued behind the main traffic.',
    ),
  timeout: ms(
    'Time one mirrored exchange may take from start to the end of its answer; past it, it is abandoned',
  ).default(10_000),
  compare: z
    .strictObject({
      headers: z.array(headerName).default([]).describe('Response fields compared besides the status.'),
      body: z.boolean().default(true).describe('Compare a SHA-256 of the response bodies.'),
    })
    .optional()
    .describe(
      "Compare the shadow's answer with the main one; mismatches are counted per route and logged with both request ids and a short diff. Default: no comparison.",
    ),
});

export const RecordSchema = z.strictObject({
  file: z
    .string()
    .min(1)
    .describe(
      'JSON-lines file; each worker writes its own, with its number before the extension (traffic.jsonl → traffic.1.jsonl).',
    ),
  percent: percent("Share of the route's exchanges recorded"),
  maxBodySize: z
    .number()
    .int()
    .min(0)
    .max(16 * 1024 * 1024)
    .default(64 * 1024)
    .describe('Request body bytes kept per exchange (base64); longer bodies are cut and marked.'),
  redact: z
    .array(headerName)
    .default([])
    .describe(
      'Fields whose values are replaced by "[redacted]", besides Authorization, Cookie, Set-Cookie and Proxy-Authorization.',
    ),
  maxFileSize: z
    .number()
    .int()
    .min(4096)
    .default(64 * 1024 * 1024)
    .describe('A file past this size is rotated: renamed with .1 added (older ones move up), and a new one begun.'),
  keep: z.number().int().min(0).max(1000).default(5).describe('Rotated files kept per worker.'),
});

export const RouteSchema = z.strictObject({
  match: z
    .strictObject({
      host: oneOrMany(hostPattern)
        .optional()
        .describe('Host names (case-insensitive, port ignored); "*.example.com" matches one label. Default: any.'),
      ...requestConditions,
    })
    .prefault({})
    .describe('What the route matches; every given condition must hold.'),
  pool: z.string().min(1).describe('Name of the pool (under `pools`) that serves the route.'),
  rewrite: z
    .strictObject({
      stripPrefix: z.string().startsWith('/').optional().describe('Remove this prefix from the path first.'),
      addPrefix: z.string().startsWith('/').optional().describe('Then put this prefix in front.'),
    })
    .optional()
    .describe('Path rewrite before forwarding; replacing a prefix is strip then add. Default: none.'),
  requestHeaders: HeaderOpsSchema.optional().describe(
    "Header changes on the way to the upstream (after the proxy's own).",
  ),
  responseHeaders: HeaderOpsSchema.optional().describe('Header changes on the way to the client.'),
  hsts: HstsSchema.optional().describe(
    "Strict-Transport-Security on this route's responses over HTTPS, instead of the listener's `tls.hsts`: true, settings, or false for none. Default: the listener's.",
  ),
  rewriteLocation: z
    .boolean()
    .default(false)
    .describe(
      "Rewrite Location and Content-Location that point at the member (its origin, and the path rewrite undone) to the client's scheme and host.",
    ),
  transform: z
    .union([z.string().min(1), TransformSchema])
    .optional()
    .describe(
      'Rewrite response bodies in the transform thread pool: a module path, or `replace` rules and/or a `module`. Default: none.',
    ),
  compress: z
    .union([z.boolean(), CompressSchema])
    .optional()
    .describe(
      'Compress responses with gzip or Brotli for clients that accept it: true for the defaults, or settings. Default: off.',
    ),
  name: faultName
    .optional()
    .describe(
      "The route's name: live faults select it by `route`, and mirror and record metrics carry it. Default: its index.",
    ),
  faults: z
    .record(faultName, FaultSchema)
    .optional()
    .describe("Faults injected into this route's traffic, by name (docs/load-testing.md). Default: none."),
  mirror: MirrorSchema.optional().describe(
    'Copy a share of the requests to a shadow pool, whose answers never reach the client. Default: off.',
  ),
  record: RecordSchema.optional().describe(
    'Record a share of the exchanges to a JSON-lines file, for `switchyard replay`. Default: off.',
  ),
});

export const CertificateSchema = z.strictObject({
  cert: z.string().min(1).describe('PEM file: the certificate, then its chain.'),
  key: z.string().min(1).describe("PEM file: the certificate's private key."),
});

/** Certificates, as one pair (`cert`, `key`) or a list; both may be given. */
const tlsFields = {
  cert: z
    .string()
    .min(1)
    .optional()
    .describe('PEM certificate chain file: shorthand for one entry of `certificates`, with `key`.'),
  key: z.string().min(1).optional().describe('PEM private key file of `cert`.'),
  certificates: z
    .array(CertificateSchema)
    .min(1)
    .optional()
    .describe(
      "Certificates to serve, chosen per handshake by the client's SNI name against each certificate's subject alternative names: exact names first, then wildcards.",
    ),
  defaultCertificate: z
    .string()
    .min(1)
    .optional()
    .describe(
      'The `cert` file of the certificate served to clients that send no SNI name or one no certificate carries. Default: the first certificate.',
    ),
  strictSni: z
    .boolean()
    .optional()
    .describe(
      'Refuse the handshake of a client that sends no SNI name or one no certificate carries, instead of serving the default certificate. Default: false.',
    ),
  hsts: HstsSchema.optional().describe(
    "Send Strict-Transport-Security on the responses of these HTTPS listeners: true (max-age one year) or `{ maxAge, includeSubDomains, preload }`. A route's own `hsts` wins. Default: off.",
  ),
};

const certPairsComplete = (t: { cert?: string | undefined; key?: string | undefined }) =>
  (t.cert === undefined) === (t.key === undefined);
const pairMessage = { message: 'expected `cert` and `key` together', path: ['cert'] };

export const TlsSchema = z.strictObject(tlsFields).refine(certPairsComplete, pairMessage);

export const ListenerSchema = z.strictObject({
  address: hostPort.describe('HOST:PORT to listen on.'),
  tls: z
    .strictObject(tlsFields)
    .refine(certPairsComplete, pairMessage)
    .optional()
    .describe(
      'HTTPS on this listener: `{}` serves the certificates of the top-level `tls`; keys given here replace those.',
    ),
  redirect: z
    .literal('https')
    .optional()
    .describe(
      'Answer every request with a 308 to the same host and path over https (ACME HTTP-01 challenge paths excepted).',
    ),
  h2c: z
    .boolean()
    .default(false)
    .describe(
      'Plain listeners only: also take HTTP/2 in cleartext from clients that open with its preface (prior knowledge, RFC 9113 §3.3); HTTP/1.1 clients are served as before.',
    ),
});

/** A DNS name a certificate may be ordered for: no wildcard (that needs DNS-01), no address. */
const ORDERABLE = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/i;

/** A name a public CA can issue for: two labels or more, no wildcard, not an address. */
export function isOrderableName(name: string): boolean {
  return name.length <= 253 && ORDERABLE.test(name);
}

const dnsName = z.string().refine(isOrderableName, {
  message: 'expected a DNS name with at least two labels (example.com), without a wildcard, port or trailing dot',
});

const httpUrl = (what: string) =>
  z
    .string()
    .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), { message: `expected an http(s) URL` })
    .describe(what);

export const AcmeSchema = z.strictObject({
  directory: httpUrl("The ACME server's directory URL.").default('https://acme-v02.api.letsencrypt.org/directory'),
  email: z
    .string()
    .regex(/^[^@\s]+@[^@\s]+$/, 'expected an email address')
    .optional()
    .describe('Contact address for the account: the CA writes here about expiring certificates. Default: none.'),
  storage: z
    .string()
    .min(1)
    .default('/var/lib/switchyard/acme')
    .describe(
      "Directory for the account key and the certificates, kept across restarts (the systemd unit's StateDirectory). Several machines may share it: a lock file per name makes one order at a time.",
    ),
  hosts: z
    .array(dnsName)
    .optional()
    .describe("Names to obtain certificates for. Default: every routes' exact `host` (not wildcards, not addresses)."),
  challenges: z
    .array(z.enum(['http-01', 'tls-alpn-01']))
    .min(1)
    .default(['http-01', 'tls-alpn-01'])
    .describe(
      'Challenge types, in order of preference: http-01 is answered on the plain listeners, tls-alpn-01 on the HTTPS ones.',
    ),
  caRoot: z
    .string()
    .min(1)
    .optional()
    .describe(
      "PEM file of the CA that signs the ACME server's own HTTPS certificate (a private ACME server). Default: the system's roots.",
    ),
  retryDelay: ms('Wait after a failed order before the first retry; each failure doubles it, up to an hour').default(
    60_000,
  ),
  onDemand: z
    .strictObject({
      ask: httpUrl(
        'Asked `GET ASK?domain=NAME` before a certificate is ordered during a handshake; only a 200 answer allows it.',
      ),
      maxPerMinute: z
        .number()
        .int()
        .min(1)
        .max(10_000)
        .default(10)
        .describe('Orders started on demand per minute, at most; handshakes past it get no certificate.'),
    })
    .optional()
    .describe(
      'Obtain a certificate during the handshake for an SNI name that has none, when `ask` allows it. Default: off.',
    ),
});

export const ConfigSchema = z.strictObject({
  listen: z
    .union([hostPort, z.array(z.union([hostPort, ListenerSchema])).min(1)])
    .default('127.0.0.1:8000')
    .describe(
      'Where to listen: HOST:PORT, or a list of them and of listeners with their own `tls` or `redirect`. A single address serves HTTPS when `tls` is set; in a list, each HTTPS listener says so with `tls`.',
    ),
  workers: z
    .union([z.literal('auto'), z.number().int().min(1).max(1024)])
    .default('auto')
    .describe('Worker processes: a number, or "auto" for one per CPU (os.availableParallelism()).'),
  schedulingPolicy: z
    .enum(['none', 'round-robin'])
    .default('none')
    .describe(
      'How new connections reach workers: "none" (workers accept from the shared socket: under half the CPU per new connection, and no connection stranded on a worker that just died) or "round-robin" (the primary accepts and hands each to the next worker: more even when a few long-lived connections carry most of the load). Takes effect on restart, not on reload.',
    ),
  tls: TlsSchema.optional().describe(
    'Certificates for HTTPS: a single `listen` address serves HTTPS with them, and so does each listener with `tls`. Default: plain HTTP.',
  ),
  acme: AcmeSchema.optional().describe(
    "Obtain and renew certificates automatically (ACME, RFC 8555; Let's Encrypt by default) for the HTTPS listeners. Default: off.",
  ),
  upstreams: z
    .array(MemberSchema)
    .min(1)
    .optional()
    .describe(
      'Shorthand for the pool named "default" (round robin). With neither `upstreams` nor `pools`: the built-in demo origin.',
    ),
  pools: z
    .record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'expected a pool name of letters, digits, _ . -'), PoolSchema)
    .optional()
    .describe('Named pools of upstream servers.'),
  routes: z
    .array(RouteSchema)
    .optional()
    .describe(
      'Which pool serves a request; the first route that matches wins, in order. Default: everything to the only pool.',
    ),
  preserveHost: z.boolean().default(false).describe("Forward the client's Host header instead of the upstream's host."),
  faultHeaders: z
    .boolean()
    .default(false)
    .describe(
      "Honour X-Switchyard-Fault-Delay, -Abort and -Bandwidth request fields from `trustedProxies` clients (docs/load-testing.md); everyone else's are ignored.",
    ),
  trustedProxies: z
    .array(cidr)
    .default([])
    .describe("Clients whose X-Forwarded-For/-Proto/-Host are kept and appended to; everyone else's are replaced."),
  timeouts: z
    .strictObject({
      connect: ms('Upstream TCP + TLS connect timeout').default(5_000),
      responseHeader: ms('Time the upstream may take to start its response head').default(60_000),
      idle: ms(
        'Upstream connection silent mid-exchange before it is aborted (504, or the client connection is cut if the response had begun); also closes an Upgrade tunnel idle this long both ways',
      ).default(60_000),
      drain: ms('Graceful stop or reload: time in-flight requests get before connections are closed').default(30_000),
      streamDrain: ms(
        'Reload: time WebSocket tunnels and responses already streaming may go on in the retiring worker (a WebSocket then gets a 1001 close frame); other connections follow timeouts.drain, and a stop cuts everything at timeouts.drain',
      ).default(600_000),
    })
    .prefault({})
    .describe('Upstream timeouts, and how long a stop or reload lets connections finish.'),
  pool: z
    .strictObject({
      maxConnections: connectionLimit()
        .default(256)
        .describe('Connections per upstream per worker; requests past it wait in a queue.'),
      queueTimeout: ms('Time a request may wait for a free upstream connection before a 503').default(30_000),
      // As many as one worker holds client connections (server.maxConnections' default): the
      // default only refuses what queueTimeout would, and 5,000 concurrent clients on one upstream
      // wait their turn instead of meeting 503s (1024 refused most of them, in `npm run load`).
      maxQueue: z
        .number()
        .int()
        .min(0)
        .max(1_000_000)
        .default(10_000)
        .describe(
          'Requests that may wait for a free connection, per upstream and per worker; past it, 503 with Retry-After at once. The default matches server.maxConnections, so only queueTimeout refuses; lower it to shed load sooner.',
        ),
      keepAliveTimeout: ms(
        "Idle pooled upstream connections are closed after this (keep it below the upstream's own keep-alive timeout: Node's is 5000)",
      ).default(4_000),
    })
    .prefault({})
    .describe(
      'Keep-alive connection pool defaults, per upstream member and per worker; a pool under `pools` may override them.',
    ),
  server: z
    .strictObject({
      keepAliveTimeout: ms('Idle client keep-alive connections are closed after this').default(5_000),
      headersTimeout: ms('Time a client may take to send its request head (408 after)').default(30_000),
      requestTimeout: ms('Time a client may take to send a whole request (408 after); uploads need room').default(
        300_000,
      ),
      maxHeaderSize: z
        .number()
        .int()
        .min(1024)
        .max(1_048_576)
        .default(16_384)
        .describe('Largest client request head, in bytes (431 past it).'),
      maxConnections: z
        .number()
        .int()
        .min(1)
        .max(1_000_000)
        .default(10_000)
        .describe(
          'Client connections one worker holds at once; past it, new connections are closed as they are accepted (logged at most once a second, with a count).',
        ),
      maxBodySize: z
        .number()
        .int()
        .min(0)
        .max(Number.MAX_SAFE_INTEGER)
        .default(0)
        .describe('Largest request body in bytes, declared or chunked (413 past it); 0 for no limit.'),
      http2: z
        .boolean()
        .default(true)
        .describe('Offer HTTP/2 on HTTPS listeners: ALPN chooses h2 for clients that speak it, HTTP/1.1 for the rest.'),
      upgradeProtocols: z
        .array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected a protocol name such as websocket'))
        .default(['websocket'])
        .describe(
          'Upgrade protocols that may become tunnels to the upstream (case-insensitive). A request asking for any other (h2c, say) is proxied as an ordinary request without its Upgrade and the fields its Connection names, then the connection closes.',
        ),
    })
    .prefault({})
    .describe('The client-facing listener: client timeouts and limits.'),
  pidFile: z
    .string()
    .min(1)
    .optional()
    .describe(
      "Where the primary writes its pid, and beside it a status file that `switchyard reload` and `switchyard stop` read. Default: $RUNTIME_DIRECTORY/switchyard.pid under systemd (RuntimeDirectory=switchyard), else /run/switchyard/switchyard.pid where that folder exists, else switchyard.pid in the system's temporary directory.",
    ),
  admin: z
    .strictObject({
      listen: hostPort
        .optional()
        .describe(
          'Address of the admin listener (/metrics, /healthz, /readyz, /upstreams), HOST:PORT. Keep it on loopback or a private network. Default: none (off).',
        ),
    })
    .prefault({})
    .describe('The admin listener, served by the primary.'),
  accessLog: z
    .strictObject({
      enabled: z.boolean().default(true).describe('Write one line per request.'),
      format: z
        .enum(['json', 'common', 'combined'])
        .default('json')
        .describe('json (one object per line), or the NCSA common / combined formats.'),
      file: z
        .string()
        .min(1)
        .optional()
        .describe('Append to this file instead of stdout; SIGUSR1 reopens it (logrotate). Default: stdout.'),
    })
    .prefault({})
    .describe('One line per request (docs/operations.md).'),
  transformPool: z
    .strictObject({
      threads: z
        .union([z.literal('auto'), z.number().int().min(0).max(64)])
        .default('auto')
        .describe(
          'Threads per worker process for transforms. "auto": CPUs divided by workers (at least 1), so workers × threads does not oversubscribe the CPUs. 0 runs transforms on the event loop (for comparison only).',
        ),
      maxQueue: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(64)
        .describe('Transforms waiting for a thread, per worker; past it, `onOverload` applies.'),
      onOverload: z
        .enum(['pass', 'reject'])
        .default('pass')
        .describe('A full queue: "pass" sends the body untransformed, "reject" answers 503.'),
    })
    .prefault({})
    .describe('The transform threads of each worker process (docs/transforms.md).'),
  log: z
    .strictObject({
      level: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info')
        .describe('Minimum level of the process log on stdout.'),
      format: z
        .enum(['auto', 'json', 'pretty'])
        .default('auto')
        .describe(
          'How stdout shows log lines, process and access alike: "json" (one object per line, for journald and log shippers), "pretty" (one readable, coloured line each, for a terminal), or "auto": pretty when stdout is a terminal, else JSON.',
        ),
    })
    .prefault({})
    .describe('The process log on stdout.'),
});

export type Config = z.infer<typeof ConfigSchema>;
export type TlsConfig = z.infer<typeof TlsSchema>;
export type AcmeConfig = z.infer<typeof AcmeSchema>;
export type HstsConfig = z.infer<typeof HstsSchema>;

/** The Strict-Transport-Security value `hsts` asks for; null for none. */
export function hstsValue(hsts: HstsConfig | undefined): string | null {
  if (hsts === undefined || hsts === false) return null;
  const h = hsts === true ? HstsSchema.parse({}) : hsts;
  if (typeof h === 'boolean') return null;
  return `max-age=${h.maxAge}${h.includeSubDomains ? '; includeSubDomains' : ''}${h.preload ? '; preload' : ''}`;
}
export type ListenerConfig = z.infer<typeof ListenerSchema>;
export type UpstreamConfig = z.infer<typeof UpstreamSchema>;
export type MemberConfig = z.infer<typeof MemberSchema>;
export type PoolConfig = z.infer<typeof PoolSchema>;
export type RouteConfig = z.infer<typeof RouteSchema>;
export type FaultConfig = z.infer<typeof FaultSchema>;
export type MirrorConfig = z.infer<typeof MirrorSchema>;
export type RecordConfig = z.infer<typeof RecordSchema>;
export type HeaderOps = z.infer<typeof HeaderOpsSchema>;
export type HealthCheckConfig = z.infer<typeof HealthCheckSchema>;
export type DnsConfig = z.infer<typeof DnsSchema>;
export type Policy = (typeof POLICIES)[number];
export type TransformConfig = z.infer<typeof TransformSchema>;
export type CompressConfig = z.infer<typeof CompressSchema>;
export type ReplaceRule = z.infer<typeof ReplaceRuleSchema>;

/** JSON Schema for editors (YAML language servers read it via `# yaml-language-server: $schema=`). */
export function configJsonSchema(): object {
  return {
    ...z.toJSONSchema(ConfigSchema, { io: 'input' }),
    title: 'switchyard configuration',
  };
}
