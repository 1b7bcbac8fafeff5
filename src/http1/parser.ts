/**
 * llhttp, as node:http runs it (the binding comes from node-internals.ts), set up once for every
 * parser switchyard drives, and the small pieces of HTTP/1.1 framing both sides share.
 */
import { HTTPParser, type HTTPParserInstance, type ParseError } from '../node-internals';

export { HTTPParser, type HTTPParserInstance, type ParseError };

/** The parser's type: a client's requests, or an upstream's responses. */
export type ParserKind = 'request' | 'response';

const kParts = Symbol('headerParts');
const kUrl = Symbol('urlPart');

/** A parser made by createParser: it joins the batches of a long head (see there). */
export type Parser = HTTPParserInstance & { [kParts]: string[] | null; [kUrl]: string };

/**
 * The whole head, in one call: `headers` holds every field and `url` the whole target
 * (requests; undefined for responses). `this` is the parser.
 */
export type OnHead = (
  this: Parser,
  versionMajor: number,
  versionMinor: number,
  headers: string[],
  method: number | undefined,
  url: string,
  statusCode: number,
  statusMessage: string,
  upgrade: boolean,
  shouldKeepAlive: boolean,
) => number;

/**
 * The one llhttp set-up, for client requests, upstream responses and upgrade answers alike.
 * llhttp hands a head with more than 32 fields over in batches (kOnHeaders, with the URL read so
 * far) before its final call; every parser made here joins them, so `onHead` always sees the
 * whole head. A parser that skipped this was how a 101 with 33 fields became a 502.
 */
export function createParser(kind: ParserKind, maxHeaderSize: number, onHead: OnHead): Parser {
  const parser = new HTTPParser() as Parser;
  parser[HTTPParser.kOnHeaders] = collectHeaders;
  parser[HTTPParser.kOnHeadersComplete] = function (
    this: Parser,
    maj,
    min,
    headers,
    method,
    url,
    status,
    reason,
    upgrade,
    keepAlive,
  ) {
    let raw = headers ?? [];
    let target = url ?? '';
    const parts = this[kParts];
    if (parts !== null) {
      raw = headers === undefined ? parts : parts.concat(headers);
      target = this[kUrl] + target;
      this[kParts] = null;
      this[kUrl] = '';
    }
    return onHead.call(this, maj, min, raw, method, target, status, reason, upgrade, keepAlive);
  } satisfies OnHeadersComplete;
  initParser(parser, kind, maxHeaderSize);
  return parser;
}

/**
 * (Re)start a parser on a new message stream. Also what clears llhttp's upgrade flag, which a
 * head callback's "stop here" answer sets: while it is set, Node's binding reports a parse error
 * as a bare byte count instead of an Error, so a malformed message would go unnoticed.
 */
export function initParser(parser: Parser, kind: ParserKind, maxHeaderSize: number): void {
  parser.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, maxHeaderSize, 0);
  parser[kParts] = null;
  parser[kUrl] = '';
}

/**
 * A chunked message's trailer fields (RFC 9112 §7.1.2), taken off the parser at its message
 * complete. llhttp hands them over through the same batch callback as a long head's fields, after
 * the head: left there, they would open the next message's head on this parser, a field the
 * client never sent to that request (or another client's response, on a pooled upstream
 * connection). Every message that can carry trailers has a body, so its message-complete
 * callback runs and calls this.
 */
export function takeTrailers(parser: Parser): string[] | null {
  const parts = parser[kParts];
  if (parts === null) return null;
  parser[kParts] = null;
  parser[kUrl] = '';
  return parts;
}

function collectHeaders(this: Parser, headers: string[], url: string | undefined): void {
  const parts = this[kParts];
  if (parts === null) this[kParts] = headers;
  else for (const h of headers) parts.push(h);
  if (url !== undefined) this[kUrl] += url;
}

/** llhttp's callback for a complete head; the return value tells it whether a body follows. */
export type OnHeadersComplete = (
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: number | undefined,
  url: string | undefined,
  statusCode: number,
  statusMessage: string,
  upgrade: boolean,
  shouldKeepAlive: boolean,
) => number;

/** Where chunks go: an upstream net.Socket or a client transport (the strings written are ASCII). */
export interface ChunkOut {
  cork(): void;
  uncork(): void;
  write(data: Buffer | string): boolean;
}

/**
 * One chunk of a chunked body (RFC 9112 §7.1): size line, data, CRLF, in one write. cork() nests,
 * so this is safe inside a caller's own cork. Returns write()'s backpressure signal.
 */
export function writeChunk(out: ChunkOut, chunk: Buffer): boolean {
  out.cork();
  out.write(`${chunk.length.toString(16)}\r\n`);
  out.write(chunk);
  const ok = out.write('\r\n');
  out.uncork();
  return ok;
}

/**
 * The only Transfer-Encoding switchyard accepts, from clients and upstreams alike: one field,
 * exactly `chunked` (coding names are case-insensitive). Lists would change what the body means
 * (`gzip, chunked`) and anything else is framing a peer might read differently.
 */
export function isPlainChunked(fields: number, value: string | null): boolean {
  return fields === 1 && value !== null && value.trim().toLowerCase() === 'chunked';
}
