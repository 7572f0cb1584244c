// Keeps a certificate for every workload identity the agent serves.
//
// Invariants:
// - One fetch at a time per identity (single flight): a thousand connections of a new pod wait on
//   one CSR, not a thousand.
// - At most `maxConcurrentFetches` (8) CSRs in flight overall, first fetches ahead of renewals, so a
//   node full of renewals cannot starve a pod that has no certificate yet.
// - A certificate is renewed at about half its remaining life (jittered so a node's pods do not
//   renew in lockstep). On failure the old certificate stays in use until it expires, and the fetch
//   is retried with exponential backoff from 0.5 s to 150 s. Each failed renewal is reported
//   (onRenewalFailed) and so is a certificate that reaches notAfter without renewal (onExpired).
// - Time and timers come from an injectable clock, so tests can move through a day in milliseconds.
import type { WorkloadCertificate } from './ca.js';
import type { SpiffeId } from './spiffe.js';

export type CertificateProvider = (id: SpiffeId) => Promise<WorkloadCertificate>;

export interface CertManagerClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: CertManagerClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.min(ms, 2 ** 31 - 1));
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface CertManagerOptions {
  /** Where certificates come from: a function, or anything with fetchWorkloadCertificate (CaClient). */
  provider: CertificateProvider | { fetchWorkloadCertificate(id: SpiffeId): Promise<WorkloadCertificate> };
  clock?: CertManagerClock;
  /** [0, 1) random source for jitter. */
  random?: () => number;
  maxConcurrentFetches?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Renewal happens at (1 - renewJitter * random) of half the remaining life. Default 0.1. */
  renewJitter?: number;
  /** A renewal of a held certificate failed (the held one stays in use until notAfter). */
  onRenewalFailed?: (event: RenewalFailure) => void;
  /** A held certificate reached notAfter without being renewed; new connections for it fail. */
  onExpired?: (event: { id: SpiffeId; notAfter: Date; lastError?: string }) => void;
}

export interface RenewalFailure {
  id: SpiffeId;
  notAfter: Date;
  error: Error;
  failures: number;
  /** When the next attempt is due (epoch ms). */
  nextAttemptAt: number;
}

export type CertManagerErrorCode = 'CERT_UNAVAILABLE' | 'CERT_FORGOTTEN' | 'CERT_MANAGER_CLOSED';

export class CertManagerError extends Error {
  readonly code: CertManagerErrorCode;
  constructor(code: CertManagerErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CertManagerError';
    this.code = code;
  }
}

/** `expired`: the held certificate is past notAfter (renewal kept failing); new connections fail. */
export type CertificateState = 'fetching' | 'ready' | 'renewing' | 'backoff' | 'expired';

/** One identity's status, for /certs on the admin port and for expiry metrics. */
export interface CertificateStatus {
  id: SpiffeId;
  state: CertificateState;
  serial?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** When the next renewal or retry is due (epoch ms). */
  nextAttemptAt?: number;
  failures: number;
  lastError?: string;
}

interface Waiter {
  resolve(cert: WorkloadCertificate): void;
  reject(err: Error): void;
}

interface Entry {
  id: SpiffeId;
  cert?: WorkloadCertificate;
  attempting: boolean;
  waiters: Waiter[];
  timer?: unknown;
  /** While renewal fails: fires at the held certificate's notAfter, to report its expiry. */
  expiryTimer?: unknown;
  /** The certificate whose expiry was reported (once each). */
  expiryReported?: WorkloadCertificate;
  nextAttemptAt?: number;
  failures: number;
  lastError?: Error;
  gone: boolean;
}

export class CertManager {
  readonly #provider: CertificateProvider;
  readonly #clock: CertManagerClock;
  readonly #random: () => number;
  readonly #max: number;
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  readonly #renewJitter: number;
  readonly #onRenewalFailed: CertManagerOptions['onRenewalFailed'];
  readonly #onExpired: CertManagerOptions['onExpired'];
  readonly #entries = new Map<string, Entry>();
  readonly #listeners = new Set<(id: SpiffeId, cert: WorkloadCertificate) => void>();
  // Slots for fetches: first fetches (no certificate yet) go ahead of renewals.
  #active = 0;
  readonly #urgent: (() => void)[] = [];
  readonly #routine: (() => void)[] = [];
  #closed = false;

  constructor(opts: CertManagerOptions) {
    const p = opts.provider;
    this.#provider = typeof p === 'function' ? p : (id) => p.fetchWorkloadCertificate(id);
    this.#clock = opts.clock ?? systemClock;
    this.#random = opts.random ?? Math.random;
    this.#max = opts.maxConcurrentFetches ?? 8;
    this.#initialBackoff = opts.initialBackoffMs ?? 500;
    this.#maxBackoff = opts.maxBackoffMs ?? 150_000;
    this.#renewJitter = opts.renewJitter ?? 0.1;
    this.#onRenewalFailed = opts.onRenewalFailed;
    this.#onExpired = opts.onExpired;
  }

  /**
   * The current certificate for `id`, fetching it if there is none. Rejects with CERT_UNAVAILABLE
   * when the CA refused or could not be reached and no valid certificate is held (retries go on in
   * the background).
   */
  fetchCertificate(id: SpiffeId): Promise<WorkloadCertificate> {
    if (this.#closed)
      return Promise.reject(new CertManagerError('CERT_MANAGER_CLOSED', 'certificate manager is closed'));
    const key = id.toString();
    let e = this.#entries.get(key);
    if (e?.cert && this.#valid(e.cert)) return Promise.resolve(e.cert);
    if (!e) {
      e = { id, attempting: false, waiters: [], failures: 0, gone: false };
      this.#entries.set(key, e);
    }
    const entry = e;
    if (!entry.attempting && entry.lastError) {
      const retry =
        entry.nextAttemptAt === undefined
          ? ''
          : ` (next attempt in ${Math.max(0, Math.round((entry.nextAttemptAt - this.#clock.now()) / 1000))} s)`;
      return Promise.reject(
        new CertManagerError(
          'CERT_UNAVAILABLE',
          `no certificate for ${id}: ${entry.lastError.message}${retry}`,
          {
            cause: entry.lastError,
          },
        ),
      );
    }
    const p = new Promise<WorkloadCertificate>((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (!entry.attempting) this.#attempt(entry);
    return p;
  }

  /** The held certificate if it is valid now; never waits. */
  findCertificate(id: SpiffeId): WorkloadCertificate | undefined {
    const cert = this.#entries.get(id.toString())?.cert;
    return cert && this.#valid(cert) ? cert : undefined;
  }

  /** Expiry of the held certificate (also when expired), for metrics. */
  findExpiry(id: SpiffeId): Date | undefined {
    return this.#entries.get(id.toString())?.cert?.notAfter;
  }

  listCertificates(): CertificateStatus[] {
    return [...this.#entries.values()].map((e) => {
      const s: CertificateStatus = {
        id: e.id,
        state:
          e.cert && !this.#valid(e.cert)
            ? 'expired'
            : e.attempting
              ? e.cert
                ? 'renewing'
                : 'fetching'
              : e.lastError
                ? 'backoff'
                : 'ready',
        failures: e.failures,
      };
      if (e.cert) {
        s.serial = e.cert.serial;
        s.notBefore = e.cert.notBefore;
        s.notAfter = e.cert.notAfter;
      }
      if (e.nextAttemptAt !== undefined) s.nextAttemptAt = e.nextAttemptAt;
      if (e.lastError) s.lastError = e.lastError.message;
      return s;
    });
  }

  /** Called with every new certificate (first fetch and renewals), e.g. to refresh TLS contexts. */
  subscribe(listener: (id: SpiffeId, cert: WorkloadCertificate) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stop keeping a certificate for `id` (its last pod left the node). */
  forget(id: SpiffeId): void {
    const key = id.toString();
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    e.gone = true;
    this.#clearTimers(e);
    this.#settle(
      e,
      undefined,
      new CertManagerError('CERT_FORGOTTEN', `certificate for ${id} is no longer wanted`),
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const e of this.#entries.values()) {
      e.gone = true;
      this.#clearTimers(e);
      this.#settle(
        e,
        undefined,
        new CertManagerError('CERT_MANAGER_CLOSED', 'certificate manager is closed'),
      );
    }
    this.#entries.clear();
    this.#listeners.clear();
    // Queued attempts see `gone` and return their slot at once.
    for (const next of [...this.#urgent.splice(0), ...this.#routine.splice(0)]) next();
  }

  #clearTimers(e: Entry): void {
    if (e.timer !== undefined) this.#clock.clearTimeout(e.timer);
    if (e.expiryTimer !== undefined) this.#clock.clearTimeout(e.expiryTimer);
    e.timer = undefined;
    e.expiryTimer = undefined;
  }

  #valid(cert: WorkloadCertificate): boolean {
    return this.#clock.now() < cert.notAfter.getTime();
  }

  #attempt(e: Entry): void {
    e.attempting = true;
    if (e.timer !== undefined) {
      this.#clock.clearTimeout(e.timer);
      e.timer = undefined;
    }
    e.nextAttemptAt = undefined;
    const urgent = !e.cert || !this.#valid(e.cert);
    void this.#acquire(urgent).then(async () => {
      try {
        if (e.gone) return;
        let cert: WorkloadCertificate;
        try {
          cert = await this.#provider(e.id);
        } catch (err) {
          if (e.gone) return;
          this.#failed(e, err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (e.gone) return;
        this.#succeeded(e, cert);
      } finally {
        this.#release();
      }
    });
  }

  #succeeded(e: Entry, cert: WorkloadCertificate): void {
    const now = this.#clock.now();
    e.cert = cert;
    e.failures = 0;
    e.lastError = undefined;
    e.attempting = false;
    // Half of the life left when it arrived (not of notBefore..notAfter): the CA backdates
    // notBefore, and local clocks may differ from the CA's.
    const remaining = Math.max(0, cert.notAfter.getTime() - now);
    const delay = (remaining / 2) * (1 - this.#renewJitter * this.#random());
    this.#schedule(e, delay);
    if (e.expiryTimer !== undefined) this.#clock.clearTimeout(e.expiryTimer);
    e.expiryTimer = undefined;
    this.#settle(e, cert, undefined);
    for (const l of this.#listeners) {
      try {
        l(e.id, cert);
      } catch {
        // A listener's failure must not stop the others nor the manager.
      }
    }
  }

  #failed(e: Entry, err: Error): void {
    e.failures++;
    e.lastError = err;
    e.attempting = false;
    const base = Math.min(this.#maxBackoff, this.#initialBackoff * 2 ** Math.min(e.failures - 1, 30));
    // ±10 % so agents that lost the CA together do not come back together.
    const delay = Math.min(this.#maxBackoff, base * (0.9 + 0.2 * this.#random()));
    this.#schedule(e, delay);
    const held = e.cert;
    // Renewal is failing: watch for the held certificate's expiry (reported once per certificate).
    if (held && e.expiryTimer === undefined && e.expiryReported !== held) {
      e.expiryTimer = this.#clock.setTimeout(
        () => {
          e.expiryTimer = undefined;
          if (e.gone || e.cert !== held) return;
          e.expiryReported = held;
          const event: { id: SpiffeId; notAfter: Date; lastError?: string } = {
            id: e.id,
            notAfter: held.notAfter,
          };
          if (e.lastError) event.lastError = e.lastError.message;
          this.#notify(() => this.#onExpired?.(event));
        },
        Math.max(0, held.notAfter.getTime() - this.#clock.now()) + 1,
      );
    }
    if (held)
      this.#notify(() =>
        this.#onRenewalFailed?.({
          id: e.id,
          notAfter: held.notAfter,
          error: err,
          failures: e.failures,
          nextAttemptAt: e.nextAttemptAt ?? this.#clock.now() + delay,
        }),
      );
    this.#settle(
      e,
      undefined,
      new CertManagerError('CERT_UNAVAILABLE', `no certificate for ${e.id}: ${err.message}`, { cause: err }),
    );
  }

  #notify(fn: () => void): void {
    try {
      fn();
    } catch {
      // A reporting hook's failure must not stop the manager.
    }
  }

  #schedule(e: Entry, delayMs: number): void {
    e.nextAttemptAt = this.#clock.now() + delayMs;
    e.timer = this.#clock.setTimeout(() => {
      e.timer = undefined;
      if (!e.gone && !e.attempting) this.#attempt(e);
    }, delayMs);
  }

  #settle(e: Entry, cert: WorkloadCertificate | undefined, err: Error | undefined): void {
    const waiters = e.waiters.splice(0);
    for (const w of waiters) {
      if (cert) w.resolve(cert);
      else w.reject(err!);
    }
  }

  #acquire(urgent: boolean): Promise<void> {
    if (this.#active < this.#max) {
      this.#active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      (urgent ? this.#urgent : this.#routine).push(() => {
        this.#active++;
        resolve();
      });
    });
  }

  #release(): void {
    this.#active--;
    const next = this.#urgent.shift() ?? this.#routine.shift();
    if (next) next();
  }
}
