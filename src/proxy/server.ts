/**
 * The client-facing side of one worker: its listeners (plain TCP, TLS with certificates by SNI,
 * or a redirect to HTTPS), one ClientConnection per socket, client timeouts checked by one sweep,
 * and the graceful drain (stop accepting, finish in-flight requests, close keep-alive
 * connections).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { errField, RarelyLogged, type Logger } from '../log';
import { configFaults, type FaultEntry, type ResolvedConfig } from '../config/load';
import type { ResolvedListener } from '../config/listeners';
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
import { CertificateStore, readCertificateSet } from './certificate-store';
import { AcmeResponder } from './acme-responder';
import { TlsHandshakes, tlsHandlesAvailable, type TlsTransport } from './tls-transport';
import { Http2Front } from './http2-front';
import { Faults } from './faults';
import { Mirror, type MirrorCounters } from './mirror';
import { Recorder } from './recorder';
import { RecordingFile, workerFile } from '../ops/recording';
import { TrustedProxies } from './headers';

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
  /** TLS session ticket keys (48 bytes) shared by the cluster, so any worker resumes any session. */
  ticketKeys?: Buffer;
  /** With `acme` configured: asks the primary for a certificate for a name (on demand). */
  requestCertificate?: (name: string) => void;
  /** This worker's slot number (SWITCHYARD_WORKER_INDEX): seeded faults draw their own sequence per worker. */
  workerIndex?: number;
}

/** One listening socket and what serves it. */
interface Listening {
  readonly config: ResolvedListener;
  readonly server: net.Server;
  readonly handler: ProxyHandler;
  /** Plain TCP connections arrive as handles (tcp-transport.ts), not net.Sockets. */
  readonly onHandles: boolean;
  readonly certificates: CertificateStore | null;
  /** HTTPS on bare handles (tls-transport.ts); null for plain TCP, or HTTPS through tls.Server. */
  readonly handshakes: TlsHandshakes | null;
}

export class ProxyServer implements ClientConnectionOwner {
  private readonly faults: Faults;
  /** Recording files by path, closed at the end of drain(). */
  private readonly recordings = new Map<string, RecordingFile>();
  /** In `listen`'s order. */
  readonly listeners: Listening[] = [];
  /** The first listener's: it accounts for the answers connections give themselves. */
  readonly handler: ProxyHandler;
  readonly pools = new Map<string, UpstreamPool>();
  /** The transform threads, when some route transforms or compresses. */
  readonly transformPool: TransformPool | null = null;
  /** In-process only: the server decides membership and health itself. */
  readonly membership: Membership | null;
  private readonly clients = new ClientList<ClientConnection>();
  private readonly limits: ClientLimits;
  private readonly maxConnections: number;
  private readonly sweepTimer: NodeJS.Timeout;
  private drainPromise: Promise<void> | null = null;
  /** During a drain: checks whether the last connection is gone. */
  private onClientGone: (() => void) | null = null;
  /** The cluster's TLS session ticket keys, when the primary gives them. */
  private ticketKeys: Buffer | null;
  /** Certificates and challenge answers from the primary's ACME manager, when `acme` is configured. */
  readonly acme: AcmeResponder | null;
  /** HTTP/2 sessions, when server.http2 is on and some listener serves HTTPS. */
  private readonly http2: Http2Front | null;
  /** HTTPS listeners offer h2 by ALPN (server.http2); h2c listeners need the front without it. */
  private readonly offerH2: boolean;
  /** Names a handshake may wait for a certificate for: the configured ones, or any (on demand). */
  private readonly acmeWaitsFor: ((name: string) => boolean) | null;
  /** Set once a drain starts: responses then carry Connection: close. */
  draining = false;

  constructor(
    config: ResolvedConfig,
    private readonly logger: Logger,
    options: ProxyServerOptions = {},
  ) {
    this.rarely = new RarelyLogged(logger);
    this.ticketKeys = options.ticketKeys ?? null;
    const acme = config.acme;
    this.acme = acme === undefined ? null : new AcmeResponder(options.requestCertificate ?? null);
    this.acmeWaitsFor =
      acme === undefined
        ? null
        : acme.onDemand !== undefined
          ? () => true
          : (name) => acme.hosts.includes(name.toLowerCase().replace(/\.$/, ''));
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
    this.faults = new Faults(
      config.routes.length,
      options.workerIndex ?? 0,
      config.faultHeaders ? new TrustedProxies(config.trustedProxies) : null,
      metrics === null ? () => undefined : (name, kind) => metrics.countFault(name, kind),
    );
    this.faults.apply(configFaults(config));
    const router = new Router(config.routes, this.pools);
    this.attachTrafficTools(router, config, options.workerIndex ?? 0, metrics);
    const handlerOptions = {
      faults: this.faults,
      router,
      preserveHost: config.preserveHost,
      trustedProxies: config.trustedProxies,
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
      acme: this.acme,
    };
    this.limits = {
      maxBodySize: config.server.maxBodySize,
      keepAliveTimeout: config.server.keepAliveTimeout,
      headersTimeout: config.server.headersTimeout,
      requestTimeout: config.server.requestTimeout,
      maxHeaderSize: config.server.maxHeaderSize,
      upgradeProtocols: config.server.upgradeProtocols.map((p) => p.toLowerCase()),
    };
    this.maxConnections = config.server.maxConnections;
    this.offerH2 = config.server.http2 && config.listeners.some((l) => l.tls !== null);
    this.http2 =
      this.offerH2 || config.listeners.some((l) => l.h2c)
        ? new Http2Front({
            maxHeaderSize: config.server.maxHeaderSize,
            maxBodySize: config.server.maxBodySize,
            keepAliveTimeout: config.server.keepAliveTimeout,
          })
        : null;
    for (const l of config.listeners) {
      const handler = new ProxyHandler({
        ...handlerOptions,
        proto: l.tls ? 'https' : 'http',
        redirect: l.redirect,
        hsts: l.tls?.hsts ?? null,
      });
      this.listeners.push(this.createListener(l, handler, options));
    }
    this.handler = this.listeners[0].handler;
    // One timer checks every client's deadline (keep-alive idle, header and request timeouts)
    // instead of a timer re-armed per request. Resolution: a quarter of the shortest timeout.
    const shortest = Math.min(this.limits.keepAliveTimeout, this.limits.headersTimeout, this.limits.requestTimeout);
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(1000, Math.max(10, Math.floor(shortest / 4))));
    this.sweepTimer.unref();
  }

  private createListener(l: ResolvedListener, handler: ProxyHandler, options: ProxyServerOptions): Listening {
    const bare = handleTransportAvailable && options.clientSockets !== 'net';
    const onHandles = bare && (l.tls === null || tlsHandlesAvailable);
    const onSocket = (socket: net.Socket): void => {
      socket.on('error', () => undefined);
      // server.maxConnections counts one listener; the cap is for all of a worker's listeners.
      if (this.clients.size >= this.maxConnections) {
        socket.destroy();
        this.dropped();
        return;
      }
      const transport = new SocketTransport(socket);
      const conn = new ClientConnection(transport, this.limits, this, handler.handle);
      this.clients.add(conn);
      if (l.h2c) conn.h2c = (s) => this.http2!.accept(s, handler, transport.remoteAddress, null);
      if (this.http2 !== null && (socket as tls.TLSSocket).alpnProtocol === 'h2') {
        this.http2.accept(conn.handOverSession(), handler, transport.remoteAddress, transport.tlsSession);
      }
    };
    let server: net.Server;
    let certificates: CertificateStore | null = null;
    let handshakes: TlsHandshakes | null = null;
    if (l.tls !== null && onHandles) {
      certificates = new CertificateStore(readCertificateSet(l.tls), this.acme?.certificates ?? null);
      handshakes = new TlsHandshakes({
        store: certificates,
        acme: this.acme,
        waitsFor: this.acmeWaitsFor,
        ticketKeys: options.ticketKeys ?? null,
        logger: this.logger,
        http2: this.offerH2,
      });
      // TLS connections arrive as TCP handles too; tls-transport.ts wraps each in TLS.
      server = net.createServer();
    } else if (l.tls !== null) {
      const store = new CertificateStore(readCertificateSet(l.tls), this.acme?.certificates ?? null);
      certificates = store;
      const tlsServer = tls.createServer({
        ...store.defaultOptions,
        ...this.certificateCallbacks(store),
        ...(options.ticketKeys !== undefined ? { ticketKeys: options.ticketKeys } : {}),
        allowHalfOpen: true,
        noDelay: true,
        // A handshake is part of the head a client owes us (Node's own default is 120 s).
        handshakeTimeout: this.limits.headersTimeout,
      });
      tlsServer.on('secureConnection', onSocket);
      tlsServer.on('tlsClientError', (err: Error) => this.logger.debug({ err: errField(err) }, 'TLS handshake failed'));
      server = tlsServer;
    } else if (onHandles) {
      // Plain TCP connections never become net.Sockets: listen() hands their handles to accept().
      server = net.createServer();
    } else {
      server = net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
    }
    // Past the cap a new connection is closed as it is accepted, before it costs anything more
    // (accept() applies the same cap to handles).
    server.maxConnections = this.maxConnections;
    server.on('drop', () => this.dropped());
    return { config: l, server, handler, onHandles, certificates, handshakes };
  }

  /**
   * How a TLS listener picks the protocol and the certificate. Without ACME: HTTP/1.1 and the
   * certificate store. With it, a TLS-ALPN-01 validator gets its challenge certificate, and a
   * name without a certificate may wait for one (the configured names, or any under onDemand).
   */
  private certificateCallbacks(store: CertificateStore): Partial<tls.TlsOptions> {
    const acme = this.acme;
    const waitsFor = this.acmeWaitsFor;
    const http2 = this.offerH2;
    if (acme === null || waitsFor === null)
      return { SNICallback: store.sniCallback, ALPNProtocols: http2 ? ['h2', 'http/1.1'] : ['http/1.1'] };
    return {
      // Called before SNICallback, with the socket as `this` (Node's _tls_wrap).
      ALPNCallback(this: tls.TLSSocket, { servername, protocols }: { servername: string; protocols: string[] }) {
        return acme.selectProtocol(this, servername, protocols, http2);
      },
      SNICallback(this: tls.TLSSocket, servername, cb) {
        acme.choose(this, servername, store, waitsFor, (context) =>
          context === null ? cb(new Error(`no certificate for ${JSON.stringify(servername)}`)) : cb(null, context),
        );
      },
    };
  }

  /**
   * Certificate and key files read again, for every HTTPS listener: new handshakes get the new
   * ones, open connections keep theirs. Throws, changing nothing on that listener, when a pair no
   * longer loads. Returns the files now served.
   */
  reloadCertificates(): string[] {
    const files: string[] = [];
    for (const l of this.listeners) {
      if (l.certificates === null || l.config.tls === null) continue;
      const set = readCertificateSet(l.config.tls);
      l.certificates.replace(set);
      if (l.handshakes !== null) l.handshakes.reloadDefault();
      else (l.server as tls.Server).setSecureContext({ ...l.certificates.defaultOptions });
      files.push(...set.pems.map((p) => p.certPath));
    }
    return files;
  }

  /** The cluster's session ticket keys, rotated by the primary. */
  setTicketKeys(keys: Buffer): void {
    this.ticketKeys = keys;
    for (const l of this.listeners) {
      if (l.handshakes !== null) l.handshakes.setTicketKeys(keys);
      else if (l.certificates !== null) (l.server as tls.Server).setTicketKeys(keys);
    }
  }

  /** Each route's `mirror` and `record`: a shadow pool's copies, and recording files (one per worker and name). */
  private attachTrafficTools(
    router: Router,
    config: ResolvedConfig,
    workerIndex: number,
    metrics: RequestMetrics | null,
  ): void {
    const counters: MirrorCounters | null =
      metrics === null
        ? null
        : {
            count: (route, outcome) => metrics.countMirror(route, outcome),
            compared: (route, match) => metrics.countMirrorCompared(route, match),
          };
    for (const route of router.routes) {
      const c = config.routes[route.index];
      if (c.mirror !== undefined)
        route.mirror = new Mirror(
          route.name,
          c.mirror,
          this.pools.get(c.mirror.pool)!,
          route.requestEdit,
          counters,
          this.logger,
        );
      if (c.record !== undefined) {
        const path = workerFile(c.record.file, workerIndex + 1);
        let file = this.recordings.get(path);
        if (file === undefined) {
          file = new RecordingFile(path, c.record.maxFileSize, c.record.keep, this.logger);
          this.recordings.set(path, file);
        }
        route.recorder = new Recorder(route.name, c.record, file);
      }
    }
  }

  /** The whole fault table, from the primary (config and admin API). */
  applyFaults(entries: readonly FaultEntry[]): void {
    this.faults.apply(entries);
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

  /** A TCP connection, straight from the listening socket: plain, or wrapped in TLS here. */
  private accept(err: number, handle: TcpHandle, l: Listening): void {
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
    if (l.handshakes === null) {
      const transport = new TcpTransport(handle);
      const conn = new ClientConnection(transport, this.limits, this, l.handler.handle);
      this.clients.add(conn);
      if (l.config.h2c) conn.h2c = (s) => this.http2!.accept(s, l.handler, transport.remoteAddress, null);
      return;
    }
    // The handshake is part of the head a client owes us, within server.headersTimeout.
    const transport = l.handshakes.wrapHandle(handle);
    const conn = new ClientConnection(transport, this.limits, this, l.handler.handle, this.limits.headersTimeout);
    this.clients.add(conn);
    if (this.http2 !== null) transport.onHandshake = (alpn) => this.toHttp2(alpn, conn, transport, l.handler);
  }

  /** ALPN chose h2: the connection's socket goes to an HTTP/2 session, before any cleartext is read. */
  private toHttp2(alpn: string | false, conn: ClientConnection, transport: TlsTransport, handler: ProxyHandler): void {
    if (alpn !== 'h2' || this.http2 === null) return;
    const remote = transport.remoteAddress;
    const session = transport.tlsSession;
    this.http2.accept(conn.handOverSession(), handler, remote, session);
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

  /** The first listener on `host`:`port` instead of its configured address (tests, port 0). */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await this.membership?.start();
    return this.listenOne(this.listeners[0], host, port);
  }

  /** Every listener on its configured address, in order. */
  async listenAll(): Promise<Array<{ host: string; port: number }>> {
    await this.membership?.start();
    const out = [];
    for (const [i, l] of this.listeners.entries()) {
      try {
        out.push(await this.listenOne(l, l.config.host, l.config.port));
      } catch (err) {
        // Which listener failed, for the one line the CLI prints (`listen[1]: cannot listen on …`).
        Object.assign(err as object, {
          listener: this.listeners.length === 1 ? 'listen' : `listen[${i}]`,
          address: l.config.address,
        });
        throw err;
      }
    }
    // A redirect names the first HTTPS listener's port as it is (port 0 in the config: the OS's).
    const https = this.listeners.findIndex((l) => l.config.tls !== null);
    if (https !== -1) for (const l of this.listeners) l.handler.setRedirectPort(out[https].port);
    return out;
  }

  private listenOne(l: Listening, host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const server = l.server;
      server.once('error', reject);
      server.listen({ host, port, backlog: 4096 }, () => {
        server.off('error', reject);
        // A cluster worker's TLS listener takes the ticket keys of the first worker that listened
        // on the address (node:cluster's server data); the primary's current ones win.
        if (l.certificates !== null && l.handshakes === null && this.ticketKeys !== null)
          (server as tls.Server).setTicketKeys(this.ticketKeys);
        if (l.onHandles && !acceptHandles(server, (e, h) => this.accept(e, h, l))) {
          reject(new Error('cannot take over the listening socket'));
          return;
        }
        const addr = server.address();
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
      // Done once the listeners are closed and the last client connection is gone. A TLS
      // listener's close() also waits for handshakes in progress, which handshakeTimeout ends on
      // its own: past the drain's deadline, only client connections are waited for.
      let listening = this.listeners.length;
      const deadline = setTimeout(() => {
        listening = 0;
        // Tunnels and responses already streaming may have longer (a reload: timeouts.streamDrain).
        const cut =
          longLivedMs > timeoutMs ? this.clients.toArray().filter((c) => !c.longLived) : this.clients.toArray();
        if (cut.length > 0)
          this.logger.warn({ timeoutMs, connections: cut.length }, 'drain timeout: closing remaining connections');
        for (const c of cut) c.destroy();
        check();
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
      const check = (): void => {
        if (listening > 0 || this.clients.size > 0) return;
        this.onClientGone = null;
        clearTimeout(deadline);
        if (streamDeadline !== null) clearTimeout(streamDeadline);
        clearInterval(this.sweepTimer);
        for (const pool of this.pools.values()) pool.close();
        void this.transformPool?.close().catch(() => undefined);
        // Every recorded line on disk before the worker goes.
        void Promise.all([...this.recordings.values()].map((f) => f.close())).then(() => resolve());
      };
      this.onClientGone = check;
      // HTTP/2: GOAWAY now; open streams finish, their connections close once they have.
      this.http2?.drain();
      for (const l of this.listeners) {
        l.server.close(() => {
          listening--;
          check();
        });
      }
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
