/**
 * Node flags for the workers: the primary's own, and
 * - `--expose-gc`: a worker that goes idle runs one collection to give back its grown young
 *   generation (src/ops/heap-trim.ts); nothing else calls gc().
 * - `--max-semi-space-size=8` (MiB; Node 20's default is 16), unless the operator set a
 *   semi-space size (command line or NODE_OPTIONS). A scavenge's pause grows with the young
 *   generation rather than with what survives, and holds every request in flight; smaller still
 *   promotes what slow requests allocate. The measurements behind 8: docs/performance.md.
 */
export function workerExecArgv(): string[] {
  const args = [...process.execArgv, '--expose-gc'];
  const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`;
  if (!/semi[-_]space/.test(given)) args.push('--max-semi-space-size=8');
  return args;
}
