/**
 * Whether a failed upstream exchange may be sent again, as a function of how far it got
 * (src/upstream/exchange-phase.ts), and which failures count against a member.
 */
import assert from 'node:assert/strict';
import {
  ClientAbortedError,
  NoRouteError,
  PoolQueueTimeoutError,
  UpstreamConnectError,
  UpstreamConnectTimeoutError,
  UpstreamHeadersTimeoutError,
  UpstreamIdleTimeoutError,
  UpstreamProtocolError,
  UpstreamResetError,
  UpstreamTlsError,
} from '../../src/errors';
import { ExchangePhase, retryHint, RetryHint } from '../../src/upstream/exchange-phase';

describe('retry safety by exchange phase', () => {
  const reset = new UpstreamResetError('closed');
  const timeout = new UpstreamHeadersTimeoutError(1000);

  it('nothing left while connecting: unsent, whatever the error and the connection', () => {
    for (const reused of [false, true]) {
      assert.equal(retryHint(ExchangePhase.Connecting, reused, new UpstreamConnectError('refused')), RetryHint.Unsent);
      assert.equal(retryHint(ExchangePhase.Connecting, reused, new UpstreamConnectTimeoutError(1)), RetryHint.Unsent);
    }
  });

  it('head sent, no body byte taken: a reset on a reused connection is stale, anything else sent-without-body', () => {
    assert.equal(retryHint(ExchangePhase.HeadSent, true, reset), RetryHint.Stale);
    assert.equal(retryHint(ExchangePhase.HeadSent, false, reset), RetryHint.SentNoBody);
    // A timeout means the request arrived and the upstream is slow: not the keep-alive ending.
    assert.equal(retryHint(ExchangePhase.HeadSent, true, timeout), RetryHint.SentNoBody);
    assert.equal(retryHint(ExchangePhase.HeadSent, true, new UpstreamProtocolError('x')), RetryHint.SentNoBody);
  });

  it('once body bytes went, or a response began, never again', () => {
    for (const phase of [ExchangePhase.BodySent, ExchangePhase.ReadingBody, ExchangePhase.Done]) {
      for (const reused of [false, true]) {
        assert.equal(retryHint(phase, reused, reset), RetryHint.Never);
        assert.equal(retryHint(phase, reused, timeout), RetryHint.Never);
      }
    }
  });

  it('counts against a member only what the member did', () => {
    const member = [
      new UpstreamConnectError('x'),
      new UpstreamTlsError('x'),
      new UpstreamResetError('x'),
      new UpstreamProtocolError('x'),
      new UpstreamConnectTimeoutError(1),
      new UpstreamHeadersTimeoutError(1),
      new UpstreamIdleTimeoutError(1),
    ];
    for (const err of member) assert.equal(err.countsAgainstMember, true, err.code);
    for (const err of [new PoolQueueTimeoutError(1), new ClientAbortedError(), new NoRouteError('h', '/')]) {
      assert.equal(err.countsAgainstMember, false, err.code);
    }
  });
});
