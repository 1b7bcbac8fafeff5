#!/usr/bin/env node
/**
 * switchyard's command line: flags and config file → validated config → the primary process
 * (or `check`, which validates and exits). Exit codes: 0 ok, 1 runtime failure, 2 bad usage or
 * bad config.
 */
import { parseArgs } from 'node:util';
import { ConfigError } from './errors';
import { loadConfig, type ConfigOverrides } from './config/load';
import { createLogger } from './log';
import { resolve } from 'node:path';
import { pidFileOf, readStatus, runningPid } from './primary/control';
import { ListenError, runPrimary } from './primary/primary';
import { REPLAY_USAGE, replayCommand } from './replay/command';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../package.json') as { version: string };

export const USAGE = `switchyard ${version}: a reverse proxy for HTTP/1.1

Usage:
  switchyard [--config FILE] [--listen HOST:PORT]... [--upstream URL]... [--cert FILE --key FILE]
             [--workers N] [--admin HOST:PORT]
  switchyard check --config FILE [--listen ...] [--upstream ...] [--workers ...]
  switchyard reload [--config FILE] [--pid-file FILE]
  switchyard stop [--config FILE] [--pid-file FILE]
  switchyard replay FILE... --target URL [--speed X | --rate N] [--duration S] [--json FILE] [--compare FILE]

Options:
  -c, --config FILE        YAML config file (see config.schema.json); flags override it
  -l, --listen HOST:PORT   address to listen on (default 127.0.0.1:8000); repeat for several
  -u, --upstream URL       upstream origin, http://, https:// or h2c://; repeat for several (taken in turn).
                           Without one, a built-in demo origin is served.
      --cert FILE          serve HTTPS with this PEM certificate chain (tls.cert), with --key
      --key FILE           the certificate's PEM private key (tls.key)
  -w, --workers N|auto     worker processes (default auto: one per CPU)
      --admin HOST:PORT    admin listener: /metrics, /healthz, /readyz, /upstreams, /faults
                           (a bare PORT means 127.0.0.1)
      --pid-file FILE      where the primary writes its pid (and status); reload and stop read it
  -h, --help               show this help
  -v, --version            print the version

Commands:
  check                    validate the configuration and exit (0 valid, 2 invalid)
  reload                   validate the running instance's configuration, then reload it and
                           report the outcome (0 reloaded, 1 failed, 2 refused as invalid)
  stop                     stop the running instance gracefully and wait until it has exited
  replay                   replay a recording (a route's \`record\`) as load against a target, and
                           print latency per route (\`switchyard replay --help\`)
`;

const COMMANDS = ['check', 'reload', 'stop'] as const;
type Command = (typeof COMMANDS)[number] | 'run' | 'help' | 'version';

export function parseCommandLine(argv: string[]): { command: Command; file?: string; overrides: ConfigOverrides } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string', short: 'l', multiple: true },
      admin: { type: 'string' },
      upstream: { type: 'string', short: 'u', multiple: true },
      workers: { type: 'string', short: 'w' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'pid-file': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  const named = positionals[0] as (typeof COMMANDS)[number] | undefined;
  if (positionals.length > 1 || (named !== undefined && !COMMANDS.includes(named))) {
    throw new ConfigError(
      `unknown command ${JSON.stringify(positionals.join(' '))}; expected no command, "check", "reload", "stop" or "replay"`,
    );
  }
  const command: Command = values.help ? 'help' : values.version ? 'version' : (named ?? 'run');
  return {
    command,
    ...(values.config !== undefined ? { file: values.config } : {}),
    overrides: {
      listen: values.listen,
      admin: values.admin,
      upstreams: values.upstream,
      workers: values.workers,
      pidFile: values['pid-file'],
      cert: values.cert,
      key: values.key,
    },
  };
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'replay') {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(REPLAY_USAGE);
      return 0;
    }
    return replayCommand(argv.slice(1));
  }
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    process.stderr.write(`switchyard: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.command === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.command === 'version') {
    process.stdout.write(`${version}\n`);
    return 0;
  }
  if (parsed.command === 'reload' || parsed.command === 'stop')
    return control(parsed.command, parsed.file, parsed.overrides);
  let config;
  try {
    config = loadConfig(parsed.file, parsed.overrides);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`switchyard: ${err.message}\n`);
    return 2;
  }
  if (parsed.command === 'check') {
    const pools = Object.entries(config.pools).map(
      ([name, p]) =>
        `${name} (${p.dns !== undefined ? `DNS ${p.dns.type} ${p.dns.name}` : p.members!.map((m) => m.url).join(', ')})`,
    );
    const upstreams = pools.length === 0 ? 'built-in demo origin' : pools.join('; ');
    const listen = config.listeners
      .map(
        (l) =>
          `${l.address}${l.tls !== null ? ` (https, ${l.tls.certificates.length} certificate(s))` : ''}${l.redirect !== null ? ' (redirect to https)' : ''}`,
      )
      .join(', ');
    for (const warning of config.warnings) process.stderr.write(`switchyard: warning: ${warning}\n`);
    process.stdout.write(
      `configuration OK: listen ${listen}, ${config.workerCount} worker(s), ${config.routes.length} route(s), pools: ${upstreams}\n`,
    );
    return 0;
  }
  const logger = createLogger('primary', config.log.level, {}, config.log.format);
  const { file, overrides } = parsed;
  // A reload re-reads the same file with the same flags on top, as at start.
  let primary;
  try {
    primary = await runPrimary(config, logger, {
      reload: () => loadConfig(file, overrides),
      source: { configFile: file === undefined ? null : resolve(file), overrides },
    });
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    process.stderr.write(`switchyard: ${err.message}\n`);
    return 2;
  }
  process.on('SIGTERM', () => primary.stop('SIGTERM'));
  process.on('SIGINT', () => primary.stop('SIGINT'));
  process.on('SIGHUP', () => void primary.reload());
  // Listening on SIGUSR1 also keeps Node 20 from opening its inspector on it.
  process.on('SIGUSR1', () => primary.reopenLogs());
  try {
    await primary.ready;
  } catch (err) {
    // Logged too; the primary is already stopping with a non-zero code.
    process.stderr.write(`switchyard: ${(err as Error).message}\n`);
  }
  await primary.stopped;
  return process.exitCode === undefined ? 0 : Number(process.exitCode);
}

/**
 * `reload` and `stop`: find the running instance by its pid file (--pid-file, else the pidFile of
 * --config, else the default), act, and report what happened.
 */
async function control(
  command: 'reload' | 'stop',
  file: string | undefined,
  overrides: ConfigOverrides,
): Promise<number> {
  let pidFile: string;
  try {
    pidFile =
      overrides.pidFile !== undefined
        ? resolve(overrides.pidFile)
        : pidFileOf(file === undefined ? {} : loadConfig(file, overrides));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const refused = command === 'reload' ? 'reload refused; the running configuration stays.\n' : '';
    process.stderr.write(`switchyard: ${refused}${err.message}\n`);
    return 2;
  }
  const pid = runningPid(pidFile);
  const status = readStatus(pidFile);
  if (pid === null || status === null || status.pid !== pid) {
    process.stderr.write(`switchyard: no running switchyard found (pid file ${pidFile})\n`);
    return 1;
  }
  if (command === 'stop') {
    process.kill(pid, 'SIGTERM');
    while (runningPid(pidFile) === pid && isAlive(pid)) await sleep(100);
    process.stdout.write(`stopped (pid ${pid})\n`);
    return 0;
  }
  // What the instance will read on SIGHUP is checked first: a bad file is reported and nothing changes.
  try {
    loadConfig(status.configFile ?? undefined, status.overrides);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`switchyard: reload refused; the running configuration stays.\n${err.message}\n`);
    return 2;
  }
  const before = status.lastReload?.generation ?? 0;
  process.kill(pid, 'SIGHUP');
  for (;;) {
    await sleep(100);
    const now = readStatus(pidFile);
    if (!isAlive(pid)) {
      process.stderr.write(`switchyard: the instance (pid ${pid}) exited during the reload\n`);
      return 1;
    }
    const last = now?.lastReload;
    if (last === undefined || last === null || last.generation <= before) continue;
    if (last.ok) {
      process.stdout.write(
        `reloaded: ${last.workers ?? now!.workers} worker(s), config hash ${last.configHash ?? now!.configHash}\n`,
      );
      return 0;
    }
    process.stderr.write(`switchyard: reload failed; the running configuration stays.\n${last.error ?? ''}\n`);
    return 1;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main(process.argv.slice(2)).then(
  // Exit explicitly: a stopped primary must not linger on a handle someone forgot to close.
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`switchyard: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
