import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { configJsonSchema } from '../../src/config/schema';
import { ConfigError } from '../../src/errors';
import { CLI, FIXTURES, ROOT } from '../support/helpers';

function yamlFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'swy-config-'));
  const file = join(dir, 'switchyard.yaml');
  writeFileSync(file, text);
  return file;
}

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'SWY_ERR_CONFIG');
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

function cli(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

describe('configuration', () => {
  it('resolves a transform module relative to the config file, and names the key when it is missing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'swy-module-'));
    writeFileSync(join(dir, 'banner.js'), 'module.exports = (b) => b;\n');
    const yaml = (module: string) =>
      `upstreams: [{ url: "http://127.0.0.1:3000" }]\nroutes:\n  - pool: default\n    transform: ${module}\n    compress: true\n`;
    writeFileSync(join(dir, 'ok.yaml'), yaml('./banner.js'));
    const c = loadConfig(join(dir, 'ok.yaml'));
    assert.equal(c.routes[0].transform!.module, join(dir, 'banner.js'));
    assert.equal(c.routes[0].compress!.minSize, 1024);
    writeFileSync(join(dir, 'bad.yaml'), yaml('./missing.js'));
    const r = cli('check', '--config', join(dir, 'bad.yaml'));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /routes\[0\]\.transform: got "\.\/missing\.js"; expected a readable file/);
  });

  it('supplies every default from the schema', () => {
    const c = loadConfig(undefined);
    assert.equal(c.listen, '127.0.0.1:8000');
    assert.deepEqual(c.listenAddress, { host: '127.0.0.1', port: 8000 });
    assert.equal(c.workers, 'auto');
    assert.ok(c.workerCount >= 1);
    assert.equal(c.upstreams, undefined);
    assert.equal(c.preserveHost, false);
    assert.deepEqual(c.trustedProxies, []);
    assert.deepEqual(c.timeouts, {
      connect: 5000,
      responseHeader: 60000,
      idle: 60000,
      drain: 30000,
      streamDrain: 600000,
    });
    assert.deepEqual(c.pool, { maxConnections: 256, queueTimeout: 30000, maxQueue: 10000, keepAliveTimeout: 4000 });
  });

  it('loads the config load-tests/peers.sh gives its access-log-off row', () => {
    // A schema change that broke it would only show as a benchmark row that never starts.
    const c = loadConfig(join(ROOT, 'load-tests/bench-nolog.yaml'), { upstreams: ['http://127.0.0.1:9001'] });
    assert.equal(c.accessLog.enabled, false);
  });

  it('reads YAML, lets flags override it, and freezes the result', () => {
    const file = yamlFile(
      'listen: 0.0.0.0:9000\nworkers: 3\nupstreams:\n  - url: http://10.0.0.5:3000\npool:\n  maxConnections: 8\n',
    );
    const c = loadConfig(file, { listen: '127.0.0.1:9001', upstreams: ['https://a.example', 'http://b.example:81'] });
    assert.equal(c.listen, '127.0.0.1:9001');
    assert.equal(c.workerCount, 3);
    assert.deepEqual(
      c.upstreams!.map((u) => u.url),
      ['https://a.example', 'http://b.example:81'],
    );
    assert.equal(c.pool.maxConnections, 8);
    assert.equal(c.pool.keepAliveTimeout, 4000);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.pool) && Object.isFrozen(c.upstreams![0]));
  });

  it('resolves file paths relative to the config file', () => {
    const file = yamlFile(
      `upstreams: [{ url: "http://127.0.0.1:3000" }]\ntls:\n  cert: ${join(FIXTURES, 'server.pem')}\n  key: ${join(FIXTURES, 'server-key.pem')}\n`,
    );
    assert.equal(loadConfig(file).tls!.cert, join(FIXTURES, 'server.pem'));
    const dir = mkdtempSync(join(tmpdir(), 'swy-relative-'));
    copyFileSync(join(FIXTURES, 'ca.pem'), join(dir, 'ca.pem'));
    writeFileSync(join(dir, 'relative.yaml'), 'upstreams:\n  - url: https://x.example\n    ca: ca.pem\n');
    assert.equal(loadConfig(join(dir, 'relative.yaml')).upstreams![0].ca, join(dir, 'ca.pem'));
  });

  it('names the key, the value given and what was expected', () => {
    const msg = configError(() =>
      loadConfig(
        yamlFile('listen: nowhere\nworkers: -1\npool:\n  maxConnections: "many"\nupstreams:\n  - url: ftp://x\n'),
      ),
    );
    assert.match(msg, /listen: got "nowhere"; expected HOST:PORT/);
    assert.match(msg, /workers: got -1; expected/);
    assert.match(msg, /pool\.maxConnections: got "many"; expected number/);
    assert.match(msg, /upstreams\[0\]\.url: got "ftp:\/\/x"; expected an http:\/\/, https:\/\/ or h2c:\/\/ origin URL/);
  });

  it('rejects unknown keys, naming them', () => {
    const msg = configError(() =>
      loadConfig(yamlFile('listen: 127.0.0.1:1\ntimeouts:\n  conect: 5\nupstream: http://x\n')),
    );
    assert.match(msg, /timeouts\.conect: unknown key/);
    assert.match(msg, /upstream: unknown key/);
  });

  it('rejects bad trustedProxies entries and an upstream with a path', () => {
    const msg = configError(() =>
      loadConfig(yamlFile('trustedProxies: [10.0.0.0/33, banana]\nupstreams:\n  - url: http://x.example/api\n')),
    );
    assert.match(msg, /trustedProxies\[0\]: got "10\.0\.0\.0\/33"; expected an IP address or CIDR range/);
    assert.match(msg, /trustedProxies\[1\]: got "banana"/);
    assert.match(msg, /upstreams\[0\]\.url: got "http:\/\/x\.example\/api"/);
  });

  it('reports YAML syntax errors, missing files and unreadable certificates', () => {
    assert.match(
      configError(() => loadConfig(yamlFile('listen: [unclosed\n'))),
      /not valid YAML/,
    );
    assert.match(
      configError(() => loadConfig('/nonexistent/switchyard.yaml')),
      /cannot read config file \/nonexistent\/switchyard\.yaml/,
    );
    assert.match(
      configError(() => loadConfig(yamlFile('tls:\n  cert: /nope.pem\n  key: /nope-key.pem\n'))),
      /tls\.cert: got "\/nope\.pem"; expected a readable file/,
    );
    assert.match(
      configError(() => loadConfig(yamlFile('- a\n- b\n'))),
      /expected a mapping of keys/,
    );
  });

  describe('acme', () => {
    const base = (
      acme: string,
      listen = '[{ address: 127.0.0.1:0, redirect: https }, { address: 127.0.0.1:0, tls: {} }]',
    ) =>
      yamlFile(
        `listen: ${listen}\nupstreams: [{ url: http://127.0.0.1:1 }]\n` +
          'routes:\n  - { match: { host: [shop.example.com, "*.wild.example.com", localhost, "[::1]"] }, pool: default }\n' +
          `acme:\n${acme.includes('storage:') ? '' : `  storage: ${mkdtempSync(join(tmpdir(), 'swy-acme-'))}\n`}${acme}`,
      );

    it('takes the names from the routes’ exact hosts, and lets an HTTPS listener have no certificate file', () => {
      const config = loadConfig(base(''));
      assert.deepEqual(config.acme?.hosts, ['shop.example.com']);
      assert.deepEqual(config.acme?.challenges, ['http-01', 'tls-alpn-01']);
      assert.equal(config.acme?.directory, 'https://acme-v02.api.letsencrypt.org/directory');
      assert.deepEqual(config.listeners[1].tls?.certificates, []);
      assert.deepEqual(loadConfig(base('  hosts: [A.Example.org]\n')).acme?.hosts, ['a.example.org']);
    });

    it('drops http-01 without a plain listener, and refuses what could never issue, naming the key', () => {
      const https = '[{ address: 127.0.0.1:0, tls: {} }]';
      assert.deepEqual(loadConfig(base('', https)).acme?.challenges, ['tls-alpn-01']);
      assert.match(
        configError(() => loadConfig(base('  challenges: [http-01]\n', https))),
        /acme\.challenges: got \["http-01"\]; expected tls-alpn-01 too, or a plain listener for http-01/,
      );
      assert.match(
        configError(() => loadConfig(base('', '127.0.0.1:0'))),
        /acme: got "no HTTPS listener"; expected a listener with `tls`/,
      );
      assert.match(
        configError(() => loadConfig(base('  hosts: ["*.example.com"]\n'))),
        /acme\.hosts\[0\]: got "\*\.example\.com"; expected a DNS name/,
      );
      assert.match(
        configError(() => loadConfig(base(`  storage: ${FIXTURES}/ca.pem/acme\n`))),
        /acme\.storage: got ".*ca\.pem\/acme"; expected a directory switchyard can create or write/,
      );
      assert.match(
        configError(() => loadConfig(base('  onDemand: { ask: ftp://x }\n'))),
        /acme\.onDemand\.ask: got "ftp:\/\/x"; expected an http\(s\) URL/,
      );
      // Without acme, an HTTPS listener still needs its files.
      assert.match(
        configError(() =>
          loadConfig(
            yamlFile('listen: [{ address: 127.0.0.1:0, tls: {} }]\nupstreams: [{ url: http://127.0.0.1:1 }]\n'),
          ),
        ),
        /expected certificates: `cert` and `key`, or `certificates` \(or automatic ones: `acme`\)/,
      );
    });

    it('warns when there is no name to order for and no on-demand issuance', () => {
      const config = loadConfig(base('  hosts: []\n'));
      assert.ok(config.warnings.some((w) => w.startsWith('acme: no names to obtain certificates for')));
    });
  });

  describe('CLI', () => {
    it('check: exits 0 and summarises a valid config', () => {
      const r = cli('check', '--upstream', 'http://127.0.0.1:3000', '--workers', '2');
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout,
        /configuration OK: listen 127\.0\.0\.1:8000, 2 worker\(s\), 1 route\(s\), pools: default \(http:\/\/127\.0\.0\.1:3000\)/,
      );
    });

    it('check: exits 2 naming the bad key, before anything listens', () => {
      const r = cli('check', '--config', yamlFile('pool:\n  maxConnections: 0\n'));
      assert.equal(r.status, 2);
      assert.match(r.stderr, /pool\.maxConnections: got 0; expected a whole number >= 1/);
    });

    it('a bad config stops the proxy before it listens', () => {
      const r = cli('--listen', '127.0.0.1:70000');
      assert.equal(r.status, 2);
      assert.match(r.stderr, /listen: got "127\.0\.0\.1:70000"/);
    });

    it('rejects unknown flags and commands with usage, exit 2', () => {
      const r = cli('--frobnicate');
      assert.equal(r.status, 2);
      assert.match(r.stderr, /Unknown option '--frobnicate'/);
      assert.match(r.stderr, /Usage:/);
      assert.equal(cli('serve').status, 2);
    });

    it('--help and --version', () => {
      const help = cli('--help');
      assert.equal(help.status, 0);
      for (const flag of ['--config', '--listen', '--upstream', '--workers', 'check'])
        assert.ok(help.stdout.includes(flag), flag);
      const version = cli('--version');
      assert.equal(
        version.stdout.trim(),
        (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
      );
    });
  });

  describe('shipped files', () => {
    it('switchyard.example.yaml passes `switchyard check`', () => {
      const r = cli('check', '--config', join(ROOT, 'switchyard.example.yaml'));
      assert.equal(r.status, 0, r.stderr);
    });

    it('config.schema.json is the schema as built', () => {
      const committed: unknown = JSON.parse(readFileSync(resolve(ROOT, 'config.schema.json'), 'utf8'));
      assert.deepEqual(committed, JSON.parse(JSON.stringify(configJsonSchema())));
    });
  });
});
