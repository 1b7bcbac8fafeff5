import assert from 'node:assert/strict';
import { delay, rawExchange, startProxy } from '../support/helpers';
import { recordingUpstream } from '../support/recording-upstream';

/**
 * Request framing (RFC 9112 §6, §7): every case is refused with 400 and a close before the
 * upstream hears anything, or, where the problem only shows mid-body, the upstream exchange is
 * cut. In no case does the upstream receive a second, hidden request.
 */
const REJECTED: Array<[string, string]> = [
  [
    'Content-Length with Transfer-Encoding',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  ],
  ['TE list gzip, chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
  ['TE chunked, gzip', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n'],
  ['TE chunked, chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n'],
  ['TE unknown coding', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'],
  ['TE leading comma', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n'],
  [
    'TE on two lines',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  ],
  ['TE in HTTP/1.0', 'POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Content-Length +5', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello'],
  ['Content-Length hex', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello'],
  ['Content-Length empty', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n'],
  ['Content-Length overflow', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n'],
  ['Content-Length twice, same', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'],
  [
    'Content-Length twice, different',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
  ],
  ['Content-Length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello'],
];

/** Broken chunked bodies: the head may have gone upstream (bodies stream); the exchange is cut. */
const BROKEN_BODY: Array<[string, string]> = [
  [
    'chunk size overflow',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  ],
  ['chunk size junk', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5z\r\nhello\r\n0\r\n\r\n'],
  [
    'no CRLF after chunk data',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  ],
  [
    'chunk-extension flood (CVE-2024-22019)',
    `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(100_000)}\r\nx\r\n0\r\n\r\n`,
  ],
  [
    'trailer setting Content-Length',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  ],
];

describe('request smuggling: framing', () => {
  for (const [name, bytes] of REJECTED) {
    it(`${name}: 400 and close; the upstream hears nothing`, async () => {
      const up = await recordingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const got = await rawExchange(proxy.port, bytes);
      assert.match(got, /^HTTP\/1\.1 400 /);
      assert.match(got, /\r\nConnection: close\r\n/i);
      assert.equal((got.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one answer, no second request served');
      await delay(30);
      assert.equal(up.received(), '');
    });
  }

  for (const [name, bytes] of BROKEN_BODY) {
    it(`${name}: 400 and close; the upstream never gets a second request`, async () => {
      const up = await recordingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const got = await rawExchange(proxy.port, bytes);
      assert.match(got, /^HTTP\/1\.1 400 /);
      assert.equal((got.match(/HTTP\/1\.1 /g) ?? []).length, 1);
      await delay(50);
      assert.ok(up.requests() <= 1, `upstream saw ${up.requests()} requests:\n${up.received()}`);
      assert.doesNotMatch(up.received(), /smuggled/);
      // Whatever reached the upstream was cut off, never completed as a request it would answer.
      assert.doesNotMatch(up.received(), /\r\n0\r\n\r\n/);
    });
  }

  it('normalises Transfer-Encoding: Chunked (names are case-insensitive) to its own framing', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(
      proxy.port,
      'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      (r) => r.includes('\r\n\r\nok'),
    );
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.equal(up.requests(), 1);
    assert.match(up.received(), /\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n$/);
  });

  it('answers 413 to a declared body over server.maxBodySize; the upstream hears nothing', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { maxBodySize: 10 } });
    const got = await rawExchange(proxy.port, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world');
    assert.match(got, /^HTTP\/1\.1 413 /);
    await delay(30);
    assert.equal(up.received(), '');
  });

  it('answers 413 to a chunked body that grows past server.maxBodySize, cutting the upstream exchange', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { maxBodySize: 10 } });
    const got = await rawExchange(
      proxy.port,
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n',
    );
    assert.match(got, /^HTTP\/1\.1 413 /);
    await delay(50);
    assert.doesNotMatch(up.received(), /\r\n0\r\n\r\n/, 'the upstream never got a complete request');
  });

  it('lets a body of exactly server.maxBodySize through', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }], server: { maxBodySize: 10 } });
    const got = await rawExchange(
      proxy.port,
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789',
      (r) => r.includes('\r\n\r\nok'),
    );
    assert.match(got, /^HTTP\/1\.1 200 /);
  });
});
