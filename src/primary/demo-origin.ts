/**
 * The built-in demo origin (src/demo/origin.ts), for a proxy started without upstreams. It runs in
 * a child process of its own, so the primary still serves nothing.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

const DEMO_ORIGIN_ENTRY = resolve(__dirname, '../demo/origin.js');

/** Starts the demo origin; resolves with its port once it listens. */
export function startDemoOrigin(): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolvePort, reject) => {
    const child = fork(DEMO_ORIGIN_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (m: unknown) => {
      const port = (m as { port?: unknown } | null)?.port;
      if (typeof port === 'number') resolvePort({ child, port });
      else reject(new Error('demo origin did not report its port'));
    });
    child.once('exit', (code) => reject(new Error(`demo origin exited with code ${code}`)));
  });
}
