import assert from 'node:assert/strict';
import * as net from 'node:net';
import { HTTPParser } from '../../src/http1/parser';
import { seededRandom } from '../../src/proxy/faults';
import { rawUpstream, request, startProxy } from '../support/helpers';

const TEMPLATES = [
  'GET /a?b=1 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n',
  'POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello',
  'POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
  'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n',
];
const INSERTS = [
  '\r',
  '\n',
  '\r\n',
  ' ',
  '\t',
  ':',
  '\0',
  '\x7f',
  ',',
  ';',
  '0',
  'F',
  '-',
  'chunked',
  'Content-Length: 3\r\n',
  'Transfer-Encoding: chunked\r\n',
  'Host: b\r\n',
  '\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  '\xff',
];

function mutate(rand: () => number, input: string): string {
  let s = input;
  const n = 1 + Math.floor(rand() * 3);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(rand() * (s.length + 1));
    switch (Math.floor(rand() * 6)) {
      case 0:
        s = s.slice(0, at) + INSERTS[Math.floor(rand() * INSERTS.length)] + s.slice(at);
        break;
      case 1:
        s = s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 4));
        break;
      case 2:
        s = s.slice(0, at) + String.fromCharCode(Math.floor(rand() * 256)) + s.slice(at + 1);
        break;
      case 3: {
        // duplicate a line
        const lines = s.split('\r\n');
        const i = Math.floor(rand() * lines.length);
        lines.splice(i, 0, lines[i]);
        s = lines.join('\r\n');
        break;
      }
      case 4:
        s = s.slice(0, at);
        break; // truncate
      default:
        s = s.replace(/\d+/, String(Math.floor(rand() * 20)));
        break;
    }
  }
  return s;
}

/** Bytes the upstream got, checked with llhttp in strict mode: any parse error is a malformed request. */
function strictRequestChecker(onRequest: () => void): { feed(d: Buffer): void; errors: string[] } {
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, {}, 64 * 1024, 0);
  parser[HTTPParser.kOnHeadersComplete] = () => {
    onRequest();
    return 0;
  };
  const errors: string[] = [];
  let failed = false;
  return {
    errors,
    feed(d: Buffer) {
      if (failed) return;
      const r = parser.execute(d);
      if (typeof r !== 'number') {
        failed = true;
        errors.push(`${r.code}: ${JSON.stringify(d.toString('latin1').slice(0, 200))}`);
      }
    },
  };
}

describe('fuzz: random and mutated requests against a running proxy', function () {
  this.timeout(90_000);

  it('answers or closes every connection, sends only well-formed requests upstream, and keeps serving', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? 20261124);
    const rand = seededRandom(seed);
    const upstreamErrors: string[] = [];
    let forwarded = 0;
    const up = await rawUpstream((socket) => {
      const checker = strictRequestChecker(() => {
        forwarded++;
      });
      socket.on('error', () => undefined);
      socket.on('data', (d) => {
        checker.feed(d);
        upstreamErrors.push(...checker.errors.splice(0));
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      });
    });
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      server: { headersTimeout: 300, requestTimeout: 600, keepAliveTimeout: 300 },
      timeouts: { responseHeader: 1000 },
    });
    const cases = Array.from({ length: 600 }, () => mutate(rand, TEMPLATES[Math.floor(rand() * TEMPLATES.length)]));
    const hangs: string[] = [];
    const deadline = Date.now() + 45_000;
    const one = (bytes: string): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect(proxy.port, '127.0.0.1');
        const timer = setTimeout(() => {
          hangs.push(JSON.stringify(bytes));
          s.destroy();
          resolve();
        }, 5000);
        s.on('error', () => undefined);
        s.resume();
        s.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        s.write(Buffer.from(bytes, 'latin1'));
      });
    for (let i = 0; i < cases.length && Date.now() < deadline; i += 25) {
      await Promise.all(cases.slice(i, i + 25).map(one));
    }
    assert.deepEqual(hangs, [], `seed ${seed}: connections neither answered nor closed`);
    assert.deepEqual(upstreamErrors, [], `seed ${seed}: malformed requests reached the upstream`);
    // Not vacuous: a good share of the mutants were valid enough to be forwarded.
    assert.ok(forwarded > 60, `only ${forwarded} requests were forwarded`);
    assert.equal((await request(proxy.url)).status, 200, 'the proxy still serves');
  });
});
