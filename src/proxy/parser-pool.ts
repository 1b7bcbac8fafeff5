/**
 * The client side's llhttp parsers, pooled as node:http's server pools its own. A connection
 * holds one only while a request is being read, so idle keep-alive connections cost no parser.
 */
import { createParser, HTTPParser, initParser, type Parser } from '../http1/parser';

/** What a pooled parser calls back into: the connection it is lent to. */
export interface ParserClient {
  onParserMessageBegin(): void;
  onParserHeaders(
    major: number,
    minor: number,
    raw: string[],
    methodIndex: number | undefined,
    target: string,
    upgrade: boolean,
    keepAlive: boolean,
  ): number;
  onParserBody(chunk: Buffer): void;
  onParserMessageComplete(): void;
}

const kClient = Symbol('client');
export type PooledParser = Parser & { [kClient]: ParserClient | null };

/**
 * Parsers are pooled, as node:http's server pools its own: a new connection then costs no C++
 * parser construction and no per-connection callback closures. The callbacks run with the
 * parser as `this` and find their connection through it.
 *
 * Two of them are set only while they have something to say: Node calls into JS for every llhttp
 * slot that holds a function, and for a request without a body neither the message's begin
 * (onData sees the first byte itself) nor its complete (its head completes it) does. The begin
 * slot is filled again whenever a request completes, for the next one pipelined behind it in the
 * same read (or whenever a read starts with CR or LF, which llhttp skips between messages), and
 * the complete slot for each request that has a body. What this saves: docs/performance.md.
 */
const freeParsers: PooledParser[] = [];
/** A pooled parser is initialised again, with its connection's limit, each time it is taken. */
const MAX_HEADER_SIZE_UNSET = 16 * 1024;
const MAX_FREE_PARSERS = 1000;

/** A parser for `client`'s next request, initialised with its head limit. */
export function takeParser(client: ParserClient, maxHeaderSize: number): PooledParser {
  const parser = freeParsers.pop() ?? newParser();
  parser[kClient] = client;
  initParser(parser, 'request', maxHeaderSize);
  return parser;
}

function newParser(): PooledParser {
  const parser = createParser(
    'request',
    MAX_HEADER_SIZE_UNSET,
    function (maj, min, headers, method, url, _s, _r, upgrade, keepAlive) {
      const client = (this as PooledParser)[kClient];
      return client === null ? 1 : client.onParserHeaders(maj, min, headers, method, url, upgrade, keepAlive);
    },
  ) as PooledParser;
  parser[kClient] = null;
  parser[HTTPParser.kOnMessageBegin] = MESSAGE_BEGIN;
  parser[HTTPParser.kOnBody] = function (this: PooledParser, chunk: Buffer) {
    this[kClient]?.onParserBody(chunk);
  };
  parser[HTTPParser.kOnMessageComplete] = MESSAGE_COMPLETE;
  return parser;
}

/** The message-begin slot's callback, for the connection to set when a begin has something to say. */
export function MESSAGE_BEGIN(this: PooledParser): void {
  this[kClient]?.onParserMessageBegin();
}

/** The message-complete slot's callback, likewise. */
export function MESSAGE_COMPLETE(this: PooledParser): void {
  this[kClient]?.onParserMessageComplete();
}

/** Back to the pool, or closed when the pool is full. */
export function returnParser(parser: Parser): void {
  const pooled = parser as PooledParser;
  pooled[kClient] = null;
  if (freeParsers.length < MAX_FREE_PARSERS) freeParsers.push(pooled);
  else parser.close();
}
