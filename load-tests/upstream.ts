/**
 * The upstream the load suites run against, in a process of its own: fixed bodies from memory,
 * and an upload sink. It reports its port over IPC.
 */
import * as http from 'node:http';

const SMALL = Buffer.from('hello world\n');
const K64 = Buffer.alloc(64 * 1024, 'x');
/** A 1 MiB HTML page full of links to an internal origin: what a transform rewrites. */
const LINE = '<li><a href="http://10.0.0.5:3000/products/item">an internal link</a> and some text around it</li>\n';
const PAGE_1M = Buffer.from(
  `<!doctype html><ul>\n${LINE.repeat(Math.ceil((1024 * 1024) / LINE.length))}`.slice(0, 1024 * 1024),
);

export function createLoadUpstream(): http.Server {
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') {
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(String(bytes).length) });
        res.end(String(bytes));
      });
      return;
    }
    if (req.url === '/page-1m') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': String(PAGE_1M.length) });
      res.end(PAGE_1M);
      return;
    }
    const body = req.url === '/64k' ? K64 : SMALL;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.maxHeadersCount = 0;
  return server;
}

if (require.main === module) {
  const server = createLoadUpstream();
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.send?.({ port: typeof addr === 'object' && addr !== null ? addr.port : 0 });
  });
  process.on('disconnect', () => process.exit(0));
}
