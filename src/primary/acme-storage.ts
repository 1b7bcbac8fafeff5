/**
 * Where ACME state lives between runs: `acme.storage`/<CA>/ holds the account (key and URL) and
 * one folder per name with its certificate chain and key. Files are written whole (a temporary
 * file, then a rename) and readable by switchyard's user only. Several machines may share the
 * directory (NFS, a synced volume): a lock file per name lets one of them order at a time, and
 * the others then find the certificate it stored.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export interface StoredAccount {
  /** PEM. */
  readonly key: string;
  /** The account's URL at the CA, once registered. */
  readonly url?: string;
}

export interface StoredCertificate {
  /** PEM: the certificate, then its chain. */
  readonly cert: string;
  readonly key: string;
}

/** A lock older than this was left by a machine that died mid-order: it is taken over. */
const STALE_LOCK_MS = 10 * 60_000;
const LOCK_POLL_MS = 500;

export class AcmeStorage {
  readonly dir: string;

  constructor(root: string, directoryUrl: string) {
    // One folder per CA: a staging account or certificate must never be served as production's.
    const url = new URL(directoryUrl);
    const ca = `${url.host}${url.pathname}`.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/-+$/, '');
    this.dir = join(root, ca);
  }

  readAccount(): StoredAccount | null {
    const key = this.read('account.key');
    if (key === null) return null;
    const url = this.read('account.url')?.trim();
    return url === undefined || url === '' ? { key } : { key, url };
  }

  writeAccount(account: StoredAccount): void {
    this.write('account.key', account.key);
    if (account.url !== undefined) this.write('account.url', `${account.url}\n`);
  }

  readCertificate(name: string): StoredCertificate | null {
    const cert = this.read(join('certificates', name, 'cert.pem'));
    const key = this.read(join('certificates', name, 'key.pem'));
    return cert === null || key === null ? null : { cert, key };
  }

  writeCertificate(name: string, stored: StoredCertificate): void {
    // The key first: a reader that sees the new certificate must find its key.
    this.write(join('certificates', name, 'key.pem'), stored.key);
    this.write(join('certificates', name, 'cert.pem'), stored.cert);
  }

  /**
   * Waits until no one else (another machine on the same storage, or this one) holds `name`'s
   * lock, takes it, and returns its release. A lock older than STALE_LOCK_MS is taken over.
   */
  async lock(name: string, signal?: AbortSignal): Promise<() => void> {
    const dir = join(this.dir, 'locks');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `${name}.lock`);
    const mine = `${hostname()} ${process.pid} ${randomBytes(6).toString('hex')}\n`;
    for (;;) {
      signal?.throwIfAborted();
      try {
        writeFileSync(file, mine, { flag: 'wx', mode: 0o600 });
        return () => {
          // Only our own lock: one taken over as stale is someone else's now.
          if (this.readAbsolute(file) === mine) rmSync(file, { force: true });
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      try {
        if (Date.now() - statSync(file).mtimeMs > STALE_LOCK_MS) rmSync(file, { force: true });
      } catch {
        // Released meanwhile: try again at once.
        continue;
      }
      await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
    }
  }

  private read(relative: string): string | null {
    return this.readAbsolute(join(this.dir, relative));
  }

  private readAbsolute(file: string): string | null {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  private write(relative: string, content: string): void {
    const file = join(this.dir, relative);
    mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, content, { mode: 0o600 });
    renameSync(tmp, file);
  }
}
