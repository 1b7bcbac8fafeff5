/**
 * The worker's one read buffer: every plain TCP socket, client side (useUserBuffer, in
 * proxy/client-transport.ts) and upstream side (net's `onread`, in connection.ts), reads into it.
 *
 * One buffer serves them all because a read is handled whole before the next can land (reads are
 * callbacks of one event loop), and nothing keeps a view of it: llhttp copies request body chunks
 * and makes strings of heads, the bytes after an Upgrade head are copied, and upstream body bytes
 * are copied out as they are counted. By default each read gets its own 64 KiB allocation, shrunk
 * to size and wrapped in an ArrayBuffer for the garbage collector to track: on the client side that
 * cost about 1 µs of user CPU per request on /small (10.3–10.9 against 9.2–9.9 µs, interleaved
 * in-process runs).
 */
export const readBuffer = Buffer.allocUnsafeSlow(64 * 1024);
