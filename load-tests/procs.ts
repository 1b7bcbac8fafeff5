/**
 * The processes a load run drives: the upstream, switchyard as a real cluster, and autocannon.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import autocannon from 'autocannon';

const ROOT = resolve(__dirname, '../..');

/** `opts.path` is joined to the URL: autocannon 8 ignores a top-level `path` option. */
export function runAutocannon(
  url: string,
  opts: Partial<autocannon.Options> & { path?: string },
  duration: number,
): Promise<autocannon.Result> {
  const { path, ...rest } = opts;
  const target = path === undefined ? url : `${url}${path}`;
  return new Promise((resolvePromise, reject) => {
    const instance = autocannon({ url: target, duration, timeout: 10, ...rest }, (err, result) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolvePromise(result);
    });
    instance.on('error', () => undefined);
  });
}

export function forkUpstream(): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolvePromise, reject) => {
    const child = fork(resolve(__dirname, 'upstream.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (m) => resolvePromise({ child, port: (m as { port: number }).port }));
    child.once('exit', (code) => reject(new Error(`load upstream exited with ${code}`)));
  });
}

export function startProxy(
  upstreamPort: number,
  workers: number,
  extraArgs: string[] = [],
): Promise<{ child: ChildProcess; port: number; workerPids: number[] }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      [
        resolve(ROOT, 'dist/src/cli.js'),
        '--listen',
        '127.0.0.1:0',
        '--upstream',
        `http://127.0.0.1:${upstreamPort}`,
        '--workers',
        String(workers),
        ...extraArgs,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const workerPids: number[] = [];
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let log: Record<string, unknown>;
        try {
          log = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (log.msg === 'worker started') workerPids.push(Number(log.workerPid));
        if (typeof log.listen === 'string' && String(log.msg).includes('listening')) {
          resolvePromise({ child, port: Number(String(log.listen).split(':').pop()), workerPids });
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`switchyard exited with ${code}`)));
  });
}

/**
 * autocannon in a child process of its own: a load whose responses are large would otherwise
 * share the event loop of the load measuring latency, and its parsing would show as proxy latency.
 */
export function runAutocannonInChild(
  url: string,
  opts: Partial<autocannon.Options> & { path?: string },
  duration: number,
): Promise<autocannon.Result> {
  return new Promise((resolvePromise, reject) => {
    const child = fork(__filename, ['--autocannon-child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (m) => {
      resolvePromise(m as autocannon.Result);
      child.kill();
    });
    child.once('exit', (code) => reject(new Error(`autocannon child exited with ${code}`)));
    child.send({ url, opts, duration });
  });
}

if (require.main === module && process.argv.includes('--autocannon-child')) {
  process.once('message', (m: { url: string; opts: Partial<autocannon.Options>; duration: number }) => {
    runAutocannon(m.url, m.opts, m.duration).then(
      (r) => process.send?.(r),
      (err: Error) => {
        process.stderr.write(`${err.stack ?? err.message}\n`);
        process.exit(1);
      },
    );
  });
}
