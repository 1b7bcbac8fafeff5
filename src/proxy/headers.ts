/**
 * What crosses the proxy in each direction. Hop-by-hop fields (RFC 9110 §7.6.1) describe one
 * connection and never travel further; the client's Connection header may name more of them.
 * The nominated names are removed first and the proxy's own fields are added after, so a client
 * cannot use `Connection: X-Forwarded-For` to strip what the proxy asserts.
 *
 * This runs once per request on the hot path: it works on rawHeaders (no lower-cased object is
 * built) and emits the upstream request head as one string, written in one syscall.
 */
import { BlockList, isIPv4 } from 'node:net';
import { httpDate } from '../http1/date';
import { CONNECTION_SPECIFIC } from '../http1/http2-fields';

/** The fields either direction treats specially; every other name is copied as it came. */
const enum Field {
  Other,
  /** Per-connection by definition, in both directions. */
  HopByHop,
  ContentLength,
  Expect,
  Host,
  XForwardedFor,
  XForwardedProto,
  XForwardedHost,
  Via,
  XRequestId,
  Date,
  Location,
}

/**
 * Which field a name is, case-insensitively. By length first: most names are none of these, and
 * are then neither lower-cased (a new string) nor hashed for a Set lookup (each name is a new
 * string per request).
 */
function fieldOf(name: string): Field {
  switch (name.length) {
    case 2:
      return is(name, 'te') ? Field.HopByHop : Field.Other;
    case 3:
      return is(name, 'via') ? Field.Via : Field.Other;
    case 4:
      return is(name, 'host') ? Field.Host : is(name, 'date') ? Field.Date : Field.Other;
    case 6:
      return is(name, 'expect') ? Field.Expect : Field.Other;
    case 7:
      return is(name, 'trailer') || is(name, 'upgrade') ? Field.HopByHop : Field.Other;
    case 8:
      return is(name, 'location') ? Field.Location : Field.Other;
    case 10:
      return is(name, 'connection') || is(name, 'keep-alive') ? Field.HopByHop : Field.Other;
    case 12:
      return is(name, 'x-request-id') ? Field.XRequestId : Field.Other;
    case 14:
      return is(name, 'content-length') ? Field.ContentLength : Field.Other;
    case 15:
      return is(name, 'x-forwarded-for') ? Field.XForwardedFor : Field.Other;
    case 16:
      return is(name, 'proxy-connection')
        ? Field.HopByHop
        : is(name, 'x-forwarded-host')
          ? Field.XForwardedHost
          : is(name, 'content-location')
            ? Field.Location
            : Field.Other;
    case 17:
      return is(name, 'transfer-encoding')
        ? Field.HopByHop
        : is(name, 'x-forwarded-proto')
          ? Field.XForwardedProto
          : Field.Other;
    default:
      return Field.Other;
  }
}

/**
 * `name` is `lower` (lower-case, of the same length) with its ASCII letters in any case, anything
 * else exactly. Compared in place: toLowerCase() makes a new string of every name with a capital,
 * which is most of them.
 */
function is(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    const c = name.charCodeAt(i);
    const t = lower.charCodeAt(i);
    if (c !== t && (t < 0x61 || t > 0x7a || c !== t - 0x20)) return false;
  }
  return true;
}

/**
 * Via's received-protocol is the version of the message as this hop received it (RFC 9110
 * §7.6.3): the client's request, or the upstream's response.
 */
export const VIA = '1.1 switchyard';
const VIA_10 = '1.0 switchyard';
const VIA_2 = '2 switchyard';

/** Via's entry for a message received over HTTP/`major`.`minor`. */
export function viaFor(major: number, minor: number): string {
  return major === 2 ? VIA_2 : minor === 0 ? VIA_10 : VIA;
}

export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  constructor(cidrs: readonly string[]) {
    this.empty = cidrs.length === 0;
    for (const c of cidrs) {
      const [addr, bits] = c.split('/') as [string, string | undefined];
      const type = isIPv4(addr) ? 'ipv4' : 'ipv6';
      if (bits === undefined) this.list.addAddress(addr, type);
      else this.list.addSubnet(addr, Number(bits), type);
    }
  }

  has(address: string | undefined): boolean {
    if (this.empty || address === undefined) return false;
    if (address.startsWith('::ffff:') && isIPv4(address.slice(7))) address = address.slice(7);
    return this.list.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  }
}

/**
 * Lower-cased tokens of every Connection header, keep-alive left out; null when there are none.
 * An array, not a Set: it holds one token ("close") or none nearly always, and the fields it
 * nominates are found by comparing names in place (see nominates).
 */
function connectionTokens(raw: readonly string[]): string[] | null {
  let names: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.length === 10 && is(n, 'connection')) {
      const value = raw[i + 1];
      if (value.indexOf(',') === -1) names = addToken(names, value);
      else for (const t of value.split(',')) names = addToken(names, t);
    }
  }
  return names;
}

/** Whether `name` is one of `tokens` (lower-case), in any case. */
function nominates(tokens: readonly string[], name: string): boolean {
  for (const t of tokens) if (t.length === name.length && is(name, t)) return true;
  return false;
}

/**
 * `keep-alive` is hop-by-hop in both directions already, so naming it removes nothing more; most
 * upstream responses say just that, and then no array is built for them.
 */
function addToken(names: string[] | null, t: string): string[] | null {
  const token = t.trim().toLowerCase();
  if (token === '' || token === 'keep-alive') return names;
  if (names === null) return [token];
  names.push(token);
  return names;
}

/** A route's header edits, compiled once: names to drop (lower-case), and lines to append. */
export interface HeaderEdit {
  readonly drop: ReadonlySet<string>;
  readonly lines: string;
  /** `set: {Host: ...}` on requests: the Host header to send. */
  readonly host: string | null;
}

export function compileHeaderEdit(
  ops:
    | {
        set?: Record<string, string> | undefined;
        add?: Record<string, string> | undefined;
        remove?: readonly string[] | undefined;
      }
    | undefined,
): HeaderEdit | null {
  if (ops === undefined) return null;
  const drop = new Set<string>();
  let lines = '';
  let host: string | null = null;
  for (const name of ops.remove ?? []) drop.add(name.toLowerCase());
  for (const [name, value] of Object.entries(ops.set ?? {})) {
    if (name.toLowerCase() === 'host') {
      host = value;
      continue;
    }
    drop.add(name.toLowerCase());
    lines += `${name}: ${value}\r\n`;
  }
  for (const [name, value] of Object.entries(ops.add ?? {})) {
    if (name.toLowerCase() === 'host') {
      host ??= value;
      continue;
    }
    lines += `${name}: ${value}\r\n`;
  }
  // Host cannot be removed (HTTP/1.1 requires it); removing it means sending the upstream's own.
  drop.delete('host');
  return { drop, lines, host };
}

export interface RequestHeadInput {
  method: string;
  /** origin-form target: starts with '/'. */
  path: string;
  rawHeaders: readonly string[];
  /** Host header to send (the upstream's, or the client's with preserveHost). */
  host: string;
  clientAddress: string | undefined;
  clientTrusted: boolean;
  /** 'http' or 'https': the scheme the client used to reach us. */
  proto: string;
  /** How the body is framed upstream: its declared length, 'chunked', or none. */
  bodyLength: number | 'chunked' | null;
  /** Sent as X-Request-Id: the client's own when valid, else generated (see handler). */
  requestId: string;
  /** Extra header lines, pre-formatted "Name: value\r\n" (demo mode only). */
  extra?: string;
  /** For an Upgrade tunnel: the protocol asked for, sent with Connection: Upgrade. */
  upgrade?: string;
  /** The route's request header edits, applied after the proxy's own fields. */
  edit?: HeaderEdit | null;
  /** This hop's Via entry (viaFor the client's version); VIA when not given. */
  via?: string;
}

/**
 * Build the upstream request head. Returns the full head including the final empty line.
 * Values were already checked by Node's parser (no CR/LF/NUL), so concatenation is safe.
 */
export function buildRequestHead(input: RequestHeadInput): string {
  const raw = input.rawHeaders;
  const nominated = connectionTokens(raw);
  const edit = input.edit ?? null;
  let head = `${input.method} ${input.path} HTTP/1.1\r\nHost: ${edit?.host ?? input.host}\r\n`;
  let xff: string | undefined;
  let xfProto: string | undefined;
  let xfHost: string | undefined;
  let via: string | undefined;
  let clientHost: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    switch (fieldOf(name)) {
      // Framing is re-derived for the next hop; Expect is answered by this hop; the rest are
      // replaced by the proxy's own values below.
      case Field.HopByHop:
      case Field.ContentLength:
      case Field.Expect:
      case Field.XRequestId:
        continue;
      case Field.Host:
        clientHost = value;
        continue;
      case Field.XForwardedFor:
        xff = xff === undefined ? value : `${xff}, ${value}`;
        continue;
      case Field.XForwardedProto:
        xfProto ??= value;
        continue;
      case Field.XForwardedHost:
        xfHost ??= value;
        continue;
      case Field.Via:
        via = via === undefined ? value : `${via}, ${value}`;
        continue;
      default:
        break;
    }
    if (nominated !== null && nominates(nominated, name)) continue;
    if (edit !== null && edit.drop.has(name.toLowerCase())) continue;
    head += `${name}: ${value}\r\n`;
  }
  // A route's edits may remove or replace the proxy's own fields too (null: no edits).
  const drop = edit === null ? null : edit.drop;
  const client = input.clientAddress ?? 'unknown';
  // A client outside trustedProxies cannot vouch for anyone: its forwarding headers are replaced.
  const trusted = input.clientTrusted;
  if (drop === null || !drop.has('x-forwarded-for'))
    head += `X-Forwarded-For: ${trusted && xff !== undefined ? `${xff}, ${client}` : client}\r\n`;
  if (drop === null || !drop.has('x-forwarded-proto'))
    head += `X-Forwarded-Proto: ${trusted && xfProto !== undefined ? xfProto : input.proto}\r\n`;
  const fwdHost = trusted && xfHost !== undefined ? xfHost : clientHost;
  if (fwdHost !== undefined && (drop === null || !drop.has('x-forwarded-host')))
    head += `X-Forwarded-Host: ${fwdHost}\r\n`;
  // Via is a trace, not an assertion: every hop appends itself (RFC 9110 §7.6.3).
  const own = input.via ?? VIA;
  if (drop === null || !drop.has('via')) head += `Via: ${via === undefined ? own : `${via}, ${own}`}\r\n`;
  if (drop === null || !drop.has('x-request-id')) head += `X-Request-Id: ${input.requestId}\r\n`;
  if (input.extra !== undefined) head += input.extra;
  if (edit !== null) head += edit.lines;
  if (input.upgrade !== undefined) head += `Connection: Upgrade\r\nUpgrade: ${input.upgrade}\r\n`;
  if (input.bodyLength === 'chunked') head += 'Transfer-Encoding: chunked\r\n';
  else if (input.bodyLength !== null) head += `Content-Length: ${input.bodyLength}\r\n`;
  return `${head}\r\n`;
}

/**
 * Header lines of an interim (1xx) response for the client: the upstream's fields less the
 * hop-by-hop ones. No Date or Via: the final response carries those.
 */
export function buildInterimHead(raw: readonly string[]): string {
  const nominated = connectionTokens(raw);
  let lines = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (fieldOf(name) === Field.HopByHop || (nominated !== null && nominates(nominated, name))) continue;
    lines += `${name}: ${raw[i + 1]}\r\n`;
  }
  return lines;
}

/** Header lines for the client's response head, and whether they carry a Content-Length. */
export interface ResponseHead {
  lines: string;
  contentLength: boolean;
}

/**
 * Response fields for the client, as "Name: value\r\n" lines. Transfer-Encoding is dropped
 * because the body is re-framed for the client; Content-Length is kept so a sized body stays
 * sized. A missing Date is added (RFC 9110 §6.6.1).
 */
export function buildResponseHead(
  raw: readonly string[],
  edit: HeaderEdit | null = null,
  location: ((value: string) => string) | null = null,
  own: string = VIA,
): ResponseHead {
  const nominated = connectionTokens(raw);
  let lines = '';
  let via: string | undefined;
  let contentLength = false;
  let date = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const field = fieldOf(name);
    if (field === Field.HopByHop) continue;
    if (nominated !== null && nominates(nominated, name)) continue;
    if (field === Field.Via) {
      via = via === undefined ? raw[i + 1] : `${via}, ${raw[i + 1]}`;
      continue;
    }
    if (edit !== null && edit.drop.has(name.toLowerCase())) continue;
    if (field === Field.ContentLength) contentLength = true;
    else if (field === Field.Date) date = true;
    else if (location !== null && field === Field.Location) {
      lines += `${name}: ${location(raw[i + 1])}\r\n`;
      continue;
    }
    lines += `${name}: ${raw[i + 1]}\r\n`;
  }
  if (!date && (edit === null || !edit.drop.has('date'))) lines += `Date: ${httpDate()}\r\n`;
  if (edit === null || !edit.drop.has('via')) lines += `Via: ${via === undefined ? own : `${via}, ${own}`}\r\n`;
  if (edit !== null) lines += edit.lines;
  return { lines, contentLength };
}

/**
 * Fields a trailer section may not carry on to the client (RFC 9110 §6.5.1, RFC 9113 §8.1):
 * framing, routing and per-connection ones, which a recipient would otherwise act on after the
 * body it already framed.
 */
const NOT_IN_TRAILERS: ReadonlySet<string> = new Set([
  ...CONNECTION_SPECIFIC,
  'content-encoding',
  'content-length',
  'content-range',
  'content-type',
  'host',
  'te',
  'trailer',
]);

/** An upstream's trailer fields (name, value, ...) less those that may not be relayed. */
export function relayableTrailers(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) !== 58 /* : */ && !NOT_IN_TRAILERS.has(name.toLowerCase())) out.push(name, raw[i + 1]);
  }
  return out;
}
