/**
 * Certificate and key files watched for changes: a renewed certificate (certbot, an ACME client,
 * a deploy) takes effect in every worker without a restart and without dropping a connection.
 * Polled (fs.watchFile): a file replaced by a rename, as most tools write them, is still seen.
 * A change is acted on once the files have been quiet for SETTLE_MS, since a certificate and its
 * key are rarely written in the same instant.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs';

const POLL_MS = 2000;
const SETTLE_MS = 1000;

export class CertificateWatch {
  private files: string[] = [];
  private changed = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly onChange: (changed: string[]) => void) {}

  /** Watch these files (and stop watching any other). */
  watch(files: readonly string[]): void {
    this.stop();
    this.files = [...files];
    for (const file of this.files) {
      watchFile(file, { interval: POLL_MS, persistent: false }, (now: Stats, before: Stats) => {
        if (now.mtimeMs === before.mtimeMs && now.size === before.size && now.ino === before.ino) return;
        this.changed.add(file);
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = setTimeout(() => this.fire(), SETTLE_MS);
        this.timer.unref();
      });
    }
  }

  private fire(): void {
    this.timer = null;
    const changed = [...this.changed];
    this.changed.clear();
    this.onChange(changed);
  }

  stop(): void {
    for (const file of this.files) unwatchFile(file);
    this.files = [];
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
