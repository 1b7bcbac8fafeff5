/**
 * gRPC end to end: @grpc/grpc-js on both sides, through the proxy (h2c listener or TLS with ALPN
 * h2, to an h2c:// upstream). Messages are JSON, so no .proto is needed: the service is defined
 * with its serializers, as grpc-js allows.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { FIXTURES, onCleanup, startProxy, startProxyListeners, waitFor } from '../support/helpers';

interface Msg {
  text: string;
  n?: number;
}

const json = {
  serialize: (m: Msg): Buffer => Buffer.from(JSON.stringify(m)),
  deserialize: (b: Buffer): Msg => JSON.parse(b.toString()) as Msg,
};

function method(name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Msg, Msg> {
  return {
    path: `/test.Echo/${name}`,
    requestStream,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}

const SERVICE = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition;

const EchoClient = grpc.makeGenericClientConstructor(SERVICE, 'Echo');

type Handlers = Partial<Record<keyof typeof SERVICE, grpc.UntypedHandleCall>>;

const DEFAULT_HANDLERS: Handlers = {
  unary: ((call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
    if (call.request.text === 'fail') {
      cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
      return;
    }
    const meta = new grpc.Metadata();
    meta.set('x-served-by', 'upstream');
    call.sendMetadata(meta);
    cb(null, { text: `echo ${call.request.text}`, n: Number(call.metadata.get('x-n')[0] ?? 0) });
  }) as grpc.UntypedHandleCall,
  serverStream: ((call: grpc.ServerWritableStream<Msg, Msg>) => {
    for (let i = 0; i < (call.request.n ?? 0); i++) call.write({ text: call.request.text, n: i });
    call.end();
  }) as grpc.UntypedHandleCall,
  clientStream: ((call: grpc.ServerReadableStream<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
    const got: string[] = [];
    call.on('data', (m: Msg) => got.push(m.text));
    call.on('end', () => cb(null, { text: got.join(','), n: got.length }));
  }) as grpc.UntypedHandleCall,
  bidi: ((call: grpc.ServerDuplexStream<Msg, Msg>) => {
    call.on('data', (m: Msg) => call.write({ text: m.text.toUpperCase() }));
    call.on('end', () => call.end());
  }) as grpc.UntypedHandleCall,
};

async function grpcUpstream(handlers: Handlers = {}): Promise<{ url: string }> {
  const server = new grpc.Server();
  server.addService(SERVICE, { ...DEFAULT_HANDLERS, ...handlers });
  const port = await new Promise<number>((ok, fail) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(err) : ok(p))),
  );
  onCleanup(() => server.forceShutdown());
  return { url: `h2c://127.0.0.1:${port}` };
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function client(address: string, tls = false): Client {
  const c = tls
    ? new EchoClient(address, grpc.credentials.createSsl(readFileSync(resolve(FIXTURES, 'ca.pem'))), {
        'grpc.ssl_target_name_override': 'localhost',
      })
    : new EchoClient(address, grpc.credentials.createInsecure());
  onCleanup(() => c.close());
  return c as unknown as Client;
}

function unary(c: Client, msg: Msg, options: { deadlineMs?: number; meta?: grpc.Metadata } = {}): Promise<Msg> {
  return new Promise((ok, fail) => {
    const callOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
    c.unary(msg, options.meta ?? new grpc.Metadata(), callOptions, (err: grpc.ServiceError | null, res: Msg) =>
      err ? fail(err) : ok(res),
    );
  });
}

/** An h2c listener in front of `upstream` (gRPC without TLS). */
async function h2cProxy(upstream: string, extra: Record<string, unknown> = {}): Promise<string> {
  const { ports } = await startProxyListeners({
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    upstreams: [{ url: upstream }],
    ...extra,
  });
  return `127.0.0.1:${ports[0]}`;
}

async function status(p: Promise<unknown>): Promise<grpc.ServiceError> {
  const err = await p.then(
    () => null,
    (e: grpc.ServiceError) => e,
  );
  assert.ok(err !== null, 'the call was expected to fail');
  return err;
}

describe('gRPC through the proxy (@grpc/grpc-js on both sides)', () => {
  it('unary calls, with metadata both ways, over h2c and over TLS', async () => {
    const up = await grpcUpstream();
    const plain = client(await h2cProxy(up.url));
    const meta = new grpc.Metadata();
    meta.set('x-n', '7');
    assert.deepEqual(await unary(plain, { text: 'hi' }, { meta }), { text: 'echo hi', n: 7 });
    const proxy = await startProxy({
      upstreams: [{ url: up.url }],
      tls: { cert: resolve(FIXTURES, 'server.pem'), key: resolve(FIXTURES, 'server-key.pem') },
    });
    const secure = client(`localhost:${proxy.port}`, true);
    assert.deepEqual(await unary(secure, { text: 'tls' }), { text: 'echo tls', n: 0 });
  });

  it('server, client and bidirectional streaming', async () => {
    const up = await grpcUpstream();
    const c = client(await h2cProxy(up.url));
    const streamed = await new Promise<Msg[]>((ok, fail) => {
      const got: Msg[] = [];
      const call = c.serverStream({ text: 's', n: 50 }) as grpc.ClientReadableStream<Msg>;
      call.on('data', (m: Msg) => got.push(m));
      call.on('end', () => ok(got));
      call.on('error', fail);
    });
    assert.deepEqual(
      streamed.map((m) => m.n),
      Array.from({ length: 50 }, (_, i) => i),
    );
    const summed = await new Promise<Msg>((ok, fail) => {
      const call = c.clientStream((err: grpc.ServiceError | null, res: Msg) =>
        err ? fail(err) : ok(res),
      ) as grpc.ClientWritableStream<Msg>;
      for (const t of ['a', 'b', 'c']) call.write({ text: t });
      call.end();
    });
    assert.deepEqual(summed, { text: 'a,b,c', n: 3 });
    const echoed = await new Promise<string[]>((ok, fail) => {
      const got: string[] = [];
      const call = c.bidi() as grpc.ClientDuplexStream<Msg, Msg>;
      call.on('data', (m: Msg) => {
        got.push(m.text);
        // Each answer asks for the next message: the two directions really interleave.
        if (got.length < 5) call.write({ text: `m${got.length}` });
        else call.end();
      });
      call.on('end', () => ok(got));
      call.on('error', fail);
      call.write({ text: 'm0' });
    });
    assert.deepEqual(echoed, ['M0', 'M1', 'M2', 'M3', 'M4']);
  });

  it("relays the upstream's own status and message (trailers intact)", async () => {
    const up = await grpcUpstream();
    const c = client(await h2cProxy(up.url));
    const err = await status(unary(c, { text: 'fail' }));
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'no such thing');
  });

  it("the proxy's own failures are gRPC statuses: UNAVAILABLE for a member that is down, DEADLINE_EXCEEDED for a timeout", async () => {
    const down = client(await h2cProxy('h2c://127.0.0.1:1'));
    const unavailable = await status(unary(down, { text: 'x' }));
    assert.equal(unavailable.code, grpc.status.UNAVAILABLE);
    assert.match(unavailable.details, /SWY_ERR_UPSTREAM_CONNECT/);
    const silent = await grpcUpstream({ unary: (() => undefined) as grpc.UntypedHandleCall });
    const slow = client(await h2cProxy(silent.url, { timeouts: { responseHeader: 200 } }));
    const deadline = await status(unary(slow, { text: 'x' }));
    assert.equal(deadline.code, grpc.status.DEADLINE_EXCEEDED);
    assert.match(deadline.details, /SWY_ERR_UPSTREAM_HEADERS_TIMEOUT/);
    const noRoute = client(
      `127.0.0.1:${
        (
          await startProxyListeners({
            listen: [{ address: '127.0.0.1:0', h2c: true }],
            pools: { a: { members: [{ url: silent.url }] } },
            routes: [{ match: { path: '/other/' }, pool: 'a' }],
          })
        ).ports[0]
      }`,
    );
    assert.equal((await status(unary(noRoute, { text: 'x' }))).code, grpc.status.UNIMPLEMENTED);
  });

  it('grpc-timeout bounds the upstream wait: the upstream call is cancelled when the deadline passes', async () => {
    let cancelled = false;
    const silent = await grpcUpstream({
      unary: ((call: grpc.ServerUnaryCall<Msg, Msg>) => {
        call.on('cancelled', () => (cancelled = true));
      }) as grpc.UntypedHandleCall,
    });
    // The proxy's own responseHeader timeout is far away: only the call's deadline can end it.
    const c = client(await h2cProxy(silent.url, { timeouts: { responseHeader: 60_000 } }));
    const err = await status(unary(c, { text: 'x' }, { deadlineMs: 300 }));
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => cancelled);
  });
});
