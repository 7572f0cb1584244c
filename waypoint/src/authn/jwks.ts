// Remote JSON Web Key Sets (RequestAuthentication `jwksUri`), fetched and cached per URI. The cache
// outlives config snapshots (the proxy owns it), so a config update does not refetch keys.
//
// Invariants:
// - A key set is fetched when first needed, and again on the first request after it is older than
//   `refreshIntervalMs` (periodic refresh, driven by traffic: an idle waypoint fetches nothing).
// - A fetch tries `attempts` times (bounded retry); when every try fails, the last good key set stays
//   in use and the next refresh waits a full interval again. With no good set ever, the token fails.
// - A token whose `kid` is not in the set triggers at most one refetch per `kidRefreshIntervalMs`
//   per URI (key rotation at the issuer); after that, and until the interval passes, it fails (401).
// - One fetch per URI at a time: concurrent requests wait for the same fetch.
// - The clock is injected (`now`), so tests drive intervals without sleeping.
import {
  createLocalJWKSet,
  errors,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
} from 'jose';

export interface JwksCacheOptions {
  /** Milliseconds, monotonic; default performance.now. */
  now?: () => number;
  /** Default 5 minutes. */
  refreshIntervalMs?: number;
  /** Least time between refetches caused by an unknown `kid`; default 60 s. */
  kidRefreshIntervalMs?: number;
  /** Tries per fetch; default 3. */
  attempts?: number;
  /** Pause between tries; default 200 ms. */
  retryDelayMs?: number;
  /** Per try; default 5 s. */
  timeoutMs?: number;
  /** Called once per failed fetch (all tries), to log it. */
  onFetchError?: (uri: string, err: Error) => void;
}

type KeyFn = ReturnType<typeof createLocalJWKSet>;

interface Entry {
  keys: KeyFn | undefined;
  fetchedAt: number;
  kidRefreshAt: number;
  inflight: Promise<void> | undefined;
}

/** A fetch that failed on every try (the message says why, for the access log). */
export class JwksFetchError extends Error {
  constructor(uri: string, cause: string) {
    super(`Jwks remote fetch of ${uri} failed: ${cause}`);
    this.name = 'JwksFetchError';
  }
}

export class JwksCache {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  readonly #refreshMs: number;
  readonly #kidRefreshMs: number;
  readonly #attempts: number;
  readonly #retryDelayMs: number;
  readonly #timeoutMs: number;
  readonly #onFetchError: ((uri: string, err: Error) => void) | undefined;
  /** Fetches made (every try counts), for tests and metrics. */
  fetches = 0;

  constructor(opts: JwksCacheOptions = {}) {
    this.#now = opts.now ?? (() => performance.now());
    this.#refreshMs = opts.refreshIntervalMs ?? 300_000;
    this.#kidRefreshMs = opts.kidRefreshIntervalMs ?? 60_000;
    this.#attempts = Math.max(1, opts.attempts ?? 3);
    this.#retryDelayMs = opts.retryDelayMs ?? 200;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#onFetchError = opts.onFetchError;
  }

  /** The key for a token's protected header, for jose's `jwtVerify`. */
  async fetchKey(
    uri: string,
    header: JWSHeaderParameters,
    token: FlattenedJWSInput,
  ): Promise<Awaited<ReturnType<KeyFn>>> {
    let entry = this.#entries.get(uri);
    if (entry === undefined) {
      entry = {
        keys: undefined,
        fetchedAt: Number.NEGATIVE_INFINITY,
        kidRefreshAt: Number.NEGATIVE_INFINITY,
        inflight: undefined,
      };
      this.#entries.set(uri, entry);
    }
    if (entry.keys === undefined || this.#now() - entry.fetchedAt >= this.#refreshMs) {
      await this.#refresh(uri, entry);
    }
    if (entry.keys === undefined) throw new JwksFetchError(uri, 'no key set fetched yet');
    try {
      return await entry.keys(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      if (this.#now() - entry.kidRefreshAt < this.#kidRefreshMs) throw err;
      entry.kidRefreshAt = this.#now();
      await this.#refresh(uri, entry);
      return entry.keys(header, token);
    }
  }

  #refresh(uri: string, entry: Entry): Promise<void> {
    entry.inflight ??= this.#fetch(uri, entry).finally(() => {
      entry.inflight = undefined;
    });
    return entry.inflight;
  }

  async #fetch(uri: string, entry: Entry): Promise<void> {
    let last = '';
    for (let i = 0; i < this.#attempts; i++) {
      if (i > 0 && this.#retryDelayMs > 0) await new Promise((r) => setTimeout(r, this.#retryDelayMs));
      this.fetches++;
      try {
        const res = await fetch(uri, { signal: AbortSignal.timeout(this.#timeoutMs) });
        if (!res.ok) {
          last = `HTTP ${res.status}`;
          await res.body?.cancel();
          continue;
        }
        const set = (await res.json()) as JSONWebKeySet;
        entry.keys = createLocalJWKSet(set);
        entry.fetchedAt = this.#now();
        return;
      } catch (err) {
        last = (err as Error).message;
      }
    }
    // Every try failed: keep the last good set; try again after a full interval.
    entry.fetchedAt = this.#now();
    this.#onFetchError?.(uri, new JwksFetchError(uri, last));
  }
}
