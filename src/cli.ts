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
import { ListenError, runPrimary } from './primary/supervisor';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../package.json') as { version: string };

export const USAGE = `switchyard ${version}: a reverse proxy for HTTP/1.1

Usage:
  switchyard [--config FILE] [--listen HOST:PORT] [--upstream URL]... [--workers N] [--admin HOST:PORT]
  switchyard check --config FILE [--listen ...] [--upstream ...] [--workers ...]

Options:
  -c, --config FILE        YAML config file (see config.schema.json); flags override it
  -l, --listen HOST:PORT   address to listen on (default 127.0.0.1:8000)
  -u, --upstream URL       upstream origin, http:// or https://; repeat for several (taken in turn).
                           Without one, a built-in demo origin is served.
  -w, --workers N|auto     worker processes (default auto: one per CPU)
      --admin HOST:PORT    admin listener: /metrics, /healthz, /readyz (a bare PORT means 127.0.0.1)
  -h, --help               show this help
  -v, --version            print the version

Commands:
  check                    validate the configuration and exit (0 valid, 2 invalid)
`;

export function parseCommandLine(argv: string[]): { command: 'run' | 'check' | 'help' | 'version'; file?: string; overrides: ConfigOverrides } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string', short: 'l' },
      admin: { type: 'string' },
      upstream: { type: 'string', short: 'u', multiple: true },
      workers: { type: 'string', short: 'w' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  if (positionals.length > 1 || (positionals.length === 1 && positionals[0] !== 'check')) {
    throw new ConfigError(`unknown command ${JSON.stringify(positionals.join(' '))}; expected no command or "check"`);
  }
  const command = values.help ? 'help' : values.version ? 'version' : positionals[0] === 'check' ? 'check' : 'run';
  return {
    command,
    ...(values.config !== undefined ? { file: values.config } : {}),
    overrides: { listen: values.listen, admin: values.admin, upstreams: values.upstream, workers: values.workers },
  };
}

async function main(argv: string[]): Promise<number> {
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
  let config;
  try {
    config = loadConfig(parsed.file, parsed.overrides);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`switchyard: ${err.message}\n`);
    return 2;
  }
  if (parsed.command === 'check') {
    const pools = Object.entries(config.pools).map(([name, p]) =>
      `${name} (${p.dns !== undefined ? `DNS ${p.dns.type} ${p.dns.name}` : p.members!.map((m) => m.url).join(', ')})`);
    const upstreams = pools.length === 0 ? 'built-in demo origin' : pools.join('; ');
    process.stdout.write(`configuration OK: listen ${config.listen}, ${config.workerCount} worker(s), ${config.routes.length} route(s), pools: ${upstreams}\n`);
    return 0;
  }
  const logger = createLogger('primary', config.log.level);
  const { file, overrides } = parsed;
  // A reload re-reads the same file with the same flags on top, as at start.
  let primary;
  try {
    primary = await runPrimary(config, logger, { reload: () => loadConfig(file, overrides) });
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

main(process.argv.slice(2)).then(
  // Exit explicitly: a stopped primary must not linger on a handle someone forgot to close.
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`switchyard: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
