/**
 * What a response-body filter (a compression or a transform) is to the exchange, and the
 * exchange to it: the filter owns the body from the head on and drives the client response.
 */
import type { Logger } from 'pino';
import type { SwitchyardError } from '../errors';
import type { TransformPool } from '../transform/pool';

/** What a filter drives: the client response, and the exchange around it. */
export interface FilterSink {
  /** Builds and writes the client head from upstream-style raw fields (route edits applied). */
  sendHead(status: number, reason: string, raw: string[]): void;
  write(chunk: Buffer): boolean;
  flush(): void;
  /** The response is complete. */
  end(): void;
  /** The response cannot be completed: answer with `err` if nothing was sent, else cut. */
  fail(err: SwitchyardError): void;
  /** The filter can take more body: let the upstream connection read again. */
  resumeUpstream(): void;
}

export interface BodyFilter {
  /** A body chunk from the upstream; false asks for a pause until resumeUpstream(). */
  data(chunk: Buffer): boolean;
  /** The upstream body is complete. */
  end(): void;
  /** The client can take more after a write returned false. */
  clientDrained(): void;
  /** The client is gone. */
  abort(): void;
}

export type TransformOutcome =
  'transformed' | 'unchanged' | 'too_large' | 'overload_pass' | 'overload_reject' | 'failed' | 'undecodable';

export interface BodyContext {
  pool: TransformPool;
  onOverload: 'pass' | 'reject';
  logger: Logger;
  count(outcome: TransformOutcome): void;
}
