/**
 * The client-facing listener of one worker: HTTP or HTTPS, client timeouts and limits, and the
 * graceful drain (stop accepting, finish in-flight requests, close keep-alive connections).
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../config/load';
import { UpstreamPool, targetFromConfig } from '../upstream/pool';
import { ProxyHandler } from './handler';

export interface ProxyServerOptions {
  /** Extra header lines for every upstream request, "Name: value\r\n" (demo mode only). */
  extraRequestHeaders?: string;
}

export class ProxyServer {
  readonly server: http.Server;
  readonly handler: ProxyHandler;
  readonly pools: UpstreamPool[];
  private draining: Promise<void> | null = null;

  constructor(config: ResolvedConfig, private readonly logger: Logger, options: ProxyServerOptions = {}) {
    if (config.upstreams === undefined || config.upstreams.length === 0) {
      throw new Error('ProxyServer needs at least one upstream');
    }
    const poolOptions = {
      maxConnections: config.pool.maxConnections,
      queueTimeout: config.pool.queueTimeout,
      timeouts: {
        connect: config.timeouts.connect,
        responseHeader: config.timeouts.responseHeader,
        idle: config.timeouts.idle,
        keepAlive: config.pool.keepAliveTimeout,
      },
    };
    this.pools = config.upstreams.map((u) => new UpstreamPool(targetFromConfig(u), poolOptions));
    this.handler = new ProxyHandler({
      pools: this.pools,
      preserveHost: config.preserveHost,
      trustedProxies: config.trustedProxies,
      proto: config.tls ? 'https' : 'http',
      logger,
      ...(options.extraRequestHeaders !== undefined ? { extraRequestHeaders: options.extraRequestHeaders } : {}),
    });
    const serverOptions: http.ServerOptions = {
      keepAliveTimeout: config.server.keepAliveTimeout,
      headersTimeout: config.server.headersTimeout,
      requestTimeout: config.server.requestTimeout,
      maxHeaderSize: config.server.maxHeaderSize,
      noDelay: true,
    };
    this.server = config.tls
      ? https.createServer({ ...serverOptions, cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }, this.handler.handle)
      : http.createServer(serverOptions, this.handler.handle);
    // A reverse proxy does not tunnel; without this listener Node would drop the socket unanswered.
    this.server.on('connect', (_req: http.IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n'
        + 'Content-Length: 0\r\nConnection: close\r\n\r\n');
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 4096 }, () => {
        this.server.off('error', reject);
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr !== null ? { host: addr.address, port: addr.port } : { host, port });
      });
    });
  }

  /**
   * Stop accepting, let in-flight requests finish within `timeoutMs`, then cut what is left.
   * Idempotent: a second SIGTERM during a drain waits on the same one.
   */
  drain(timeoutMs: number): Promise<void> {
    if (this.draining !== null) return this.draining;
    this.handler.draining = true;
    this.draining = new Promise<void>((resolve) => {
      const server = this.server;
      // Responses begun before the drain started keep their connection alive; close each one
      // as soon as it goes idle. Those begun after carry Connection: close.
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => {
        this.logger.warn({ timeoutMs }, 'drain timeout: closing remaining connections');
        server.closeAllConnections();
      }, timeoutMs);
      server.close(() => {
        clearInterval(sweep);
        clearTimeout(deadline);
        for (const pool of this.pools) pool.close();
        resolve();
      });
      server.closeIdleConnections();
    });
    return this.draining;
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    // Node's default answers 400/408/431 for parse errors and timeouts; keep that, and make sure
    // a socket that can no longer be written to is released.
    const inFlight = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const text = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
    const body = `${status} ${text}\n`;
    socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n`
      + `Connection: close\r\n\r\n${body}`);
    this.logger.debug({ code: err.code, status }, 'client error');
  }
}
