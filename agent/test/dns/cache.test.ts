// The answer cache on a driven clock: TTLs count down in replies, entries leave when their TTL
// ends, denials are kept per the SOA minimum, failures never, and the size bound holds.
import packet, { type Answer, type Packet } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { cacheKey, DnsCache } from '../../src/dns/cache.js';
import { isProblem, parseQuery, type Query } from '../../src/dns/wire.js';

const question = (name: string) => ({ type: 'A' as const, name, class: 'IN' as const });
const queryFor = (name: string, id = 1): { q: Query; buf: Buffer } => {
  const buf = packet.encode({
    id,
    type: 'query',
    flags: packet.RECURSION_DESIRED,
    questions: [question(name)],
  });
  const q = parseQuery(buf);
  if (isProblem(q)) throw new Error(q.reason);
  return { q, buf };
};
const positive = (name: string, ttl: number): Packet => ({
  type: 'response',
  flags: 0,
  questions: [question(name)],
  answers: [{ type: 'A', name, ttl, class: 'IN', data: '192.0.2.1' } as Answer],
});
const soa = (ttl: number, minimum: number) =>
  ({ type: 'SOA', name: 'example.test', ttl, data: { mname: 'ns', rname: 'root', minimum } }) as Answer;

const ttlOf = (p: Packet) => ((p.answers ?? [])[0] as { ttl?: number } | undefined)?.ttl;

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (s: number) => (t += s * 1000) };
}

describe('DnsCache', () => {
  it('replies with TTLs reduced by the time held, and forgets the entry when the TTL ends', () => {
    const c = clock();
    const cache = new DnsCache({}, c.now);
    const key = cacheKey(question('a.example.test'));
    expect(cache.store(key, positive('a.example.test', 60), 100)).toBe(60);
    c.advance(25);
    const { q, buf } = queryFor('A.example.test', 42);
    const r = packet.decode(cache.findReply(key, q, buf)!);
    expect(r.id).toBe(42);
    expect(r.questions?.[0]?.name).toBe('A.example.test');
    expect(ttlOf(r)).toBe(35);
    // Stamped from the same encoding for another client within the same second.
    const again = packet.decode(
      cache.findReply(key, queryFor('a.example.test', 43).q, queryFor('a.example.test', 43).buf)!,
    );
    expect(again.id).toBe(43);
    expect(ttlOf(again)).toBe(35);
    c.advance(35);
    expect(cache.findReply(key, q, buf)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps a denial for min(SOA TTL, SOA minimum), and nothing without an SOA or on SERVFAIL', () => {
    const cache = new DnsCache({}, clock().now);
    const nx = (authorities: Answer[]): Packet => ({
      type: 'response',
      flags: 3,
      questions: [question('n.test')],
      authorities,
    });
    expect(cache.store('a', nx([soa(300, 60)]), 100)).toBe(60);
    expect(cache.store('b', nx([soa(30, 600)]), 100)).toBe(30);
    expect(cache.store('c', nx([]), 100)).toBe(0);
    expect(cache.store('d', { type: 'response', flags: 2, questions: [question('s.test')] }, 100)).toBe(0);
    expect(cache.size).toBe(2);
  });

  it('stays within its entry and byte bounds, dropping the oldest first', () => {
    const cache = new DnsCache({ maxEntries: 3, maxBytes: 1000 }, clock().now);
    for (let i = 0; i < 10; i++) cache.store(`k${i}`, positive(`n${i}.test`, 60), 100);
    expect(cache.size).toBe(3);
    const { q, buf } = queryFor('n9.test');
    expect(cache.findReply('k9', q, buf)).toBeDefined();
    expect(cache.findReply('k0', q, buf)).toBeUndefined();
    for (let i = 0; i < 3; i++) cache.store(`big${i}`, positive(`b${i}.test`, 60), 600);
    expect(cache.bytes).toBeLessThanOrEqual(1000);
  });
});
