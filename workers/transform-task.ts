/**
 * The piscina task module of the transform pool (src/transform/pool.ts): runs one body transform
 * (src/transform/body.ts) in a worker thread, so per-byte work never blocks the event loop that
 * serves every other connection. The body comes in and goes back as a transferred ArrayBuffer:
 * moved between threads, not copied.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { runTransform, type TransformResult, type TransformTask } from '../src/transform/body';

export default async function transformTask(task: TransformTask): Promise<TransformResult> {
  const result = await runTransform(task);
  const movable = { [transferableSymbol]: [result.body], [valueSymbol]: result };
  return move(movable) as unknown as TransformResult;
}
