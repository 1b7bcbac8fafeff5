import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, httpUpstream, onCleanup, request, startCli, waitFor } from '../support/helpers';

interface DgramSocket {
  bind(path: string): void;
  close(): void;
}
type UnixDgram = { createSocket(type: 'unix_dgram', onMessage: (buf: Buffer) => void): DgramSocket };

/** The optional addon (switchyard's notifier uses it too), or why it does not load here. */
function loadUnixDgram(): UnixDgram | string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('unix-dgram') as UnixDgram;
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}
const unixDgram = loadUnixDgram();

/** A NOTIFY_SOCKET of the test's own: every datagram switchyard sends, parsed. */
function notifySocket(): { path: string; messages: Array<Record<string, string>> } {
  const path = join(mkdtempSync(join(tmpdir(), 'swy-notify-')), 'notify.sock');
  const messages: Array<Record<string, string>> = [];
  const socket = (unixDgram as UnixDgram).createSocket('unix_dgram', (buf) => {
    messages.push(
      Object.fromEntries(
        buf
          .toString()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      ),
    );
  });
  socket.bind(path);
  onCleanup(() => socket.close());
  return { path, messages };
}

describe('systemd', function () {
  this.timeout(30_000);

  it('sends READY, RELOADING/READY around a reload, WATCHDOG pings, STATUS and STOPPING, in order', async function () {
    if (typeof unixDgram === 'string') {
      // Installed without a C++ toolchain: notifications are off, and the worker says so (below).
      console.log(`      (skipped: the optional unix-dgram addon does not load here: ${unixDgram})`);
      this.skip();
    }
    const up = await httpUpstream((_req, res) => res.end('ok'));
    const notify = notifySocket();
    const cli = await startCli(['--upstream', up.url, '--workers', '2'], {
      NOTIFY_SOCKET: notify.path,
      WATCHDOG_USEC: '200000',
    });
    const ready = await waitFor(() => notify.messages.find((m) => m.READY === '1'));
    assert.match(ready.STATUS, /serving http:\/\/127\.0\.0\.1:0 with 2 worker\(s\)/);
    assert.equal(ready.MAINPID, String(cli.child.pid));
    // READY is sent only once both workers listen.
    assert.equal(cli.logs.filter((l) => l.msg === 'worker started').length, 2);
    assert.equal((await request(`http://127.0.0.1:${cli.port}/`)).status, 200);
    await waitFor(() => notify.messages.some((m) => m.WATCHDOG === '1'));

    cli.child.kill('SIGHUP');
    await waitFor(() => cli.logs.some((l) => l.event === 'reload-complete'));
    await waitFor(() => notify.messages.filter((m) => m.READY === '1').length === 2);
    cli.child.kill('SIGTERM');
    await cli.exited;
    await waitFor(() => notify.messages.some((m) => m.STOPPING === '1'));

    const order = notify.messages
      .filter((m) => m.WATCHDOG === undefined)
      .map((m) => (m.READY ? 'READY' : m.RELOADING ? 'RELOADING' : m.STOPPING ? 'STOPPING' : 'other'));
    assert.deepEqual(order, ['READY', 'RELOADING', 'READY', 'STOPPING']);
    const reloading = notify.messages.find((m) => m.RELOADING === '1')!;
    assert.match(reloading.MONOTONIC_USEC, /^\d+$/);
  });

  it('ships a unit file that passes systemd-analyze verify', function () {
    const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
    if (which.status !== 0) this.skip();
    const unit = readFileSync(join(ROOT, 'deploy/switchyard.service'), 'utf8');
    assert.match(unit, /^Type=notify$/m);
    assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.match(unit, /^NoNewPrivileges=yes$/m);
    assert.match(unit, /^ProtectSystem=strict$/m);
    // verify checks that ExecStart's program exists: point it at this checkout's build.
    const dir = mkdtempSync(join(tmpdir(), 'swy-unit-'));
    const file = join(dir, 'switchyard.service');
    writeFileSync(file, unit.replaceAll('/usr/local/bin/switchyard', `${process.execPath} ${CLI}`));
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.stderr.trim(), '', r.stderr);
  });
});
