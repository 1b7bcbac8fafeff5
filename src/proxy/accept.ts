/**
 * Taking a listening server's new connections as bare TCP handles (tcp-transport.ts) instead of
 * net.Sockets.
 */
import type * as net from 'node:net';
import { listenHandleOf } from '../node-internals';
import type { TcpHandle } from './tcp-transport';

/**
 * Take over a listening net.Server's accepted handles: `onHandle` receives each new connection's
 * TCP handle instead of net wrapping it in a Socket. Works for a server listening on its own
 * socket and for a cluster worker's (both settings of cluster.schedulingPolicy hand the
 * connection to the same `onconnection` slot). Call after 'listening'.
 */
export function acceptHandles(server: net.Server, onHandle: (err: number, handle: TcpHandle) => void): boolean {
  const listenHandle = listenHandleOf(server);
  if (listenHandle === null) return false;
  // Linux copies TCP_NODELAY from the listening socket to each one it accepts: set there once, it
  // saves a setsockopt per connection. Elsewhere, and where the cluster's primary accepts
  // (round-robin: the worker's listening handle is a stand-in), each connection sets it.
  const inherited =
    process.platform === 'linux' &&
    typeof listenHandle.setNoDelay === 'function' &&
    listenHandle.setNoDelay(true) === 0;
  listenHandle.onconnection = inherited
    ? onHandle
    : (err: number, handle: TcpHandle) => {
        if (err === 0) handle.setNoDelay(true);
        onHandle(err, handle);
      };
  return true;
}
