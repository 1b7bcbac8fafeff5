import assert from 'node:assert/strict';
import { delay, rawExchange, startProxy } from '../support/helpers';
import { recordingUpstream } from '../support/recording-upstream';

/** Header syntax: each case gets 400 and a close, and nothing reaches the upstream. */
const CASES: Array<[string, string]> = [
  ['obs-fold (CVE-2022-32215)', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n'],
  ['bare LF line ends (CVE-2022-32214)', 'GET / HTTP/1.1\nHost: a\n\n'],
  ['bare LF inside the head', 'GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n'],
  ['bare CR (CVE-2023-30589)', 'GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n'],
  ['space before the colon (CVE-2021-22959)', 'GET / HTTP/1.1\r\nHost : a\r\n\r\n'],
  ['header line starting with whitespace (CVE-2024-27982)', 'GET / HTTP/1.1\r\n X-A: 1\r\nHost: a\r\n\r\n'],
  ['empty header name', 'GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n'],
  ['NUL in a value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n'],
  ['control byte in a value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n'],
  ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['HTTP/0.9', 'GET /\r\n\r\n'],
];

describe('request smuggling: header syntax', () => {
  for (const [name, bytes] of CASES) {
    it(`${name}: 400, close, nothing upstream`, async () => {
      const up = await recordingUpstream();
      const proxy = await startProxy({ upstreams: [{ url: up.url }] });
      const got = await rawExchange(proxy.port, bytes);
      assert.match(got, /^HTTP\/1\.1 400 /);
      assert.match(got, /\r\nConnection: close\r\n/i);
      await delay(30);
      assert.equal(up.received(), '');
    });
  }

  it('asterisk-form target: 400, nothing upstream; the connection stays usable (the request was well framed)', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(
      proxy.port,
      'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n',
      (r) => r.includes('\r\n\r\nok'),
    );
    assert.match(got, /^HTTP\/1\.1 400 [\s\S]*SWY_ERR_BAD_TARGET[\s\S]*HTTP\/1\.1 200 /);
    assert.equal(up.requests(), 1);
    assert.match(up.received(), /^GET \/next HTTP\/1\.1\r\n/);
  });

  it('HTTP/1.0 without Host is fine (Host is optional there)', async () => {
    const up = await recordingUpstream();
    const proxy = await startProxy({ upstreams: [{ url: up.url }] });
    const got = await rawExchange(proxy.port, 'GET /old HTTP/1.0\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.equal(up.requests(), 1);
  });
});
