/**
 * The built-in demo origin, used when no upstream is configured: a page that shows what the
 * proxy did to the request on its way here. It runs as a child of the primary on a loopback port
 * of its own, and exits when the primary goes.
 */
import * as http from 'node:http';
import { nameProcess } from '../process-name';

const SHOWN = [
  'host',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'via',
  'x-request-id',
  'x-switchyard-worker',
  'x-switchyard-tls',
];

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderPage(req: http.IncomingMessage): string {
  const rows: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    const key = SHOWN.includes(name.toLowerCase()) ? ' class="proxy"' : '';
    rows.push(`<tr${key}><th>${escapeHtml(name)}</th><td>${escapeHtml(req.rawHeaders[i + 1])}</td></tr>`);
  }
  const worker = req.headers['x-switchyard-worker'];
  const tls = req.headers['x-switchyard-tls'];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>switchyard demo origin</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd;font-family:ui-monospace,monospace;font-size:.9rem;vertical-align:top}
th{white-space:nowrap;width:14rem}td{overflow-wrap:anywhere;word-break:break-word}tr.proxy{background:#fff6d5}.worker{font-size:1.2rem;padding:.6rem 1rem;background:#e8f4ff;border-radius:.4rem}
</style></head><body>
<h1>It works: this page came through switchyard</h1>
<p class="worker">Served by worker <strong>${escapeHtml(String(worker ?? 'unknown'))}</strong>, the worker that accepted this connection${
    typeof tls === 'string'
      ? `, over <strong>${escapeHtml(tls)}</strong> (a browser that comes back resumes its TLS session: any worker can)`
      : ''
  }.</p>
<p>Each connection stays with the worker that accepted it, and a browser keeps its connection
open, so reloading this page usually shows the same worker. Every <code>curl</code> opens a new
connection: run <code>curl -s http://${escapeHtml(String(req.headers['x-forwarded-host'] ?? req.headers.host ?? '127.0.0.1:8000'))}/api/request</code>
a few times to see the workers take turns (the <code>x-switchyard-worker</code> field).</p>
<p>This is the built-in demo origin. Below is the request exactly as it arrived here, after the proxy
rewrote <code>Host</code>, removed hop-by-hop headers and added <code>X-Forwarded-*</code> and <code>Via</code>
(highlighted).</p>
<p><code>${escapeHtml(req.method ?? '')} ${escapeHtml(req.url ?? '')} HTTP/${escapeHtml(req.httpVersion)}</code></p>
<table>${rows.join('\n')}</table>
<p>Point switchyard at your own server with <code>npx switchyard --upstream http://127.0.0.1:3000</code>,
or give it a config file (<code>switchyard.example.yaml</code> shows every key). The documentation is
<code>README.md</code> in the switchyard checkout or package: configuration, routing, TLS, operations
and the error codes.</p>
</body></html>
`;
}

export function createDemoOrigin(): http.Server {
  return http.createServer((req, res) => {
    req.resume();
    if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (req.url?.startsWith('/api/request')) {
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers }, null, 2);
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    const page = renderPage(req);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page);
  });
}

if (require.main === module) {
  nameProcess('switchyard: demo origin', 'switchyard-demo');
  const server = createDemoOrigin();
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.send?.({ port: typeof addr === 'object' && addr !== null ? addr.port : 0 });
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  // Ctrl-C reaches the whole process group; the primary decides when the origin goes.
  process.on('SIGINT', () => undefined);
}
