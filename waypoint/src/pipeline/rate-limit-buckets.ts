// Token buckets for the TrafficPolicy `rateLimits`, kept outside the config snapshot (as clusters
// are): a config update that leaves a limit unchanged leaves its buckets, and their spent tokens,
// alone.
//
//   RateLimits ── id (policy#name) ──► BucketGroup (one per limit: signature, metric series)
//                                          └── key value ──► TokenBucket (level, at)
//
// Invariants:
// - A bucket holds at most `burst` tokens and gains `requests` per `intervalMs`, continuously. Levels
//   are kept in units of (token × intervalMs): refill adds elapsed ms × requests, a request costs
//   intervalMs, so with a whole-millisecond clock the arithmetic is exact.
// - A group is reused while its limit's signature (requests, interval, burst, key) is unchanged;
//   any change starts it over with full buckets. Groups of limits gone from the config are dropped
//   on the next update (`retain`).
// - A group holds at most `maxKeys` buckets: when it is full, buckets that have refilled completely
//   go first (forgetting them changes nothing); if that frees less than a tenth, the oldest go too.
//   Each sweep frees at least a tenth, so its cost is spread over as many new keys.
// - The clock is injected (monotonic milliseconds): tests drive time, nothing here sleeps.
import { createHash } from 'node:crypto';
import { type CounterSeries, SeriesCounter } from '@hypha/shared/telemetry';
import type { Registry } from 'prom-client';
import type { RateLimitSpec } from '../traffic/policy.js';

export type Clock = () => number;

export class TokenBucket {
  /** Tokens × intervalMs. */
  level: number;
  /** When `level` was last brought up to date. */
  at: number;

  constructor(spec: RateLimitSpec, now: number) {
    this.level = spec.burst * spec.intervalMs;
    this.at = now;
  }

  /** Brings the level up to `now`; returns whether a request may take a token. */
  refill(spec: RateLimitSpec, now: number): boolean {
    if (now > this.at) {
      this.level = Math.min(spec.burst * spec.intervalMs, this.level + (now - this.at) * spec.requests);
      this.at = now;
    }
    return this.level >= spec.intervalMs;
  }

  take(spec: RateLimitSpec): void {
    this.level -= spec.intervalMs;
  }

  /** Whole tokens left. */
  remaining(spec: RateLimitSpec): number {
    return Math.floor(this.level / spec.intervalMs);
  }

  /** Milliseconds until the next whole token (0 when one is there). */
  msToNextToken(spec: RateLimitSpec): number {
    return Math.max(0, (spec.intervalMs - this.level) / spec.requests);
  }

  isFull(spec: RateLimitSpec): boolean {
    return this.level >= spec.burst * spec.intervalMs;
  }
}

/** Keys longer than this are stored as their SHA-256 (a header can be kilobytes long). */
const MAX_KEY_CHARS = 128;

export class BucketGroup {
  spec: RateLimitSpec;
  readonly allowed: CounterSeries<RateLimitLabel>;
  readonly limited: CounterSeries<RateLimitLabel>;
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #maxKeys: number;

  constructor(spec: RateLimitSpec, maxKeys: number, counter: SeriesCounter<RateLimitLabel>) {
    this.spec = spec;
    this.#maxKeys = maxKeys;
    const labels = { policy: spec.policy, limit: spec.name };
    this.allowed = counter.series({ ...labels, decision: 'allowed' });
    this.limited = counter.series({ ...labels, decision: 'limited' });
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** The bucket for a key value, created full on first use. */
  find(key: string, now: number): TokenBucket {
    const k = key.length > MAX_KEY_CHARS ? createHash('sha256').update(key).digest('base64') : key;
    let b = this.#buckets.get(k);
    if (b === undefined) {
      if (this.#buckets.size >= this.#maxKeys) this.#sweep(now);
      b = new TokenBucket(this.spec, now);
      this.#buckets.set(k, b);
    }
    return b;
  }

  #sweep(now: number): void {
    const spec = this.spec;
    const target = this.#maxKeys - Math.max(1, Math.floor(this.#maxKeys / 10));
    for (const [k, b] of this.#buckets) {
      b.refill(spec, now);
      if (b.isFull(spec)) this.#buckets.delete(k);
    }
    // Insertion order: the oldest buckets first.
    for (const k of this.#buckets.keys()) {
      if (this.#buckets.size <= target) break;
      this.#buckets.delete(k);
    }
  }
}

export type RateLimitLabel = 'policy' | 'limit' | 'decision';

export class RateLimits {
  readonly now: Clock;
  readonly #maxKeys: number;
  readonly #counter: SeriesCounter<RateLimitLabel>;
  readonly #byId = new Map<string, BucketGroup>();
  /** Compiled limit → its group: one lookup per request while the compiled object lives. */
  readonly #bySpec = new WeakMap<RateLimitSpec, BucketGroup>();

  constructor(opts: { registry: Registry; now?: Clock | undefined; maxKeysPerLimit?: number }) {
    this.#counter = new SeriesCounter({
      name: 'hypha_waypoint_ratelimit_total',
      help: 'Requests checked against a TrafficPolicy rate limit, by decision (allowed, limited)',
      labelNames: ['policy', 'limit', 'decision'],
      registers: [opts.registry],
    });
    this.now = opts.now ?? (() => performance.now());
    this.#maxKeys = opts.maxKeysPerLimit ?? 10_000;
  }

  /** The buckets of a limit: the same group while the limit's signature is unchanged. */
  findGroup(spec: RateLimitSpec): BucketGroup {
    let g = this.#bySpec.get(spec);
    if (g !== undefined) return g;
    g = this.#byId.get(spec.id);
    if (g === undefined || g.spec.signature !== spec.signature) {
      g = new BucketGroup(spec, this.#maxKeys, this.#counter);
      this.#byId.set(spec.id, g);
    } else g.spec = spec;
    this.#bySpec.set(spec, g);
    return g;
  }

  /** Drops the buckets of limits that are no longer configured. */
  retain(live: Iterable<{ readonly rateLimits: readonly RateLimitSpec[] }>): void {
    const ids = new Set<string>();
    for (const t of live) for (const l of t.rateLimits) ids.add(l.id);
    for (const id of this.#byId.keys()) if (!ids.has(id)) this.#byId.delete(id);
  }

  /** How many limits have buckets (for tests and admin pages). */
  get groups(): number {
    return this.#byId.size;
  }
}
