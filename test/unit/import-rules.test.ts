/**
 * Dependencies point one way (docs/architecture.md): foundations (config, errors, log, the Node
 * internals) at the bottom; the shared HTTP/1 and I/O pieces (http1/, io/) next; upstream,
 * transform and ops above them; the client side and the handler (proxy/) above those; the worker
 * entry on top. The primary knows config, IPC, logging
 * and pool membership, never the request path. Checked over the sources' own import lines.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from '../support/helpers';

/** Every module under src/ and workers/, by its path without extension, and what it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        walk(path);
        continue;
      }
      if (!entry.name.endsWith('.ts')) continue;
      const text = readFileSync(path, 'utf8');
      // `import … from '../x'`, `export … from '../x'` (over several lines too) and `import '../x'`.
      const deps = [...text.matchAll(/^(?:(?:import|export)\s[^'";]*?from\s+|import\s+)'(\.[^']+)'/gm)].map((m) =>
        relative(ROOT, resolve(dirname(path), m[1])),
      );
      graph.set(relative(ROOT, path).replace(/\.ts$/, ''), deps);
    }
  };
  walk(join(ROOT, 'src'));
  walk(join(ROOT, 'workers'));
  return graph;
}

const FOUNDATION = /^src\/(errors|log|node-internals|process-name|config\/.*)$/;
/**
 * 0 foundations; 1 shared HTTP/1 and I/O pieces; 2 upstreams, transforms, ops; 3 the client side
 * and the handler; 4 the worker entry. The primary and the CLI (5) stand apart from 3 and 4.
 */
const layer = (m: string): number => {
  if (FOUNDATION.test(m)) return 0;
  if (/^src\/(http1|io)\//.test(m)) return 1;
  if (/^src\/(upstream|transform|ops|demo)\//.test(m) || m === 'src/ipc') return 2;
  if (/^src\/proxy\//.test(m)) return 3;
  if (/^workers\//.test(m)) return 4;
  return 5; // src/primary/, src/cli
};

describe('import rules', () => {
  const graph = importGraph();

  it('finds the modules it checks', () => {
    assert.ok(graph.size > 40);
    assert.ok(graph.get('src/proxy/handler')!.includes('src/proxy/headers'));
  });

  it('points down only: no module imports one of a higher layer', () => {
    const wrong: string[] = [];
    for (const [from, deps] of graph) {
      for (const to of deps) {
        // The primary (5) and the request path (3, 4) are apart: checked below as well.
        const apart = layer(from) === 5 ? layer(to) === 3 || layer(to) === 4 : false;
        if (layer(to) > layer(from) || apart) wrong.push(`${from} → ${to}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('keeps the primary off the request path: nothing it reaches is in proxy/ or workers/', () => {
    const reached = new Set<string>();
    const visit = (m: string): void => {
      if (reached.has(m)) return;
      reached.add(m);
      for (const d of graph.get(m) ?? []) visit(d);
    };
    visit('src/primary/primary');
    visit('src/cli');
    assert.deepEqual(
      [...reached].filter((m) => /^src\/proxy\/|^workers\//.test(m)),
      [],
    );
    // What it does import from upstream/ is pool membership and what membership needs.
    assert.deepEqual([...reached].filter((m) => m.startsWith('src/upstream/')).sort(), [
      'src/upstream/dns',
      'src/upstream/health-check',
      'src/upstream/membership',
      'src/upstream/target',
    ]);
  });

  it('has no import cycles', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (m: string, path: string[]): void => {
      if (state.get(m) === 'done') return;
      if (state.get(m) === 'open') {
        cycles.push([...path.slice(path.indexOf(m)), m].join(' → '));
        return;
      }
      state.set(m, 'open');
      for (const d of graph.get(m) ?? []) visit(d, [...path, m]);
      state.set(m, 'done');
    };
    for (const m of graph.keys()) visit(m, []);
    assert.deepEqual(cycles, []);
  });
});
