/**
 * Config loading at scale: the time `loadConfig` (read, YAML, schema, routing, freeze) takes for
 * files of 10,000 to 80,000 routes, one site each, with the file's size beside it. Loading runs
 * in the primary at start and on every reload (SIGHUP), where it holds the primary's event loop:
 * the target is well under a second per 10,000 routes, growing linearly.
 *
 * Run: `npm run build && node dist/load-tests/config-load.js [--sizes 10000,20000]`.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load';

function configText(routes: number): string {
  let text =
    'pools:\n  app:\n    members:\n      - url: http://127.0.0.1:3000\n  api:\n    members:\n      - url: http://127.0.0.1:3001\nroutes:\n';
  for (let i = 0; i < routes; i++) {
    text += `  - match: { host: site${i}.example.com${i % 10 === 0 ? ', path: /api' : ''} }\n    pool: ${i % 10 === 0 ? 'api' : 'app'}\n`;
  }
  return text;
}

function main(): void {
  const { values } = parseArgs({ options: { sizes: { type: 'string', default: '10000,20000,40000,80000' } } });
  const dir = mkdtempSync(join(tmpdir(), 'swy-config-load-'));
  console.log('| routes | file | load ms (best of 3) | ms per 10k routes |');
  console.log('| --- | --- | --- | --- |');
  try {
    for (const routes of values.sizes.split(',').map(Number)) {
      const file = join(dir, `routes-${routes}.yaml`);
      writeFileSync(file, configText(routes));
      let best = Infinity;
      for (let round = 0; round < 3; round++) {
        const started = performance.now();
        const config = loadConfig(file);
        best = Math.min(best, performance.now() - started);
        if (config.routes.length !== routes) throw new Error(`loaded ${config.routes.length} routes of ${routes}`);
      }
      const kib = Math.round(statSync(file).size / 1024);
      console.log(`| ${routes} | ${kib} KiB | ${best.toFixed(0)} | ${(best / (routes / 10_000)).toFixed(0)} |`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
