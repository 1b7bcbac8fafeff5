/**
 * How far one upstream exchange got, and what that allows: whether its request may be sent again.
 * The decision is one pure function of the phase (Caddy's reverseproxy `tryAgain` is the model),
 * so each case is tested on its own (test/unit/exchange-phase.test.ts).
 */
import { UpstreamResetError, type SwitchyardError } from '../errors';

/** The exchange's progress; it only moves forward. */
export const enum ExchangePhase {
  /** The connection is not up: nothing has left. */
  Connecting,
  /**
   * The head is written, and no body byte has been taken from the client: for a request without a
   * body, it is waiting for the response head.
   */
  HeadSent,
  /** Body bytes were taken from the client and sent on; the response head has not come. */
  BodySent,
  /** The final response head came; its body is being read. */
  ReadingBody,
  /** The response is complete. */
  Done,
}

/** What a failed exchange allows (the handler decides from this whether to try again). */
export const enum RetryHint {
  /** Nothing reached the upstream: the connection never came up (refused, timeout, TLS). */
  Unsent,
  /**
   * A reused keep-alive connection was found closed before any answer, or an HTTP/2 stream was
   * refused (REFUSED_STREAM, or past a GOAWAY's last id): the upstream had let it go.
   */
  Stale,
  /** The head reached the upstream, no body byte was consumed, no response came. */
  SentNoBody,
  /** A response began, or request body bytes were consumed: never sent again. */
  Never,
}

/**
 * `reused`: the connection had completed an exchange before this one. A reset on such a connection
 * before any answer is the upstream's keep-alive ending; a timeout is not that (the request
 * arrived, and the upstream is slow).
 */
export function retryHint(phase: ExchangePhase, reused: boolean, err: SwitchyardError): RetryHint {
  switch (phase) {
    case ExchangePhase.Connecting:
      return RetryHint.Unsent;
    case ExchangePhase.HeadSent:
      return reused && err instanceof UpstreamResetError ? RetryHint.Stale : RetryHint.SentNoBody;
    case ExchangePhase.BodySent:
    case ExchangePhase.ReadingBody:
    case ExchangePhase.Done:
      return RetryHint.Never;
  }
}
