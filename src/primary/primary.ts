/**
 * The primary process, started by the CLI: the demo origin when no upstream is configured, the
 * pid and status files, pool membership, the admin listener, then the workers' supervisor
 * (supervisor.ts). It never handles a request and never imports the proxy.
 */
import type { ChildProcess } from 'node:child_process';
import type { ConfigOverrides, ResolvedConfig } from '../config/load';
import { parseHostPort } from '../config/schema';
import { listenFailure, type Logger } from '../log';
import { nameProcess } from '../process-name';
import { AdminServer } from './admin';
import { ControlFiles, pidFileOf } from './control';
import { startDemoOrigin } from './demo-origin';
import { Supervisor, type PrimaryHandle } from './supervisor';

export type { PrimaryHandle };
import { SystemdNotifier } from './systemd';

/** A listener could not open (address in use, not permitted): the CLI says so in one line and exits 2. */
export class ListenError extends Error {}

export interface PrimaryOptions {
  /** Re-reads and validates the configuration (SIGHUP); throws ConfigError when it is bad. */
  reload?: () => ResolvedConfig;
  env?: NodeJS.ProcessEnv;
  /** Where the config came from, for the status file `switchyard reload` reads (control.ts). */
  source?: { configFile: string | null; overrides: ConfigOverrides };
}

export async function runPrimary(
  initial: ResolvedConfig,
  logger: Logger,
  options: PrimaryOptions = {},
): Promise<PrimaryHandle> {
  nameProcess('switchyard: primary', 'switchyard');
  const notifier = SystemdNotifier.fromEnv(options.env ?? process.env, logger);
  let demo: ChildProcess | null = null;
  let demoUrl: string | undefined;
  if (Object.keys(initial.pools).length === 0) {
    const started = await startDemoOrigin();
    demo = started.child;
    demoUrl = `http://127.0.0.1:${started.port}`;
    logger.info({ origin: demoUrl }, 'no upstream configured: serving the built-in demo origin');
  }
  let admin: AdminServer | null = null;
  const control = new ControlFiles(
    pidFileOf(initial, options.env),
    options.source?.configFile ?? null,
    options.source?.overrides ?? {},
    initial,
  );
  const supervisor = new Supervisor(initial, demoUrl, logger, notifier, options.reload, control, () => {
    demo?.kill('SIGTERM');
    admin?.close();
  });
  await supervisor.startMembership();
  if (initial.admin.listen !== undefined) {
    admin = new AdminServer(
      () => supervisor.readiness(),
      () => supervisor.members(),
      logger,
      (method, name, body) => supervisor.faults.handle(method, name, body, () => supervisor.publishFaults()),
    );
    const { host, port } = parseHostPort(initial.admin.listen)!;
    let address: string;
    try {
      address = await admin.listen(host, port);
    } catch (err) {
      demo?.kill('SIGTERM');
      supervisor.stopMembership();
      throw new ListenError(`admin.listen: cannot listen on ${initial.admin.listen}: ${listenFailure(err)}`);
    }
    supervisor.admin = admin;
    logger.info(
      { admin: address },
      `admin listener on http://${address} (/metrics, /healthz, /readyz, /upstreams, /faults)`,
    );
  }
  return supervisor.start();
}
