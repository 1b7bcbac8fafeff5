/**
 * `switchyard replay FILE... --target URL`: the command line of the replay engine (replay.ts):
 * flags, the table on stdout, `--json` to keep the result and `--compare` to set it against an
 * earlier one (as `npm run load` does).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from '../errors';
import { formatReplay, replay, type ReplayOptions, type ReplayResult } from './replay';

export const REPLAY_USAGE = `Usage: switchyard replay FILE... --target URL [--speed X | --rate N] [--duration S]
                        [--connections N] [--timeout S] [--json FILE] [--compare FILE]

  FILE...              recordings (a route's \`record\`; each worker's file, rotated ones too)
  --target URL         where to send them: http:// or https://, whatever the recording saw
  --speed X            keep the recorded timing, X times faster (default 1)
  --rate N             instead: N requests per second, constant, looping over the recording
  --duration S         stop after S seconds (with --rate, default: each recorded request once)
  --connections N      connections to the target (default 50); busy ones make requests wait, and it counts
  --timeout S          a request unanswered this long is an error (default 10)
  --json FILE          write the result as JSON
  --compare FILE       a result written before with --json: show the p99 change per route
`;

function positive(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw new ConfigError(`${flag}: got ${JSON.stringify(value)}; expected a number > 0`);
  return n;
}

export function parseReplayArgs(argv: string[]): ReplayOptions & { json?: string; compare?: string } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      target: { type: 'string' },
      speed: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      connections: { type: 'string' },
      timeout: { type: 'string' },
      json: { type: 'string' },
      compare: { type: 'string' },
    },
  });
  if (positionals.length === 0) throw new ConfigError('replay: got no FILE; expected one or more recordings');
  if (values.target === undefined || !/^https?:\/\/[^/]/.test(values.target))
    throw new ConfigError(
      `--target: got ${JSON.stringify(values.target ?? null)}; expected an http:// or https:// URL`,
    );
  if (values.speed !== undefined && values.rate !== undefined)
    throw new ConfigError('--speed and --rate: got both; expected one (recorded timing, or a constant rate)');
  const connections = positive('--connections', values.connections) ?? 50;
  if (!Number.isInteger(connections))
    throw new ConfigError(`--connections: got ${values.connections}; expected a whole number`);
  return {
    files: positionals,
    target: values.target,
    speed: positive('--speed', values.speed),
    rate: positive('--rate', values.rate),
    duration: positive('--duration', values.duration),
    connections,
    timeout: positive('--timeout', values.timeout) ?? 10,
    ...(values.json !== undefined ? { json: values.json } : {}),
    ...(values.compare !== undefined ? { compare: values.compare } : {}),
  };
}

/** Exit code: 0 done, 1 errors met, 2 bad usage. */
export async function replayCommand(argv: string[]): Promise<number> {
  let options: ReturnType<typeof parseReplayArgs>;
  let previous: ReplayResult | undefined;
  try {
    options = parseReplayArgs(argv);
    if (options.compare !== undefined) previous = JSON.parse(readFileSync(options.compare, 'utf8')) as ReplayResult;
  } catch (err) {
    process.stderr.write(`switchyard replay: ${(err as Error).message}\n\n${REPLAY_USAGE}`);
    return 2;
  }
  let result: ReplayResult;
  try {
    result = await replay(options);
  } catch (err) {
    process.stderr.write(`switchyard replay: ${(err as Error).message}\n`);
    return 2;
  }
  process.stdout.write(`${formatReplay(result, previous)}\n`);
  if (options.json !== undefined) writeFileSync(options.json, `${JSON.stringify(result, null, 2)}\n`);
  return result.total.errors > 0 ? 1 : 0;
}
