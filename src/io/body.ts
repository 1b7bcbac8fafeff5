/**
 * How a request body travels from the client side to an upstream connection, whatever protocol
 * either side speaks: pushed chunk by chunk, paused when the upstream falls behind.
 */

/** Where a request body goes, chunk by chunk (the upstream connection implements it). */
export interface BodyTarget {
  onBodyChunk(chunk: Buffer): void;
  onBodyEnd(): void;
}

/** A client's request body, pushed as it is read; paused when the upstream falls behind. */
export interface RequestBody {
  pipeTo(target: BodyTarget): void;
  unpipe(): void;
  pause(): void;
  resume(): void;
}

/**
 * An upstream side lets go of a request body: one it had attached is unpiped and left flowing (so
 * the client's connection keeps being read); one never attached is still the client's, queued and
 * intact for another try.
 */
export function releaseBody(body: RequestBody, piped: boolean): void {
  if (!piped) return;
  body.unpipe();
  body.resume();
}
