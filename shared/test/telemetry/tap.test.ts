// The tap hub: free without readers, filters as asked, never buffers for a slow reader.
import {
  MAX_TAP_SUBSCRIBERS,
  parseTapFilter,
  type TapEvent,
  TapFilterError,
  TapHub,
  type TapSink,
  tapFilterQuery,
  tapMatches,
} from '@hypha/shared/telemetry';
import { describe, expect, it } from 'vitest';

const event = (o: Partial<TapEvent> = {}): TapEvent => ({
  kind: 'request',
  time: '2026-12-02T00:00:00.000Z',
  reporter: 'waypoint shop/waypoint',
  source: {
    ip: '10.0.0.1',
    workload: 'web',
    namespace: 'shop',
    identity: 'spiffe://cluster.local/ns/shop/sa/web',
  },
  destination: { ip: '10.0.0.2', workload: 'reviews-v1', namespace: 'shop', service: 'shop/reviews' },
  mtls: true,
  method: 'GET',
  path: '/api/v1/items',
  status: 503,
  flags: 'UF',
  durationMs: 1.5,
  bytesSent: 10,
  bytesReceived: 0,
  ...o,
});

/** A sink that accepts `room` lines, then reports full until drained. */
function sink(room = Number.POSITIVE_INFINITY) {
  const lines: string[] = [];
  let drain: (() => void) | undefined;
  const s: TapSink & { lines: string[]; drain(): void } = {
    lines,
    write(_event, line) {
      lines.push(line());
      return lines.length < room;
    },
    onDrain(l) {
      drain = l;
    },
    drain() {
      room = Number.POSITIVE_INFINITY;
      drain?.();
    },
  };
  return s;
}

describe('tap filters', () => {
  const filter = (q: Record<string, string>) => parseTapFilter((k) => q[k]);

  it('match what a user asks for: namespace, destination by workload or service, source, method, path, status', () => {
    const e = event();
    expect(tapMatches(filter({ namespace: 'shop' }), e)).toBe(true);
    expect(tapMatches(filter({ namespace: 'other' }), e)).toBe(false);
    for (const to of ['reviews-v1', 'shop/reviews-v1', 'shop/reviews', '10.0.0.2']) {
      expect(tapMatches(filter({ to }), e), to).toBe(true);
    }
    expect(tapMatches(filter({ to: 'shop/web' }), e)).toBe(false);
    expect(tapMatches(filter({ from: 'shop/web' }), e)).toBe(true);
    expect(tapMatches(filter({ method: 'get' }), e)).toBe(true);
    expect(tapMatches(filter({ path: '/api/' }), e)).toBe(true);
    expect(tapMatches(filter({ path: '/api/*/items' }), e)).toBe(true);
    expect(tapMatches(filter({ path: '/admin' }), e)).toBe(false);
    expect(tapMatches(filter({ status: '5xx' }), e)).toBe(true);
    expect(tapMatches(filter({ status: '503' }), e)).toBe(true);
    expect(tapMatches(filter({ status: '2xx' }), e)).toBe(false);
    expect(tapMatches(filter({ kind: 'connection' }), e)).toBe(false);
  });

  it('refuse a bad status or kind with the value named, and round-trip through the query string', () => {
    expect(() => filter({ status: 'teapot' })).toThrow(TapFilterError);
    expect(() => filter({ status: 'teapot' })).toThrow(
      /status "teapot" must be a code \(503\) or a class \(5xx\)/,
    );
    expect(() => filter({ kind: 'udp' })).toThrow(/kind "udp" must be "request" or "connection"/);
    const f = filter({ namespace: 'shop', path: '/a b', status: '5xx' });
    const back = new URLSearchParams(tapFilterQuery(f).slice(1));
    expect(parseTapFilter((k) => back.get(k))).toEqual(f);
  });
});

describe('TapHub', () => {
  it('builds no event while nobody listens', () => {
    const hub = new TapHub();
    let built = 0;
    hub.publish(() => {
      built++;
      return event();
    });
    expect([hub.active, built, hub.published]).toEqual([false, 0, 0]);
  });

  it('sends each reader what its filter matches; a reader that leaves gets nothing more', () => {
    const hub = new TapHub();
    const all = sink();
    const ok = sink();
    const leave = hub.subscribe({}, all)!;
    hub.subscribe({ status: '2xx' }, ok);
    hub.publish(() => event());
    hub.publish(() => event({ status: 200, flags: '-' }));
    expect(all.lines.map((l) => JSON.parse(l).status)).toEqual([503, 200]);
    expect(ok.lines.map((l) => JSON.parse(l).status)).toEqual([200]);
    leave();
    hub.publish(() => event());
    expect(all.lines).toHaveLength(2);
  });

  it('a slow reader misses events instead of buffering them, and is told how many once it drains', () => {
    const hub = new TapHub();
    const slow = sink(1);
    hub.subscribe({}, slow);
    for (let i = 0; i < 5; i++) hub.publish(() => event({ path: `/${i}` }));
    expect(slow.lines).toHaveLength(1);
    slow.drain();
    hub.publish(() => event({ path: '/after' }));
    expect(slow.lines.slice(1).map((l) => JSON.parse(l))).toEqual([
      { kind: 'dropped', count: 4 },
      expect.objectContaining({ path: '/after' }),
    ]);
  });

  it(`holds at most ${MAX_TAP_SUBSCRIBERS} readers at once`, () => {
    const hub = new TapHub();
    for (let i = 0; i < MAX_TAP_SUBSCRIBERS; i++) expect(hub.subscribe({}, sink())).toBeTypeOf('function');
    expect(hub.subscribe({}, sink())).toBeUndefined();
  });

  it('says when it gains its first reader and loses its last (agent workers forward only then)', () => {
    const hub = new TapHub();
    const seen: boolean[] = [];
    hub.onActiveChange((active) => seen.push(active));
    const a = hub.subscribe({}, sink())!;
    const b = hub.subscribe({}, sink())!;
    a();
    a();
    b();
    expect(seen).toEqual([true, false]);
  });

  it("events lost before the hub (a worker's backlog) are reported to every reader, or counted while it is full", () => {
    const hub = new TapHub();
    const free = sink();
    const full = sink(1);
    hub.subscribe({ status: '2xx' }, free);
    hub.subscribe({}, full);
    hub.publish(() => event());
    hub.publishDropped(3);
    expect(free.lines.map((l) => JSON.parse(l))).toEqual([{ kind: 'dropped', count: 3 }]);
    expect(full.lines).toHaveLength(1);
    full.drain();
    expect(full.lines.slice(1).map((l) => JSON.parse(l))).toEqual([{ kind: 'dropped', count: 3 }]);
  });
});
