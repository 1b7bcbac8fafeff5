/**
 * Small writes wait for the end of the event loop's I/O phase when the loop is busy, and then go
 * out together: one write() per socket as before, but back to back instead of spread across the
 * phase.
 *
 * Why: a write to a peer on the same host (a local upstream, a load generator) that is asleep in
 * epoll_wait wakes it, and the kernel charges the wake-up (an inter-processor interrupt, dearer on
 * a VM) to the writer. Written as each request is handled, the upstream and the clients are woken
 * for nearly every write, having gone back to sleep by the time the next request is done; written
 * together, a peer woken by the first write finds the rest already queued (docs/performance.md
 * has the figures).
 *
 * Only when busy: with a few connections, holding writes back makes the proxy, the upstream and
 * the client take turns instead of working alongside (p50 doubled with 4 connections); so a turn
 * of the loop holds back its small writes only past BATCH_MIN of them, or when the turn before it had that
 * many. Large writes (past SMALL_WRITE per socket) never wait: they would hold memory, and their
 * cost is the copy, not the wake-up.
 */

/** Writes up to this many bytes in all, per socket, wait for the end of the I/O phase. */
export const SMALL_WRITE = 1024;

/**
 * A turn of the loop with more small writes than this is busy: 4 keeps 4 connections at their
 * immediate-write figures and gives 16 and more the batched ones, where 2 already put 4
 * connections in lockstep (docs/performance.md).
 */
const BATCH_MIN = 4;

/**
 * Sockets whose writes are held, past which they go out without waiting for the end of the turn:
 * under overload libuv polls again at once while epoll returns full batches, and one poll phase
 * can run tens of thousands of callbacks. The wake-ups saved are already 1 in 64 here.
 */
const MAX_HELD = 64;

/** Something holding writes back: flushDeferred() sends them, or drops them if it closed meanwhile. */
export interface DeferredWriter {
  flushDeferred(): void;
}

let queue: DeferredWriter[] = [];
/** Small writes this turn of the loop, held back or not. */
let writesThisTurn = 0;
/** The last turn had more than BATCH_MIN: hold back from this turn's first write. */
let busy = false;
let scheduled = false;

/**
 * Turns of the loop that held small writes back, flushes for MAX_HELD, FINs held with a closing
 * response, and connections closed without a half-close first (proxy/client-transport.ts): for
 * tests, to see that the paths ran.
 */
export const writeBatchStats = { turnsHeld: 0, heldPastMax: 0, finsHeld: 0, closedAtOnce: 0 };

/**
 * Called for each small write: whether to hold it back (then pass the writer to deferWrite, once
 * per batch; the writer keeps its own "already queued" flag) or to write it now.
 */
export function shouldDefer(): boolean {
  if (!scheduled) {
    scheduled = true;
    // Immediates run in the check phase, right after the poll phase has run every I/O callback
    // of this turn of the loop.
    setImmediate(endOfTurn);
  }
  return ++writesThisTurn > BATCH_MIN || busy;
}

/** Call with everything to send already in place: past MAX_HELD, the writer is flushed at once. */
export function deferWrite(writer: DeferredWriter): void {
  queue.push(writer);
  if (queue.length >= MAX_HELD) {
    writeBatchStats.heldPastMax++;
    flushHeld();
  }
}

function endOfTurn(): void {
  scheduled = false;
  busy = writesThisTurn > BATCH_MIN;
  writesThisTurn = 0;
  if (queue.length === 0) return;
  writeBatchStats.turnsHeld++;
  flushHeld();
}

function flushHeld(): void {
  // Writes deferred while these flush (none today; a drain's resume would) start a list of their own.
  const writers = queue;
  queue = [];
  for (let i = 0; i < writers.length; i++) writers[i].flushDeferred();
}
