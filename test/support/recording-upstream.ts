import type * as net from 'node:net';
import { rawUpstream, type Upstream } from './helpers';

/**
 * A raw upstream that records every byte it receives and answers each complete request head
 * (and chunked body, when there is one) with 200. `requests()` counts request lines in all of it:
 * a smuggled request would show up as one more.
 */
export async function recordingUpstream(): Promise<Upstream & { received: () => string; requests: () => number }> {
  let all = '';
  const up = await rawUpstream((socket: net.Socket) => {
    let buf = '';
    socket.on('error', () => undefined);
    socket.on('data', (d) => {
      all += d.toString('latin1');
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        let consumed = end + 4;
        if (/\r\ntransfer-encoding: chunked/i.test(head)) {
          const last = buf.indexOf('\r\n0\r\n\r\n', end);
          const first = buf.startsWith('0\r\n\r\n', end + 4) ? end + 4 : -1;
          if (first === -1 && last === -1) return;
          consumed = first !== -1 ? first + 5 : last + 7;
        } else {
          const m = /\r\ncontent-length: *(\d+)/i.exec(head);
          if (m) consumed += Number(m[1]);
          if (buf.length < consumed) return;
        }
        buf = buf.slice(consumed);
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
    });
  });
  return {
    ...up,
    received: () => all,
    requests: () => (all.match(/^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/gm) ?? []).length,
  };
}
