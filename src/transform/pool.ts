/**
 * A cluster worker's transform thread pool (piscina): bodies are transformed in worker threads
 * so that the event loop keeps serving every other connection meanwhile. Sized so that workers ×
 * threads does not exceed the CPUs; a bounded queue in front, a time limit per task.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { Piscina } from 'piscina';
import { TransformFailedError, TransformTimeoutError, type SwitchyardError } from '../errors';
import { runTransform, type TransformResult, type TransformTask } from './body';

const TASK_MODULE = resolve(__dirname, '../../workers/transform-task.js');

export interface TransformPoolOptions {
  /** 'auto', or a count; 0 runs transforms inline on the event loop (comparison only). */
  threads: number | 'auto';
  maxQueue: number;
  /** Cluster worker processes sharing the machine. */
  workers: number;
}

export class TransformPool {
  private pool: Piscina | null = null;
  readonly threads: number;
  private readonly maxQueue: number;
  /** Tasks handed to the pool and not yet settled. */
  private pending = 0;

  constructor(options: TransformPoolOptions) {
    this.threads =
      options.threads === 'auto'
        ? Math.max(1, Math.floor(availableParallelism() / Math.max(1, options.workers)))
        : options.threads;
    this.maxQueue = options.maxQueue;
  }

  /** True when a new task would wait beyond the queue bound. */
  get full(): boolean {
    return this.threads > 0 && this.pending >= this.threads + this.maxQueue;
  }

  /** Runs one task; the body's buffer is transferred (unusable here afterwards). */
  async run(task: TransformTask, timeoutMs: number): Promise<TransformResult> {
    if (this.threads === 0) return this.runInline(task);
    // Created on first use: a config without transforms never starts a thread.
    this.pool ??= new Piscina({
      filename: TASK_MODULE,
      minThreads: this.threads,
      maxThreads: this.threads,
      // The bound is enforced by `full` above, before any body is copied; this is a backstop.
      maxQueue: this.maxQueue,
      idleTimeout: 60_000,
    });
    const controller = new AbortController();
    // Aborting a running task terminates its thread; piscina starts a fresh one.
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    this.pending++;
    try {
      return (await this.pool.run(task, { transferList: [task.body], signal: controller.signal })) as TransformResult;
    } catch (err) {
      throw controller.signal.aborted ? new TransformTimeoutError(timeoutMs) : asTransformError(err);
    } finally {
      clearTimeout(timer);
      this.pending--;
    }
  }

  private async runInline(task: TransformTask): Promise<TransformResult> {
    try {
      return await runTransform(task);
    } catch (err) {
      throw asTransformError(err);
    }
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    await pool?.close({ force: true });
  }
}

function asTransformError(err: unknown): SwitchyardError {
  const e = err as Error;
  return new TransformFailedError(`response transform failed: ${e?.message ?? String(err)}`, { cause: err });
}
