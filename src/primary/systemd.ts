/**
 * The sd_notify protocol (systemd.service(5), sd_notify(3)): newline-separated KEY=VALUE
 * assignments in one datagram to the unix socket named by $NOTIFY_SOCKET. Node's dgram has no
 * unix datagram sockets, so the small `unix-dgram` addon sends it (it builds with node-gyp, no
 * libsystemd needed). Without $NOTIFY_SOCKET every call is a no-op.
 */
import { errField, type Logger } from '../log';

interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  on(event: 'error', cb: (err: Error) => void): void;
  close(): void;
}

export class SystemdNotifier {
  private socket: DgramSocket | null = null;
  private watchdog: NodeJS.Timeout | null = null;

  private constructor(
    private readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** A notifier for $NOTIFY_SOCKET, or one that does nothing when the variable is unset. */
  static fromEnv(env: NodeJS.ProcessEnv, logger: Logger): SystemdNotifier {
    const path = env.NOTIFY_SOCKET ?? '';
    const notifier = new SystemdNotifier(path, logger);
    if (path === '') return notifier;
    if (path.startsWith('@')) {
      logger.warn(
        { notifySocket: path },
        'NOTIFY_SOCKET names an abstract socket, which is not supported; systemd will not hear from switchyard',
      );
      return notifier;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const ud = require('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
      notifier.socket = ud.createSocket('unix_dgram');
      notifier.socket.on('error', (err) => logger.warn({ err: errField(err) }, 'sd_notify failed'));
    } catch (err) {
      logger.warn({ err: errField(err) }, 'unix-dgram is not available; systemd notifications are off');
    }
    // WATCHDOG_PID, when set, names the process the watchdog expects to hear from.
    const usec = Number(env.WATCHDOG_USEC ?? 0);
    const pid = env.WATCHDOG_PID === undefined ? process.pid : Number(env.WATCHDOG_PID);
    if (usec > 0 && pid === process.pid) {
      // Half the interval, as sd_watchdog_enabled(3) recommends.
      notifier.watchdog = setInterval(() => notifier.send({ WATCHDOG: '1' }), Math.max(1, Math.floor(usec / 2000)));
      notifier.watchdog.unref();
    }
    return notifier;
  }

  get enabled(): boolean {
    return this.socket !== null;
  }

  ready(status: string): void {
    this.send({ READY: '1', STATUS: status, MAINPID: String(process.pid) });
  }

  reloading(): void {
    // MONOTONIC_USEC lets Type=notify-reload units match the reload; process.hrtime is
    // CLOCK_MONOTONIC on Linux.
    this.send({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n) });
  }

  stopping(): void {
    this.send({ STOPPING: '1' });
  }

  status(text: string): void {
    this.send({ STATUS: text });
  }

  close(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    this.socket?.close();
    this.socket = null;
  }

  private send(fields: Record<string, string>): void {
    if (this.socket === null) return;
    // One assignment per line; a newline inside a value would start a forged assignment.
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
      .join('\n');
    const buf = Buffer.from(text);
    this.socket.send(buf, 0, buf.length, this.path, (err) => {
      if (err) this.logger.warn({ err: errField(err) }, 'sd_notify failed');
    });
  }
}
