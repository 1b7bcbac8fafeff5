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

/**
 * A body on its way to an upstream that something else also reads (a mirror's copy, a
 * recording): each chunk is offered to `copy` before it goes on, and `copied` hears the end.
 * The upstream side pipes and pauses it as it would the client's body it wraps.
 */
export abstract class BodyTee implements RequestBody, BodyTarget {
  private target: BodyTarget | null = null;

  constructor(private readonly source: RequestBody) {}

  pipeTo(target: BodyTarget): void {
    this.target = target;
    this.source.pipeTo(this);
  }

  unpipe(): void {
    this.target = null;
    this.source.unpipe();
  }

  pause(): void {
    this.source.pause();
  }

  resume(): void {
    this.source.resume();
  }

  onBodyChunk(chunk: Buffer): void {
    this.copy(chunk);
    this.target?.onBodyChunk(chunk);
  }

  onBodyEnd(): void {
    this.copied();
    this.target?.onBodyEnd();
  }

  /** A chunk went by: it may be a view of a read buffer the next read reuses, so copy what is kept. */
  protected abstract copy(chunk: Buffer): void;
  protected abstract copied(): void;
}
