/**
 * The worker's one read buffer: every plain TCP socket, client side (useUserBuffer, in
 * proxy/tcp-transport.ts) and upstream side (net's `onread`, in connection.ts), reads into it.
 *
 * One buffer serves them all because a read is handled whole before the next can land (reads are
 * callbacks of one event loop), and nothing keeps a view of it: llhttp copies request body chunks
 * and makes strings of heads, the bytes after an Upgrade head are copied, and upstream body bytes
 * are copied out as they are counted. By default each read gets its own 64 KiB allocation, shrunk
 * to size and wrapped in an ArrayBuffer for the garbage collector to track, a cost every small
 * request paid (docs/performance.md).
 */
export const readBuffer = Buffer.allocUnsafeSlow(64 * 1024);
