/**
 * Gives a worker's young generation back to the OS once the worker has gone quiet.
 *
 * Under load V8 grows new space up to twice `--max-semi-space-size` (32 MiB with Node 20's
 * defaults); a burst of thousands of connections grows a fresh worker's severalfold, more RSS than
 * the connections themselves hold (docs/performance.md). V8 shrinks it only at the end of a
 * full collection that finds the allocation rate low, and a worker that has gone quiet (idle
 * keep-alive connections, a night without traffic) allocates too little to start one. V8's memory
 * reducer gets there when a full collection has armed it: tens of seconds after a burst, or never.
 *
 * This runs that one collection itself: when the event loop was almost idle over a whole
 * interval and new space is still grown, it asks for a major GC. It never runs under load; its
 * cost is one pause when the worker is idle, and it needs the `gc` function that `--expose-gc` gives
 * (the primary forks workers with it). Without it, this does nothing.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

export interface HeapTrimOptions {
  /** How often to look, ms. An interval must be idle from start to end. */
  intervalMs: number;
  /** Event-loop utilization (0 to 1) at or below which an interval counts as idle. */
  maxUtilization: number;
  /** Trim only when new space has grown past this many bytes. */
  minNewSpaceBytes: number;
  /** Told after each trim, with new space's size before and after. */
  onTrim?: (before: number, after: number) => void;
}

export const HEAP_TRIM_DEFAULTS: HeapTrimOptions = {
  intervalMs: 5_000,
  // Under 1% busy is below about 500 small requests per second on one worker.
  maxUtilization: 0.01,
  // V8 starts new space at 1 MiB and a worker's start-up takes it to 4 (measured through the
  // admin listener's heap-space gauges); anything past that came from traffic.
  minNewSpaceBytes: 4 * 1024 * 1024,
};

function newSpaceBytes(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_size;
  return 0;
}

/** Starts watching; returns the function that stops it. Does nothing without `--expose-gc`. */
export function startHeapTrim(options: HeapTrimOptions = HEAP_TRIM_DEFAULTS): () => void {
  const gc = globalThis.gc;
  if (gc === undefined) return () => undefined;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let running = false;
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    if (running || busy > options.maxUtilization) return;
    const before = newSpaceBytes();
    if (before <= options.minNewSpaceBytes) return;
    running = true;
    // "async" runs the collection as a task of its own rather than inside this timer callback;
    // it still pauses the loop, but only on a loop that had nothing to do.
    gc({ type: 'major', execution: 'async' }).then(
      () => {
        running = false;
        // The collection itself counts as busy time: start the next interval after it.
        last = performance.eventLoopUtilization();
        options.onTrim?.(before, newSpaceBytes());
      },
      () => {
        running = false;
      },
    );
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
