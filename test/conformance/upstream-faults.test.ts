/**
 * Every upstream fault, twice: on a fresh upstream connection, and on a pooled one that has
 * already served a request. A pooled connection has parser and exchange state left over from its
 * last response, which is where a fault path can go wrong when only fresh connections are tested.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type * as net from 'node:net';
import { rawUpstream, request, startProxy, type Upstream } from '../support/helpers';

const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

interface Outcome {
  status: number;
  /** Interim (1xx) responses the client saw, in order. */
  informational: number[];
  complete: boolean;
  body: string;
}

/** One GET on a fresh client connection; resolves however the response ends. */
function fetchOutcome(url: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const informational: number[] = [];
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      const done = (complete: boolean) => resolve({ status: res.statusCode!, informational, complete, body });
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => done(res.complete));
      res.on('error', () => done(false));
      res.on('aborted', () => done(false));
    });
    req.on('information', (info) => informational.push(info.statusCode));
    req.on('error', reject);
  });
}

interface Fault {
  name: string;
  /** What the upstream does with the faulty request. */
  act(socket: net.Socket): void;
  /** Proxy settings the fault needs (short timeouts). */
  config?: Record<string, unknown>;
  check(out: Outcome): void;
  /** The connection the fault happened on must not be used again. */
  discards: boolean;
}

const FAULTS: Fault[] = [
  {
    name: 'Content-Length and Transfer-Encoding together',
    act: (s) =>
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
    check: (o) => {
      assert.equal(o.status, 502);
      assert.match(o.body, /SWY_ERR_UPSTREAM_PROTOCOL/);
    },
    discards: true,
  },
  {
    name: 'two different Content-Length values',
    act: (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'),
    check: (o) => {
      assert.equal(o.status, 502);
      assert.match(o.body, /SWY_ERR_UPSTREAM_PROTOCOL/);
    },
    discards: true,
  },
  {
    name: 'a bad status line',
    act: (s) => s.write('HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n'),
    check: (o) => {
      assert.equal(o.status, 502);
      assert.match(o.body, /SWY_ERR_UPSTREAM_PROTOCOL/);
    },
    discards: true,
  },
  {
    name: 'a close mid-body',
    act: (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'),
    check: (o) => {
      assert.equal(o.status, 200);
      assert.equal(o.complete, false);
      assert.equal(o.body, 'partial');
    },
    discards: true,
  },
  {
    name: 'extra bytes after a complete response',
    act: (s) => s.write(`${OK}HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra`),
    check: (o) => {
      assert.equal(o.status, 200);
      assert.equal(o.complete, true);
      assert.equal(o.body, 'ok');
    },
    discards: true,
  },
  {
    name: 'a 103 Early Hints before the final response',
    act: (s) => s.write(`HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n${OK}`),
    check: (o) => {
      assert.deepEqual(o.informational, [103]);
      assert.equal(o.status, 200);
      assert.equal(o.body, 'ok');
    },
    discards: false,
  },
  {
    name: 'a stall before the head',
    act: () => undefined,
    config: { timeouts: { responseHeader: 200 } },
    check: (o) => {
      assert.equal(o.status, 504);
      assert.match(o.body, /SWY_ERR_UPSTREAM_HEADERS_TIMEOUT/);
    },
    discards: true,
  },
  {
    name: 'a stall mid-body',
    act: (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'),
    config: { timeouts: { idle: 200 } },
    check: (o) => {
      assert.equal(o.status, 200);
      assert.equal(o.complete, false);
    },
    discards: true,
  },
];

/**
 * An upstream that answers `/warm` with a plain 200 and `/fault` with the fault, on any
 * connection, and records which connection each request came on.
 */
async function faultyUpstream(fault: Fault): Promise<Upstream & { log: Array<{ path: string; conn: number }> }> {
  const log: Array<{ path: string; conn: number }> = [];
  let conns = 0;
  const up = await rawUpstream((socket) => {
    const id = conns++;
    let buffered = '';
    socket.on('error', () => undefined);
    socket.on('data', (d) => {
      buffered += d.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) !== -1) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        const path = head.split(' ')[1];
        log.push({ path, conn: id });
        if (path === '/fault') fault.act(socket);
        else socket.write(OK);
      }
    });
  });
  return { ...up, log };
}

describe('upstream faults, on a fresh and on a reused pooled connection', () => {
  for (const fault of FAULTS) {
    for (const reused of [false, true]) {
      it(`${fault.name}, on a ${reused ? 'reused pooled' : 'fresh'} connection`, async () => {
        const up = await faultyUpstream(fault);
        const proxy = await startProxy({ upstreams: [{ url: up.url }], ...fault.config });
        if (reused) assert.equal((await request(`${proxy.url}/warm`)).status, 200);
        const out = await fetchOutcome(`${proxy.url}/fault`);
        fault.check(out);
        const faulted = up.log.filter((r) => r.path === '/fault');
        assert.equal(faulted.length, 1, 'the request reached the upstream exactly once (no replay)');
        if (reused) assert.equal(faulted[0].conn, up.log[0].conn, 'the fault came on the pooled connection');
        // The pool is healthy after it: the next request is served, on a new connection when the
        // faulted one could not be trusted.
        const after = await request(`${proxy.url}/warm`);
        assert.equal(after.status, 200);
        assert.equal(after.body.toString(), 'ok');
        const last = up.log[up.log.length - 1];
        if (fault.discards) assert.notEqual(last.conn, faulted[0].conn, 'the faulted connection was discarded');
        else assert.equal(last.conn, faulted[0].conn, 'the connection went back to the pool');
      });
    }
  }
});
