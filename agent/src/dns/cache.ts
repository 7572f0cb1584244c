// The answer cache for forwarded names.
//
// Invariants:
// - An entry lives exactly as long as the smallest TTL in it allows (capped: MAX_POSITIVE_TTL for
//   answers, MAX_NEGATIVE_TTL for denials). Replies from the cache carry TTLs reduced by the time
//   the entry has been held, so a client never caches a name longer than the upstream said.
// - Denials (NXDOMAIN, or NOERROR without answers) are cached for min(SOA TTL, SOA minimum) per
//   RFC 2308 when the upstream sends an SOA, and not at all without one. SERVFAIL and other
//   failures are never cached.
// - Bounded: at most `maxEntries` entries and `maxBytes` of encoded replies; the oldest inserted
//   go first. Expired entries are dropped when met.
// - A hit costs one Map read and one buffer copy: the reply is encoded once per second of age
//   (TTLs tick in seconds) and per EDNS variant, then stamped with each client's id and question.
import type { Answer, Packet, Question } from 'dns-packet';
import { encodedQuestionEnd, encodeReply, type Query, RCODE, type ReplyRecords, stampReply } from './wire.js';

export const MAX_POSITIVE_TTL = 3600;
export const MAX_NEGATIVE_TTL = 1800;

export interface CacheLimits {
  maxEntries: number;
  maxBytes: number;
}

export const DEFAULT_CACHE_LIMITS: CacheLimits = { maxEntries: 10_000, maxBytes: 8 * 1024 * 1024 };

interface Template {
  readonly age: number;
  readonly buf: Buffer;
  readonly questionEnd: number;
}

interface Entry {
  readonly records: ReplyRecords;
  readonly storedAt: number;
  readonly expiresAt: number;
  readonly bytes: number;
  plain: Template | undefined;
  edns: Template | undefined;
}

export function cacheKey(q: Question): string {
  const name = q.name.endsWith('.') ? q.name.slice(0, -1) : q.name;
  return `${name.toLowerCase()}\u0000${q.type}\u0000${q.class ?? 'IN'}`;
}

/** How long a reply may be cached, in seconds (0: not at all). */
export function cacheTtl(reply: Packet): number {
  const rcode = (reply.flags ?? 0) & 0xf;
  const answers = reply.answers ?? [];
  if (rcode === RCODE.NOERROR && answers.length > 0) {
    let ttl = MAX_POSITIVE_TTL;
    for (const a of answers) ttl = Math.min(ttl, (a as { ttl?: number }).ttl ?? 0);
    for (const a of reply.authorities ?? []) ttl = Math.min(ttl, (a as { ttl?: number }).ttl ?? 0);
    return ttl;
  }
  if (rcode === RCODE.NXDOMAIN || rcode === RCODE.NOERROR) {
    for (const a of reply.authorities ?? []) {
      if (a.type !== 'SOA') continue;
      const minimum = (a.data as { minimum?: number }).minimum ?? 0;
      return Math.min(a.ttl ?? 0, minimum, MAX_NEGATIVE_TTL);
    }
  }
  return 0;
}

function withoutOpt(records: readonly Answer[] | undefined): Answer[] {
  return (records ?? []).filter((a) => a.type !== 'OPT');
}

function aged(records: readonly Answer[], age: number): Answer[] {
  if (age === 0) return records as Answer[];
  return records.map((a) => ({ ...a, ttl: Math.max(0, ((a as { ttl?: number }).ttl ?? 0) - age) }) as Answer);
}

export class DnsCache {
  readonly #limits: CacheLimits;
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  #bytes = 0;
  hits = 0;
  misses = 0;

  constructor(limits: Partial<CacheLimits> = {}, now: () => number = Date.now) {
    this.#limits = { ...DEFAULT_CACHE_LIMITS, ...limits };
    this.#now = now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Stores an upstream reply under its question; returns the TTL used (0: not cached). */
  store(key: string, reply: Packet, size: number): number {
    const ttl = cacheTtl(reply);
    if (ttl <= 0 || size > this.#limits.maxBytes) return 0;
    this.#delete(key);
    const now = this.#now();
    const entry: Entry = {
      records: {
        rcode: (reply.flags ?? 0) & 0xf,
        authoritative: false,
        answers: withoutOpt(reply.answers),
        authorities: withoutOpt(reply.authorities),
        additionals: withoutOpt(reply.additionals),
      },
      storedAt: now,
      expiresAt: now + ttl * 1000,
      bytes: size,
      plain: undefined,
      edns: undefined,
    };
    this.#entries.set(key, entry);
    this.#bytes += size;
    for (const [k, e] of this.#entries) {
      if (this.#entries.size <= this.#limits.maxEntries && this.#bytes <= this.#limits.maxBytes) break;
      if (e === entry) break;
      this.#delete(k);
    }
    return ttl;
  }

  /** The cached reply for this query, stamped for its client; undefined on a miss. */
  findReply(key: string, q: Query, query: Buffer): Buffer | undefined {
    const e = this.#entries.get(key);
    const now = this.#now();
    if (e === undefined || e.expiresAt <= now) {
      if (e !== undefined) this.#delete(key);
      this.misses++;
      return undefined;
    }
    this.hits++;
    const age = Math.floor((now - e.storedAt) / 1000);
    const edns = q.ednsUdpSize !== undefined;
    let t = edns ? e.edns : e.plain;
    if (t === undefined || t.age !== age) {
      const r = e.records;
      const buf = encodeReply(q, {
        ...r,
        answers: aged(r.answers, age),
        authorities: aged(r.authorities, age),
        additionals: aged(r.additionals, age),
      });
      t = { age, buf, questionEnd: encodedQuestionEnd(buf) };
      if (edns) e.edns = t;
      else e.plain = t;
      return buf;
    }
    return stampReply(t.buf, t.questionEnd, q, query);
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  #delete(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= e.bytes;
  }
}
