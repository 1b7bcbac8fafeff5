/**
 * Real sockets on port 0 for every test: upstreams (node:http, or raw net where they must
 * misbehave), the proxy in-process, and the CLI as a real cluster.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import pino from 'pino';
import { resolveParsed, validate, type ResolvedConfig } from '../../src/config/load';
import { parseHostPort } from '../../src/config/schema';
import { ProxyServer, type ProxyServerOptions } from '../../src/proxy/server';
import type { MemberConnections } from '../../src/upstream/connection-pool';

export const ROOT = resolve(__dirname, '../../..');
export const FIXTURES = resolve(ROOT, 'test/fixtures');
export const CLI = resolve(ROOT, 'dist/src/cli.js');

/** Track everything a test opens, so afterEach can close it even when the test failed. */
const cleanups: Array<() => unknown> = [];
export function onCleanup(fn: () => unknown): void {
  cleanups.push(fn);
}
export async function runCleanups(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch {
      // best effort
    }
  }
}

export interface Upstream {
  port: number;
  url: string;
  server: net.Server;
  /** Every TCP connection the upstream accepted. */
  connections: net.Socket[];
}

function track(server: net.Server): net.Socket[] {
  const connections: net.Socket[] = [];
  server.on('connection', (s: net.Socket) => connections.push(s));
  onCleanup(() => {
    for (const s of connections) s.destroy();
    return new Promise((r) => server.close(() => r(undefined)));
  });
  return connections;
}

export async function httpUpstream(handler: http.RequestListener, scheme = 'http'): Promise<Upstream> {
  const server = http.createServer(handler);
  return listenUpstream(server, scheme);
}

export async function listenUpstream(server: net.Server, scheme = 'http'): Promise<Upstream> {
  const connections = track(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { port, url: `${scheme}://127.0.0.1:${port}`, server, connections };
}

/** A raw TCP upstream: `onData` sees each request's bytes and writes whatever it likes. */
export async function rawUpstream(onConnection: (socket: net.Socket) => void): Promise<Upstream> {
  const server = net.createServer(onConnection);
  return listenUpstream(server);
}

export const silentLogger = pino({ level: 'silent' });

export interface Proxy {
  port: number;
  url: string;
  server: ProxyServer;
}

/** A config as loadConfig would give it, from an object instead of a file. */
export function resolveConfig(config: Record<string, unknown>): ResolvedConfig {
  return resolveParsed(validate({ listen: '127.0.0.1:0', ...config }), ROOT, 'test config', 1);
}

/** The first member's connection pool of a pool ("default" unless named). */
export function memberPool(proxy: Proxy, pool = 'default', index = 0): MemberConnections {
  return proxy.server.pools.get(pool)!.members[index].connections;
}

/** The proxy in-process on 127.0.0.1:0, with a config validated by the real schema. */
export async function startProxy(config: Record<string, unknown>, options: ProxyServerOptions = {}): Promise<Proxy> {
  const resolved = resolveConfig(config);
  const server = new ProxyServer(resolved, silentLogger, options);
  const addr = await server.listen('127.0.0.1', 0);
  onCleanup(() => server.drain(10));
  return { port: addr.port, url: `http://127.0.0.1:${addr.port}`, server };
}

/** The proxy in-process with every listener of `config.listen` on its own address (use port 0). */
export async function startProxyListeners(
  config: Record<string, unknown>,
  options: ProxyServerOptions = {},
): Promise<{ server: ProxyServer; ports: number[] }> {
  const server = new ProxyServer(resolveConfig(config), silentLogger, options);
  onCleanup(() => server.drain(10));
  const addrs = await server.listenAll();
  return { server, ports: addrs.map((a) => a.port) };
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

/** One request on a fresh connection (no agent pooling between tests). */
export function request(
  url: string,
  options: http.RequestOptions = {},
  body?: Buffer | string,
): Promise<SimpleResponse> {
  return new Promise((resolvePromise, reject) => {
    const req = http.request(url, { agent: false, ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolvePromise({
          status: res.statusCode!,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: Buffer.concat(chunks),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Write raw bytes, collect everything until the peer closes or `until` says enough. */
export function rawExchange(
  port: number,
  bytes: string | Buffer,
  until?: (received: string) => boolean,
  timeoutMs = 5000,
): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw exchange timed out; received so far: ${JSON.stringify(received)}`));
    }, timeoutMs);
    socket.on('data', (d) => {
      received += d.toString('latin1');
      if (until?.(received)) {
        clearTimeout(timer);
        socket.destroy();
        resolvePromise(received);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolvePromise(received);
    });
    socket.on('error', () => undefined);
    socket.write(bytes);
  });
}

/** True once `received` holds one complete response with a Content-Length body. */
export function completeResponse(received: string): boolean {
  const end = received.indexOf('\r\n\r\n');
  if (end === -1) return false;
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(received.slice(0, end));
  return m !== null && received.length >= end + 4 + Number(m[1]);
}

/** A config file of `text` in a new temporary folder; returns its path. */
export function configFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'swy-config-')), 'switchyard.yaml');
  writeFileSync(file, text);
  return file;
}

/** A loopback port nothing listens on (it was just released). */
export async function closedPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Writes 64 KiB chunks to `out` as fast as it takes them, waiting for 'drain' whenever it asks to,
 * until `total` bytes are written or `stop()` says enough; then ends it when `end`. Returns the
 * count of bytes written so far, to be read at any time: what backpressure let through.
 */
export function pump(
  out: Writable,
  total: number,
  options: { end?: boolean; stop?: () => boolean } = {},
): () => number {
  const chunk = Buffer.alloc(64 * 1024, 97);
  let written = 0;
  const more = (): void => {
    while (written < total) {
      if (options.stop?.() === true) return;
      written += chunk.length;
      if (!out.write(chunk)) {
        out.once('drain', more);
        return;
      }
    }
    if (options.end === true) out.end();
  };
  more();
  return () => written;
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll until `check` is truthy (no timing assertion: mocha's timeout bounds it). */
export async function waitFor<T>(check: () => T | Promise<T>, intervalMs = 20): Promise<NonNullable<T>> {
  for (;;) {
    const v = await check();
    if (v) return v;
    await delay(intervalMs);
  }
}

export interface Cli {
  child: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  /** The same lines as they were written. */
  lines: string[];
  stderr: () => string;
  port: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  workerPids: () => number[];
}

/**
 * Start `switchyard` as a real cluster; resolves once it logs that it listens. `nodeFlags` go to
 * the primary's node, and from it to every worker.
 */
export async function startCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  nodeFlags: string[] = [],
  options: { detached?: boolean; configListens?: boolean } = {},
): Promise<Cli> {
  // Port 0 unless the test names its own listeners (`--listen` may repeat: each is one), on the
  // command line or (configListens) in its config file.
  const listen =
    args.includes('--listen') || args.includes('-l') || options.configListens === true
      ? []
      : ['--listen', '127.0.0.1:0'];
  const child = spawn(process.execPath, [...nodeFlags, CLI, ...listen, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
    detached: options.detached === true,
  });
  const logs: Array<Record<string, unknown>> = [];
  const lines: string[] = [];
  let stderr = '';
  let buffered = '';
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    let i: number;
    while ((i = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      lines.push(line);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      for (const pid of pidsOf(logs)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await exited;
    }
  });
  const ready = await Promise.race([
    waitFor(() => logs.find((l) => l.event === 'listening' && typeof l.listen === 'string')),
    exited.then((e) => {
      const said = logs.map((l) => String(l.msg)).join(' | ');
      throw new Error(`switchyard exited early (${JSON.stringify(e)}): ${stderr} ${said}`);
    }),
  ]);
  const port = parseHostPort(String(ready.listen))!.port;
  return { child, logs, lines, stderr: () => stderr, port, exited, workerPids: () => pidsOf(logs) };
}

/** Pids of workers started and not yet reported dead, from the primary's log. */
function pidsOf(logs: Array<Record<string, unknown>>): number[] {
  const alive = new Set<number>();
  for (const l of logs) {
    if (typeof l.workerPid !== 'number') continue;
    if (l.event === 'worker-started') alive.add(l.workerPid);
    if (l.event === 'worker-died' || l.event === 'worker-exited') alive.delete(l.workerPid);
  }
  return [...alive];
}
