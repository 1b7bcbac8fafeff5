/**
 * TLS session ticket keys for the whole cluster. A client that resumes its session is usually
 * accepted by another worker than the one that issued its ticket; with one key made here and
 * given to every worker (and to every worker a reload starts), any worker can resume any session.
 * The key is replaced every ROTATE_MS, so that a stolen key opens at most that much traffic;
 * Node holds one key at a time, so tickets issued before a rotation get a full handshake.
 */
import { randomBytes } from 'node:crypto';

const ROTATE_MS = 12 * 60 * 60 * 1000;

export class TicketKeys {
  private key = randomBytes(48).toString('base64');
  private readonly timer: NodeJS.Timeout;

  constructor(onRotate: (key: string) => void, rotateMs = ROTATE_MS) {
    this.timer = setInterval(() => {
      this.key = randomBytes(48).toString('base64');
      onRotate(this.key);
    }, rotateMs);
    this.timer.unref();
  }

  /** Base64, as it crosses IPC. */
  get current(): string {
    return this.key;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
