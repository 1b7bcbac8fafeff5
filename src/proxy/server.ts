/**
 * The client-facing listener of one worker: plain TCP or TLS, one ClientConnection per socket,
 * client timeouts checked by one sweep, and the graceful drain (stop accepting, finish in-flight
 * requests, close keep-alive connections).
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { errField, RarelyLogged, type Logger } from '../log';
import type { ResolvedConfig } from '../config/load';
import type { SwitchyardError } from '../errors';
import type { AccessLog } from '../ops/access-log';
import { RequestMetrics } from '../ops/metrics';
import { UpstreamPool } from '../upstream/pool';
import { Membership, type MembershipSnapshot } from '../upstream/membership';
import { ClientConnection, type ClientConnectionOwner, type ClientLimits } from './client-connection';
import type { ClientRequest } from './client-request';
import { ClientList } from './client-list';
import { acceptHandles } from './accept';
import { SocketTransport } from './socket-transport';
import { handleTransportAvailable, TcpTransport, type TcpHandle } from './tcp-transport';
import { ProxyHandler } from './handler';
import { TransformPool } from '../transform/pool';
import type { BodyContext } from './response-body';
import { Router } from './router';

/** How long an idle keep-alive connection may stay open once a drain starts. */
const DRAIN_IDLE_GRACE_MS = 1000;

export interface ProxyServerOptions {
  /** Extra header lines for every upstream request (demo mode only). */
  extraRequestHeaders?: string;
  accessLog?: AccessLog | null;
  /** Record Prometheus metrics (the cluster worker does; in-process tests need not). */
  metrics?: boolean;
  /**
   * Pool members and health come from outside (the cluster's primary): the first snapshot, and
   * where failures seen here are reported. Without it, the server runs its own Membership.
   */
  membership?: { snapshot: MembershipSnapshot; reportFailure(pool: string, url: string): void };
  /**
   * Plain TCP clients on their handles (the default where Node has the bindings), or on
   * net.Socket, the fallback where it has not; tests run both.
   */
  clientSockets?: 'handle' | 'net';
}

export class ProxyServer implements ClientConnectionOwner {
  readonly server: net.Server;
  readonly handler: ProxyHandler;
  readonly pools = new Map<string, UpstreamPool>();
  /** The transform threads, when some route transforms or compresses. */
  readonly transformPool: TransformPool | null = null;
  /** In-process only: the server decides membership and health itself. */
  readonly membership: Membership | null;
  private readonly clients = new ClientList<ClientConnection>();
  private readonly limits: ClientLimits;
  private readonly maxConnections: number;
  /** Plain TCP connections arrive as handles (client-transport.ts), not net.Sockets. */
  private readonly onHandles: boolean;
  private readonly sweepTimer: NodeJS.Timeout;
  private drainPromise: Promise<void> | null = null;
  /** During a drain: checks whether the last connection is gone. */
  private onClientGone: (() => void) | null = null;
  /** Set once a drain starts: responses then carry Connection: close. */
  draining = false;

  constructor(
    config: ResolvedConfig,
    private readonly logger: Logger,
    options: ProxyServerOptions = {},
  ) {
    this.rarely = new RarelyLogged(logger);
    if (config.routes.length === 0) throw new Error('ProxyServer needs at least one route and pool');
    const poolOptions = (pool: {
      maxConnections?: number | undefined;
      queueTimeout?: number | undefined;
      maxQueue?: number | undefined;
    }) => ({
      maxConnections: pool.maxConnections ?? config.pool.maxConnections,
      queueTimeout: pool.queueTimeout ?? config.pool.queueTimeout,
      maxQueue: pool.maxQueue ?? config.pool.maxQueue,
      timeouts: {
        connect: config.timeouts.connect,
        responseHeader: config.timeouts.responseHeader,
        idle: config.timeouts.idle,
        keepAlive: config.pool.keepAliveTimeout,
      },
    });
    let report: (pool: string, url: string) => void;
    let snapshot: MembershipSnapshot;
    if (options.membership !== undefined) {
      this.membership = null;
      snapshot = options.membership.snapshot;
      report = (pool, url) => options.membership!.reportFailure(pool, url);
    } else {
      const membership = new Membership(config.pools, logger);
      this.membership = membership;
      snapshot = membership.snapshot();
      report = (pool, url) => membership.reportFailure(pool, url);
      membership.onChange((s) => this.applyMembership(s));
    }
    for (const [name, pool] of Object.entries(config.pools)) {
      this.pools.set(name, new UpstreamPool(name, pool, poolOptions(pool), report));
    }
    this.applyMembership(snapshot);
    const metrics =
      options.metrics === true
        ? new RequestMetrics(
            () => this.poolViews(),
            () => this.clients.size,
          )
        : null;
    let body: BodyContext | null = null;
    if (config.routes.some((r) => r.transform !== undefined || r.compress !== undefined)) {
      this.transformPool = new TransformPool({ ...config.transformPool, workers: config.workerCount });
      body = {
        pool: this.transformPool,
        onOverload: config.transformPool.onOverload,
        logger,
        count: metrics === null ? () => undefined : (outcome) => metrics.countTransform(outcome),
      };
    }
    this.handler = new ProxyHandler({
      router: new Router(config.routes, this.pools),
      preserveHost: config.preserveHost,
      trustedProxies: config.trustedProxies,
      proto: config.tls ? 'https' : 'http',
      logger,
      ...(options.extraRequestHeaders !== undefined ? { extraRequestHeaders: options.extraRequestHeaders } : {}),
      accessLog: options.accessLog ?? null,
      maxBodySize: config.server.maxBodySize,
      tunnel: {
        connectTimeout: config.timeouts.connect,
        responseHeaderTimeout: config.timeouts.responseHeader,
        idleTimeout: config.timeouts.idle,
      },
      metrics,
      body,
    });
    this.limits = {
      maxBodySize: config.server.maxBodySize,
      keepAliveTimeout: config.server.keepAliveTimeout,
      headersTimeout: config.server.headersTimeout,
      requestTimeout: config.server.requestTimeout,
      maxHeaderSize: config.server.maxHeaderSize,
      upgradeProtocols: config.server.upgradeProtocols.map((p) => p.toLowerCase()),
    };
    this.maxConnections = config.server.maxConnections;
    this.onHandles = !config.tls && handleTransportAvailable && options.clientSockets !== 'net';
    const onSocket = (socket: net.Socket): void => {
      socket.on('error', () => undefined);
      this.clients.add(new ClientConnection(new SocketTransport(socket), this.limits, this, this.handler.handle));
    };
    if (config.tls) {
      this.server = tls.createServer({
        cert: readFileSync(config.tls.cert),
        key: readFileSync(config.tls.key),
        allowHalfOpen: true,
        noDelay: true,
        ALPNProtocols: ['http/1.1'],
      });
      this.server.on('secureConnection', onSocket);
      this.server.on('tlsClientError', (err: Error) =>
        this.logger.debug({ err: errField(err) }, 'TLS handshake failed'),
      );
    } else if (this.onHandles) {
      // Plain TCP connections never become net.Sockets: listen() hands their handles to accept().
      this.server = net.createServer();
    } else {
      this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
    }
    // Past the cap a new connection is closed as it is accepted, before it costs anything more
    // (accept() applies the same cap to handles).
    this.server.maxConnections = this.maxConnections;
    this.server.on('drop', () => this.dropped());
    // One timer checks every client's deadline (keep-alive idle, header and request timeouts)
    // instead of a timer re-armed per request. Resolution: a quarter of the shortest timeout.
    const shortest = Math.min(this.limits.keepAliveTimeout, this.limits.headersTimeout, this.limits.requestTimeout);
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(1000, Math.max(10, Math.floor(shortest / 4))));
    this.sweepTimer.unref();
  }

  /** New members or health from the membership (the primary's, or our own). */
  applyMembership(snapshot: MembershipSnapshot): void {
    for (const [name, members] of Object.entries(snapshot)) this.pools.get(name)?.apply(members);
  }

  private poolViews(): Array<{
    origin: string;
    pool: string;
    stats(): { open: number; idle: number; pending: number };
  }> {
    const views = [];
    for (const g of this.pools.values()) {
      for (const m of g.members)
        views.push({ origin: m.target.origin, pool: g.name, stats: () => m.connections.stats() });
    }
    return views;
  }

  /** Client connections open now. */
  get connections(): number {
    return this.clients.size;
  }

  answeredError(conn: ClientConnection, err: SwitchyardError, req: ClientRequest | null): void {
    this.handler.accountConnectionError(conn.remoteAddress, err, req);
  }

  removeClient(conn: ClientConnection): void {
    this.clients.delete(conn);
    if (this.clients.size === 0) this.onClientGone?.();
  }

  /** A plain TCP connection, straight from the listening socket. */
  private accept(err: number, handle: TcpHandle): void {
    if (err !== 0) {
      // EMFILE and the like: the connection stays in the backlog for the next try.
      this.warnRarely('accept', { errno: err }, 'accept failed');
      return;
    }
    // Past the cap a new connection is closed as it is accepted, before it costs anything more.
    if (this.clients.size >= this.maxConnections) {
      handle.close();
      this.dropped();
      return;
    }
    this.clients.add(new ClientConnection(new TcpTransport(handle), this.limits, this, this.handler.handle));
  }

  private dropped(): void {
    this.warnRarely(
      'drop',
      { maxConnections: this.maxConnections },
      'connection dropped: server.maxConnections reached',
    );
  }

  private readonly rarely: RarelyLogged;

  private warnRarely(kind: string, fields: Record<string, unknown>, msg: string): void {
    this.rarely.warn(kind, fields, msg);
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await this.membership?.start();
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 4096 }, () => {
        this.server.off('error', reject);
        if (this.onHandles && !acceptHandles(this.server, (e, h) => this.accept(e, h))) {
          reject(new Error('cannot take over the listening socket'));
          return;
        }
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr !== null ? { host: addr.address, port: addr.port } : { host, port });
      });
    });
  }

  /**
   * Stop accepting, let in-flight requests finish within `timeoutMs`, then cut what is left.
   * Idempotent: a second SIGTERM during a drain waits on the same one.
   */
  drain(timeoutMs: number, longLivedMs = timeoutMs): Promise<void> {
    if (this.drainPromise !== null) return this.drainPromise;
    this.draining = true;
    this.membership?.stop();
    this.drainPromise = new Promise<void>((resolve) => {
      let streamDeadline: NodeJS.Timeout | null = null;
      const deadline = setTimeout(() => {
        // Tunnels and responses already streaming may have longer (a reload: timeouts.streamDrain).
        const cut =
          longLivedMs > timeoutMs ? this.clients.toArray().filter((c) => !c.longLived) : this.clients.toArray();
        if (cut.length > 0)
          this.logger.warn({ timeoutMs, connections: cut.length }, 'drain timeout: closing remaining connections');
        for (const c of cut) c.destroy();
        if (longLivedMs <= timeoutMs || this.clients.size === 0) return;
        this.logger.info(
          { connections: this.clients.size, streamDrainMs: longLivedMs },
          'drain: tunnels and streams go on until they end or timeouts.streamDrain passes',
        );
        streamDeadline = setTimeout(() => {
          this.logger.warn(
            { timeoutMs: longLivedMs, connections: this.clients.size },
            'stream drain timeout: closing tunnels and streams',
          );
          for (const c of this.clients.toArray()) c.destroy();
        }, longLivedMs - timeoutMs);
      }, timeoutMs);
      // Done once the listener is closed (for TLS, net also waits for handshakes in progress)
      // and the last client connection is gone.
      let listenerClosed = false;
      const check = (): void => {
        if (!listenerClosed || this.clients.size > 0) return;
        this.onClientGone = null;
        clearTimeout(deadline);
        if (streamDeadline !== null) clearTimeout(streamDeadline);
        clearInterval(this.sweepTimer);
        for (const pool of this.pools.values()) pool.close();
        void this.transformPool?.close().catch(() => undefined);
        resolve();
      };
      this.onClientGone = check;
      this.server.close(() => {
        listenerClosed = true;
        check();
      });
      // Busy connections end after their response (which says Connection: close); idle ones
      // within DRAIN_IDLE_GRACE_MS, answering with Connection: close whatever arrives meanwhile.
      this.clients.forEach((c) => c.drainIdle(Math.min(DRAIN_IDLE_GRACE_MS, timeoutMs)));
    });
    return this.drainPromise;
  }

  private sweep(): void {
    const now = Date.now();
    this.clients.forEach((c) => c.checkDeadline(now));
  }
}
