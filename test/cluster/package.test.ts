/**
 * switchyard installs like a package: `npm pack` gives a tarball of the built files, and a global
 * install of it puts a working `switchyard` command on the PATH, also where no C++ toolchain is
 * (the sd_notify addon is optional).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../support/helpers';

function npm(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const cli = process.env.npm_execpath ?? 'npm';
  const [cmd, pre] = cli.endsWith('.js') ? [process.execPath, [cli]] : [cli, []];
  return spawnSync(cmd, [...pre, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 240_000,
  });
}

describe('the package', function () {
  this.timeout(300_000);

  it('packs the built files only, and installs globally without a compiler, with a working command', () => {
    const dir = mkdtempSync(join(tmpdir(), 'swy-pack-'));
    // dist/ was built by `npm test` already: no prepare script again.
    const pack = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT);
    assert.equal(pack.status, 0, pack.stderr);
    const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info.files.map((f) => f.path);
    assert.ok(files.includes('dist/src/cli.js'));
    assert.ok(files.includes('dist/workers/proxy-worker.js'));
    assert.ok(files.includes('deploy/switchyard.service'));
    assert.deepEqual(
      files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('dist/test/')),
      [],
    );

    const prefix = join(dir, 'prefix');
    const install = npm(
      ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, info.filename)],
      dir,
      { CXX: '/bin/false', CC: '/bin/false' },
    );
    assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);
    const bin = join(prefix, 'bin', 'switchyard');
    const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(
      version.stdout.trim(),
      (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
    );
    const check = spawnSync(bin, ['check', '--config', join(ROOT, 'switchyard.example.yaml')], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
  });
});
