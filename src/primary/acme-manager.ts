/**
 * Automatic certificates (ACME, RFC 8555), run by the primary so that the cluster holds one
 * account and makes one order per name, never one per worker. It loads what `acme.storage` holds,
 * orders what is missing or due (two thirds into a certificate's lifetime), retries failures with
 * a doubling delay, and answers workers that meet an SNI name with no certificate (on demand,
 * when `acme.onDemand.ask` allows it). The protocol itself is acme-client's.
 *
 * Challenges and certificates reach the workers through `publish`, which resolves once every
 * worker has them: the CA is told to validate only when any worker it reaches can answer.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as tls from 'node:tls';
import * as acme from 'acme-client';
import type { ResolvedAcme } from '../config/acme';
import { isOrderableName } from '../config/schema';
import type { AcmeUpdate } from '../ipc';
import { errField, type Logger } from '../log';
import { AcmeStorage, type StoredCertificate } from './acme-storage';

/** Past a failure, retries wait acme.retryDelay, doubled each time up to this. */
const MAX_RETRY_MS = 60 * 60_000;
/** setTimeout's longest wait; a renewal further away is re-armed when it fires. */
const MAX_TIMER_MS = 2_147_483_647;
/** An ACME server that stops answering must not hold an order (and its lock) forever. */
const REQUEST_TIMEOUT_MS = 30_000;
const ASK_TIMEOUT_MS = 5_000;

interface Held extends StoredCertificate {
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface AcmePublisher {
  /** Resolves once every worker applied the update (or is gone). */
  publish(update: AcmeUpdate): Promise<void>;
}

export class AcmeManager {
  private readonly storage: AcmeStorage;
  private readonly held = new Map<string, Held>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  /** Challenge answers now published: a worker started meanwhile gets them too. */
  private readonly challenges = new Map<string, AcmeUpdate>();
  /** Start times of on-demand orders in the last minute (acme.onDemand.maxPerMinute). */
  private onDemandStarts: number[] = [];
  private client: acme.Client | null = null;
  /** After a failed order: ask the CA for the account again (it may have forgotten it). */
  private recheckAccount = false;
  private readonly abort = new AbortController();

  constructor(
    readonly config: ResolvedAcme,
    private readonly publisher: AcmePublisher,
    private readonly logger: Logger,
  ) {
    this.storage = new AcmeStorage(config.storage, config.directory);
    if (config.caRoot !== undefined) {
      acme.axios.defaults.httpsAgent = new https.Agent({
        ca: [...tls.rootCertificates, readFileSync(config.caRoot, 'utf8')],
      });
    }
    acme.axios.defaults.timeout = REQUEST_TIMEOUT_MS;
    // acme-client retries a failed request up to 5 times, 5 to 25 s apart, within one order: a CA
    // that is down would hold an order for over a minute, unlogged. The order fails at once
    // instead, and this manager's own retry (logged, doubling from acme.retryDelay) takes over.
    (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings.retryMaxAttempts =
      0;
  }

  /** Every configured name: from storage when it holds a certificate not yet due, else ordered. */
  start(): void {
    for (const name of this.config.hosts) void this.ensure(name, 'configured');
  }

  stop(): void {
    this.abort.abort();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** What a worker that starts now must know: every certificate held and challenge pending. */
  state(): AcmeUpdate[] {
    const out: AcmeUpdate[] = [];
    for (const [name, h] of this.held) out.push({ kind: 'certificate', name, cert: h.cert, key: h.key });
    out.push(...this.challenges.values());
    return out;
  }

  /**
   * A worker met `name` in a handshake and holds no certificate for it. Resolves with null once
   * every worker has one, or with why not.
   */
  async onDemand(rawName: string): Promise<string | null> {
    const name = rawName.toLowerCase().replace(/\.$/, '');
    if (this.held.has(name)) return null;
    const running = this.inFlight.get(name);
    if (running !== undefined) return running.then(() => (this.held.has(name) ? null : 'the order failed'));
    if (!this.config.hosts.includes(name)) {
      const od = this.config.onDemand;
      if (od === undefined) return 'not a configured name, and acme.onDemand is off';
      if (!isOrderableName(name)) return 'not a name a CA issues for';
      // A certificate issued on demand before (this run or an earlier one) needs no new ask.
      if (this.readStored(name) === null) {
        const refusal = await this.ask(od.ask, name);
        if (refusal !== null) return refusal;
        const now = Date.now();
        this.onDemandStarts = this.onDemandStarts.filter((t) => now - t < 60_000);
        if (this.onDemandStarts.length >= od.maxPerMinute) {
          this.logger.warn(
            { event: 'acme-rate-limited', name },
            `acme: on-demand order for ${name} refused: rate limit`,
          );
          return `rate limit: ${od.maxPerMinute} on-demand orders a minute`;
        }
        this.onDemandStarts.push(now);
      }
    }
    await this.ensure(name, 'on demand');
    return this.held.has(name) ? null : 'the order failed';
  }

  /** One at a time per name: load or order, then schedule the renewal (or the retry). */
  private ensure(name: string, why: string): Promise<void> {
    let running = this.inFlight.get(name);
    if (running === undefined) {
      running = this.obtain(name, why).finally(() => this.inFlight.delete(name));
      this.inFlight.set(name, running);
    }
    return running;
  }

  private async obtain(name: string, why: string): Promise<void> {
    const timer = this.timers.get(name);
    if (timer !== undefined) clearTimeout(timer);
    this.timers.delete(name);
    let unlock: (() => void) | null = null;
    try {
      const current = this.held.get(name) ?? this.readStored(name);
      if (current !== null && !this.due(current)) {
        await this.serve(name, current, 'storage');
        return;
      }
      unlock = await this.storage.lock(name, this.abort.signal);
      // Read again under the lock: another machine on this storage may have just renewed it.
      const stored = this.readStored(name) ?? current;
      if (stored !== null && !this.due(stored)) {
        await this.serve(name, stored, 'storage');
        return;
      }
      // A certificate still valid is served while its successor is ordered.
      if (stored !== null) await this.serve(name, stored, 'storage', false);
      const reason = stored !== null ? 'renewal' : why;
      this.logger.info({ event: 'acme-order', name, reason }, `acme: ordering a certificate for ${name} (${reason})`);
      const issued = this.load(await this.order(name));
      this.storage.writeCertificate(name, issued);
      this.failures.delete(name);
      await this.serve(name, issued, 'order');
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.client = null;
      this.recheckAccount = true;
      const failures = (this.failures.get(name) ?? 0) + 1;
      this.failures.set(name, failures);
      const retryInMs = Math.min(this.config.retryDelay * 2 ** (failures - 1), MAX_RETRY_MS);
      this.logger.error(
        { event: 'acme-failed', name, failures, retryInMs, err: errField(err) },
        `acme: no certificate for ${name} this time; retrying in ${Math.round(retryInMs / 1000)} s`,
      );
      this.arm(name, retryInMs);
    } finally {
      unlock?.();
    }
  }

  /** What storage holds for `name`, when it loads and has not expired. */
  private readStored(name: string): Held | null {
    try {
      const stored = this.storage.readCertificate(name);
      if (stored === null) return null;
      const held = this.held.get(name);
      if (held !== undefined && held.cert === stored.cert) return held;
      const h = this.load(stored);
      return h.notAfter > Date.now() ? h : null;
    } catch (err) {
      this.logger.warn({ name, err: errField(err) }, `acme: the stored certificate of ${name} does not load`);
      return null;
    }
  }

  /** Throws unless the certificate and key load as a pair: a wrong key is never served. */
  private load(c: StoredCertificate): Held {
    const x509 = new X509Certificate(c.cert);
    tls.createSecureContext({ cert: c.cert, key: c.key });
    return { ...c, notBefore: Date.parse(x509.validFrom), notAfter: Date.parse(x509.validTo) };
  }

  /** Two thirds into its lifetime, as Let's Encrypt and Caddy recommend. */
  private renewAt(h: Held): number {
    return h.notBefore + ((h.notAfter - h.notBefore) * 2) / 3;
  }

  private due(h: Held): boolean {
    return Date.now() >= this.renewAt(h);
  }

  /** Every worker gets `h` for `name`; then its renewal is armed (unless `arm` is false: one is under way). */
  private async serve(name: string, h: Held, source: 'storage' | 'order', arm = true): Promise<void> {
    if (this.held.get(name) !== h) {
      this.held.set(name, h);
      await this.publisher.publish({ kind: 'certificate', name, cert: h.cert, key: h.key });
      this.logger.info(
        {
          event: 'certificate-obtained',
          name,
          source,
          notAfter: new Date(h.notAfter).toISOString(),
          renewAt: new Date(this.renewAt(h)).toISOString(),
        },
        `acme: serving ${source === 'order' ? 'a new' : 'the stored'} certificate for ${name}`,
      );
    }
    if (arm) this.arm(name, Math.max(0, this.renewAt(h) - Date.now()));
  }

  private arm(name: string, inMs: number): void {
    if (this.abort.signal.aborted) return;
    const timer = setTimeout(
      () => {
        this.timers.delete(name);
        const h = this.held.get(name);
        // Fired early (a wait past setTimeout's range): arm again for the rest.
        if (h !== undefined && !this.due(h) && this.failures.get(name) === undefined) {
          this.arm(name, this.renewAt(h) - Date.now());
          return;
        }
        void this.ensure(name, 'retry');
      },
      Math.min(inMs, MAX_TIMER_MS),
    );
    timer.unref();
    this.timers.set(name, timer);
  }

  private async order(name: string): Promise<StoredCertificate> {
    const client = await this.acmeClient();
    const privateKey = newKey();
    const [, csr] = await acme.crypto.createCsr({ commonName: name, altNames: [name] }, privateKey);
    const cert = await client.auto({
      csr,
      ...(this.config.email !== undefined ? { email: this.config.email } : {}),
      termsOfServiceAgreed: true,
      // The CA checks; acme-client's own pre-check would resolve the name from here, which
      // behind NAT or split DNS says nothing about what the CA sees.
      skipChallengeVerification: true,
      challengePriority: [...this.config.challenges],
      challengeCreateFn: (authz, challenge, keyAuthorization) =>
        this.setChallenge(authz, challenge, keyAuthorization, true),
      challengeRemoveFn: (authz, challenge, keyAuthorization) =>
        this.setChallenge(authz, challenge, keyAuthorization, false),
    });
    return { cert, key: privateKey };
  }

  private async setChallenge(
    authz: acme.Authorization,
    challenge: { type: string; token: string },
    keyAuthorization: string,
    on: boolean,
  ): Promise<void> {
    let update: AcmeUpdate;
    let id: string;
    if (challenge.type === 'http-01') {
      id = `http-01 ${challenge.token}`;
      update = { kind: 'http-01', token: challenge.token, keyAuthorization: on ? keyAuthorization : null };
    } else if (challenge.type === 'tls-alpn-01') {
      const name = authz.identifier.value;
      id = `tls-alpn-01 ${name}`;
      if (on) {
        const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
        update = { kind: 'tls-alpn-01', name, cert: cert.toString(), key: key.toString() };
      } else {
        update = { kind: 'tls-alpn-01', name, cert: null, key: null };
      }
    } else {
      throw new Error(`challenge type ${challenge.type} is not one switchyard answers`);
    }
    if (on) this.challenges.set(id, update);
    else this.challenges.delete(id);
    await this.publisher.publish(update);
  }

  /** The account: stored, or made (and stored) once, under a lock shared with other machines. */
  private async acmeClient(): Promise<acme.Client> {
    if (this.client !== null) return this.client;
    const unlock = await this.storage.lock('account', this.abort.signal);
    try {
      let account = this.storage.readAccount();
      if (account === null) {
        account = { key: newKey() };
        this.storage.writeAccount(account);
      }
      const client = new acme.Client({
        directoryUrl: this.config.directory,
        accountKey: account.key,
        ...(account.url !== undefined && !this.recheckAccount ? { accountUrl: account.url } : {}),
      });
      if (account.url === undefined || this.recheckAccount) {
        // newAccount with a known key returns that account (RFC 8555 §7.3.1); with a key the CA
        // no longer knows (a test CA restarted, an account deactivated), a new one.
        await client.createAccount({
          termsOfServiceAgreed: true,
          ...(this.config.email !== undefined ? { contact: [`mailto:${this.config.email}`] } : {}),
        });
        this.recheckAccount = false;
        if (client.getAccountUrl() !== account.url) {
          this.storage.writeAccount({ key: account.key, url: client.getAccountUrl() });
          this.logger.info(
            { event: 'acme-account', url: client.getAccountUrl() },
            `acme: account registered at ${this.config.directory}`,
          );
        }
      }
      this.client = client;
      return client;
    } finally {
      unlock();
    }
  }

  /** null when `ask` answers 200 for `name`; else why not. */
  private async ask(url: string, name: string): Promise<string | null> {
    const target = new URL(url);
    target.searchParams.set('domain', name);
    try {
      const res = await fetch(target, { signal: AbortSignal.timeout(ASK_TIMEOUT_MS), redirect: 'manual' });
      await res.body?.cancel();
      if (res.status === 200) return null;
      this.logger.info(
        { event: 'acme-ask-refused', name, status: res.status },
        `acme: ${target.origin} refused a certificate for ${name}`,
      );
      return `acme.onDemand.ask answered ${res.status}`;
    } catch (err) {
      this.logger.warn(
        { event: 'acme-ask-failed', name, err: errField(err) },
        `acme: asking ${target.origin} about ${name} failed`,
      );
      return 'acme.onDemand.ask did not answer';
    }
  }
}

/** An ECDSA P-256 private key, PEM: for the account and for each certificate. */
function newKey(): string {
  return generateKeyPairSync('ec', {
    namedCurve: 'P-256',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  }).privateKey;
}
