/**
 * The docs stay true: the configuration reference is the schema's (keys and defaults), every
 * error code and CLI flag is documented, and every key, code and file the docs name exists.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configurationReference } from '../../src/config/reference';
import { configJsonSchema } from '../../src/config/schema';
import { ROOT } from '../support/helpers';

type SchemaNode = Record<string, unknown>;

/** Every key path of the schema with its default (`undefined`: none), e.g. `timeouts.connect`. */
function schemaKeys(schema: SchemaNode, prefix = '', out = new Map<string, unknown>()): Map<string, unknown> {
  const node =
    (schema.anyOf as SchemaNode[] | undefined)?.find((s) => s.type === 'object' || s.type === 'array') ?? schema;
  if (node.type === 'array' && node.items) return schemaKeys(node.items as SchemaNode, `${prefix}[]`, out);
  const props = node.properties as Record<string, SchemaNode> | undefined;
  const named = node.additionalProperties as SchemaNode | undefined;
  // A map of named entries (`pools`): its entries' keys are documented as `pools.<name>.key`.
  if (!props && typeof named === 'object' && named.properties) return schemaKeys(named, `${prefix}.<name>`, out);
  for (const [k, v] of Object.entries(props ?? {})) {
    const path = prefix === '' ? k : `${prefix}.${k}`;
    out.set(path, v.default);
    schemaKeys(v, path, out);
  }
  return out;
}

const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');
const docFiles = (): string[] =>
  readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`);

/** Every code in src/, with its status: null where the caller chooses it (an injected fault's). */
function sourceCodes(): Map<string, number | null> {
  const codes = new Map<string, number | null>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) {
        for (const m of read(path.slice(ROOT.length + 1)).matchAll(/'(SWY_ERR_[A-Z_]+)',\s*(\d{3}|[a-z]\w*)/g))
          codes.set(m[1], /^\d/.test(m[2]) ? Number(m[2]) : null);
      }
    }
  };
  walk(join(ROOT, 'src'));
  return codes;
}

describe('documentation stays true', () => {
  const keys = schemaKeys(configJsonSchema() as SchemaNode);

  it('docs/configuration.md is what the build generates from the schema', () => {
    assert.equal(read('docs/configuration.md'), configurationReference());
  });

  it('docs/configuration.md lists every key of the schema with its default, and no other', () => {
    const rows = [...read('docs/configuration.md').matchAll(/^\| `([^`]+)` \| [^|]*(?:\\\|[^|]*)* \| ([^|]*) \|/gm)];
    const documented = new Map(rows.map((m) => [m[1], m[2].trim()]));
    assert.deepEqual([...documented.keys()].sort(), [...keys.keys()].sort());
    for (const [key, def] of keys) {
      const want = def === undefined ? '' : `\`${JSON.stringify(def)}\``;
      assert.equal(documented.get(key), want, `default of ${key}`);
    }
  });

  it('every config key the docs and the README name exists', () => {
    const top = new Set([...keys.keys()].map((k) => k.split(/[.[]/)[0]));
    for (const file of ['README.md', ...docFiles()]) {
      for (const m of read(file).matchAll(/`([a-zA-Z]+(?:\[\])?(?:\.(?:<name>|[a-zA-Z0-9]+)(?:\[\])?)+)`/g)) {
        // A pool by its own name (`pools.default.members`) is the schema's `pools.<name>.members`.
        const key = m[1].replace(/^pools\.(?!<name>)[A-Za-z0-9_-]+/, 'pools.<name>');
        // Node API names (`tls.TLSSocket`) and file names are not config keys.
        if (!top.has(key.split(/[.[]/)[0]) || /\.[A-Z]|\.(ts|js|md|yaml|json|pem)$/.test(key)) continue;
        assert.ok(keys.has(key) || key === 'pools.<name>', `${file} names \`${key}\`, which the schema lacks`);
      }
    }
  });

  it('docs/errors.md lists every SWY_ERR_* code with its status, and the docs name no other', () => {
    const codes = sourceCodes();
    assert.ok(codes.size > 20);
    const table = new Map(
      [...read('docs/errors.md').matchAll(/^\| `(SWY_ERR_[A-Z_]+)` \| \(?(\d{3}|—|any)/gm)].map((m) => [m[1], m[2]]),
    );
    assert.deepEqual([...table.keys()].sort(), [...codes.keys()].sort());
    for (const [code, status] of codes) {
      // SWY_ERR_CONFIG never reaches a client: its row says so instead of a status.
      if (code !== 'SWY_ERR_CONFIG') assert.equal(table.get(code), status === null ? 'any' : String(status), code);
    }
    for (const file of ['README.md', ...docFiles()]) {
      for (const m of read(file).matchAll(/SWY_ERR_[A-Z_]+/g)) assert.ok(codes.has(m[0]), `${file}: ${m[0]}`);
    }
  });

  it('docs/operations.md documents every CLI flag and command', () => {
    const ops = read('docs/operations.md');
    for (const flag of [
      '--config',
      '--listen',
      '--upstream',
      '--workers',
      '--admin',
      '--pid-file',
      '--help',
      '--version',
      'switchyard check',
      'switchyard reload',
      'switchyard stop',
      'switchyard replay',
    ]) {
      assert.ok(ops.includes(flag), `docs/operations.md lacks ${flag}`);
    }
  });

  it('the README is a front door under 12 KB that indexes every file of docs/, and each exists', () => {
    const readme = read('README.md');
    assert.ok(Buffer.byteLength(readme) < 12 * 1024, `README.md is ${Buffer.byteLength(readme)} bytes`);
    const linked = new Set([...readme.matchAll(/\]\((docs\/[a-z0-9-]+\.md)\)/g)].map((m) => m[1]));
    assert.deepEqual([...linked].sort(), docFiles().sort());
    for (const cmd of ['npm install && npm start', 'npm install && npm test', 'switchyard check'])
      assert.ok(readme.includes(cmd), cmd);
  });

  it('every file path the docs name exists', () => {
    for (const file of ['README.md', ...docFiles()]) {
      for (const m of read(file).matchAll(/`((?:src|test|workers|load-tests|deploy|scripts)\/[A-Za-z0-9_./-]+)`/g)) {
        // What a run writes is not in a checkout.
        if (m[1].startsWith('load-tests/results')) continue;
        assert.ok(existsSync(join(ROOT, m[1])), `${file} names ${m[1]}, which does not exist`);
      }
    }
  });
});
