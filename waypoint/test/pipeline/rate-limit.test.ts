// Filter 3 alone: TrafficPolicy `rateLimits` token buckets, on a clock the test drives (no sleeps).
import { parseSpiffeId } from '@hypha/shared';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { WaypointSnapshot } from '../../src/config.js';
import type { Outcome } from '../../src/pipeline/context.js';
import { rateLimitFilter } from '../../src/pipeline/rate-limit.js';
import { RateLimits } from '../../src/pipeline/rate-limit-buckets.js';
import { compileTrafficPolicy } from '../../src/traffic/policy.js';
import {
  httpRoute,
  prepare,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  svc,
  trafficPolicy,
  upstreamAnswer,
} from './fixtures.js';

const reviews = svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }]);
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const batch = parseSpiffeId('spiffe://cluster.local/ns/jobs/sa/batch');

/** The filter with its own buckets, registry and a clock at `clock.t` milliseconds. */
function setup(opts: { maxKeysPerLimit?: number } = {}) {
  const clock = { t: 0 };
  const registry = new Registry();
  const rateLimits = new RateLimits({ registry, now: () => clock.t, ...opts });
  const filter = rateLimitFilter({ rateLimits });
  const ok = upstreamAnswer(200);
  const run = async (snap: WaypointSnapshot, init: RequestInit = {}): Promise<Outcome> => {
    const { rc } = requestOf(snap, init);
    await prepare(rc);
    return filter.run(
      rc,
      recordingNext(() => ok),
    );
  };
  const status = async (snap: WaypointSnapshot, init: RequestInit = {}) => {
    const o = await run(snap, init);
    return o.kind === 'local' ? o.status : o.kind === 'response' ? o.status : 0;
  };
  const metric = async (decision: string, limit = '0') => {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === 'hypha_waypoint_ratelimit_total');
    return m?.values.find((v) => v.labels.decision === decision && v.labels.limit === limit)?.value ?? 0;
  };
  return { clock, rateLimits, filter, run, status, metric };
}

const limited = (
  spec: Record<string, unknown>,
  extra: Omit<Parameters<typeof snapshotOf>[0], 'services'> = {},
) =>
  snapshotOf({
    services: [reviews],
    trafficPolicies: [trafficPolicy('reviews', 'reviews', { rateLimits: [spec] })],
    ...extra,
  });

describe('rate-limit filter', () => {
  it('without rateLimits calls next once and returns its outcome as is', async () => {
    const snap = snapshotOf({ services: [reviews] });
    const { filter } = setup();
    const { rc, res } = requestOf(snap, { url: '/a?b=c', body: 'payload' });
    const body = rc.body;
    const answer = upstreamAnswer(201);
    const next = recordingNext(() => answer);
    expect(await filter.run(rc, next)).toBe(answer);
    expect(next.calls).toHaveLength(1);
    expect(next.calls[0]!.body).toBe(body);
    expect(rc.flags).toEqual([]);
    expect(res.headersSent).toBe(false);
  });

  it('admits a burst, then answers 429 RL with retry-after and x-ratelimit-* until a token is back', async () => {
    const snap = limited({ requests: 2, interval: '1s', burst: 3 });
    const { clock, run, status, metric } = setup();
    expect([await status(snap), await status(snap), await status(snap)]).toEqual([200, 200, 200]);
    const o = await run(snap);
    expect(o).toEqual({
      kind: 'local',
      status: 429,
      body: 'local_rate_limited',
      flag: 'RL',
      headers: {
        'retry-after': '1',
        'x-ratelimit-limit': '3',
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset': '1',
      },
    });
    // 2 per second: one token every 500 ms.
    clock.t = 499;
    expect(await status(snap)).toBe(429);
    clock.t = 500;
    expect(await status(snap)).toBe(200);
    expect(await status(snap)).toBe(429);
    expect(await metric('allowed')).toBe(4);
    expect(await metric('limited')).toBe(3);
  });

  it('over 10 seconds of steady load admits burst + rate x 10 s (429s for the rest)', async () => {
    // The "429s within 10% of the configured rate", on a driven clock: 50 requests a second
    // against a limit of 10 a second with a burst of 5.
    const snap = limited({ requests: 10, interval: '1s', burst: 5 });
    const { clock, status } = setup();
    let ok = 0;
    let refused = 0;
    for (let t = 0; t < 10_000; t += 20) {
      clock.t = t;
      if ((await status(snap)) === 200) ok++;
      else refused++;
    }
    expect(ok + refused).toBe(500);
    // Exact with a whole-millisecond clock: 5 at once, then one every 100 ms up to t = 9980.
    expect(ok).toBe(5 + 99);
    expect(Math.abs(ok - (5 + 10 * 10))).toBeLessThanOrEqual(0.1 * 100);
  });

  it('keyed by sourcePrincipal: one caller exhausted, another unaffected; callers without one share a bucket', async () => {
    const snap = limited({ requests: 1, interval: '1m', key: 'sourcePrincipal' });
    const { status } = setup();
    expect(await status(snap, { peer: web })).toBe(200);
    expect(await status(snap, { peer: web })).toBe(429);
    expect(await status(snap, { peer: batch })).toBe(200);
    expect(await status(snap)).toBe(200);
    expect(await status(snap)).toBe(429);
  });

  it('keyed by a header or the source IP', async () => {
    const byHeader = limited({ requests: 1, interval: '1m', key: 'header:X-User' });
    const a = setup();
    expect(await a.status(byHeader, { headers: { 'x-user': 'ann' } })).toBe(200);
    expect(await a.status(byHeader, { headers: { 'x-user': 'ann' } })).toBe(429);
    expect(await a.status(byHeader, { headers: { 'x-user': 'bob' } })).toBe(200);

    const byIp = limited({ requests: 1, interval: '1m', key: 'sourceIp' });
    const b = setup();
    const { rc } = requestOf(byIp);
    await prepare(rc);
    expect(
      (
        await b.filter.run(
          rc,
          recordingNext(() => upstreamAnswer(200)),
        )
      ).kind,
    ).toBe('response');
    expect(await b.status(byIp)).toBe(429); // same source IP as above (the fixture's 10.1.0.7)
    const other = requestOf(byIp).rc;
    other.stream.source = { ip: '10.1.0.8', port: 1 };
    await prepare(other);
    expect(
      (
        await b.filter.run(
          other,
          recordingNext(() => upstreamAnswer(200)),
        )
      ).kind,
    ).toBe('response');
  });

  it('with routes: limits only the listed route rule; other rules and routes are unaffected', async () => {
    const snap = limited(
      { requests: 1, interval: '1m', routes: [{ kind: 'HTTPRoute', name: 'reviews-api', rule: 0 }] },
      {
        httpRoutes: [
          httpRoute('reviews-api', 'reviews', [
            { matches: [{ path: { type: 'PathPrefix', value: '/search' } }] },
            { matches: [{ path: { type: 'PathPrefix', value: '/' } }] },
          ]),
        ],
      },
    );
    const { status } = setup();
    expect(await status(snap, { url: '/search?q=1' })).toBe(200);
    expect(await status(snap, { url: '/search?q=2' })).toBe(429);
    for (let i = 0; i < 3; i++) expect(await status(snap, { url: `/item/${i}` })).toBe(200);
  });

  it('with several limits, a request needs a token from each and spends none when one refuses', async () => {
    const snap = snapshotOf({
      services: [reviews],
      trafficPolicies: [
        trafficPolicy('reviews', 'reviews', {
          rateLimits: [
            { name: 'total', requests: 3, interval: '1m' },
            { name: 'per-caller', requests: 1, interval: '1m', key: 'sourcePrincipal' },
          ],
        }),
      ],
    });
    const { status, metric } = setup();
    expect(await status(snap, { peer: web })).toBe(200);
    expect(await status(snap, { peer: web })).toBe(429);
    expect(await status(snap, { peer: web })).toBe(429);
    // The refusals did not spend the total's tokens: two more callers still get through.
    expect(await status(snap, { peer: batch })).toBe(200);
    expect(await status(snap)).toBe(200);
    expect(await status(snap, { peer: parseSpiffeId('spiffe://cluster.local/ns/x/sa/y') })).toBe(429);
    expect(await metric('allowed', 'total')).toBe(3);
    expect(await metric('limited', 'total')).toBe(1);
    expect(await metric('limited', 'per-caller')).toBe(2);
  });

  it('answers a gRPC call with RESOURCE_EXHAUSTED in a trailers-only 200', async () => {
    const snap = limited({ requests: 1, interval: '1m' });
    const { run } = setup();
    const grpc = { h2: true, headers: { 'content-type': 'application/grpc' } };
    expect((await run(snap, grpc)).kind).toBe('response');
    const o = await run(snap, grpc);
    expect(o).toMatchObject({
      kind: 'local',
      status: 200,
      flag: 'RL',
      headers: { 'grpc-status': '8', 'grpc-message': 'local_rate_limited', 'x-ratelimit-limit': '1' },
    });
  });

  it('keeps spent tokens across a config update that leaves the limit unchanged, and starts over when it changes', async () => {
    const { status } = setup();
    const v1 = limited({ requests: 1, interval: '1m' });
    expect(await status(v1)).toBe(200);
    expect(await status(v1)).toBe(429);
    // Recompiled (the fault changed), same limit: still spent.
    const v2 = snapshotOf({
      services: [reviews],
      trafficPolicies: [
        trafficPolicy('reviews', 'reviews', {
          rateLimits: [{ requests: 1, interval: '1m' }],
          fault: { delay: { fixedDelay: '1ms', percentage: 0 } },
        }),
      ],
    });
    expect(await status(v2)).toBe(429);
    // A different limit: fresh buckets.
    const v3 = limited({ requests: 2, interval: '1m' });
    expect(await status(v3)).toBe(200);
    expect(await status(v3)).toBe(200);
    expect(await status(v3)).toBe(429);
  });

  it('bounds the buckets per limit when every request brings a new key', async () => {
    const snap = limited({ requests: 1, interval: '1h', key: 'header:x-user' });
    const { status, rateLimits } = setup({ maxKeysPerLimit: 100 });
    for (let i = 0; i < 1000; i++) expect(await status(snap, { headers: { 'x-user': `u${i}` } })).toBe(200);
    const spec = snap.traffic.get('shop/reviews')!.rateLimits[0]!;
    expect(rateLimits.findGroup(spec).size).toBeLessThanOrEqual(100);
    // The newest keys are kept: u999 is still spent.
    expect(await status(snap, { headers: { 'x-user': 'u999' } })).toBe(429);
  });

  it('when the buckets are full, forgets the ones that have refilled before any caller still spending', async () => {
    const snap = limited({ requests: 1, interval: '1s', burst: 2, key: 'header:x-user' });
    const { clock, status } = setup({ maxKeysPerLimit: 10 });
    // busy0..4 spend both tokens at t=0; idle0..4 spend one at t=0 and have refilled by t=1s.
    for (let i = 0; i < 5; i++) {
      await status(snap, { headers: { 'x-user': `busy${i}` } });
      await status(snap, { headers: { 'x-user': `busy${i}` } });
      await status(snap, { headers: { 'x-user': `idle${i}` } });
    }
    clock.t = 500;
    for (let i = 0; i < 5; i++) await status(snap, { headers: { 'x-user': `busy${i}` } }); // 429s, half a token
    clock.t = 1000;
    expect(await status(snap, { headers: { 'x-user': 'new' } })).toBe(200); // the sweep runs here
    // The busy callers were kept: they have one token (not two), so the third request is refused.
    expect(await status(snap, { headers: { 'x-user': 'busy0' } })).toBe(200);
    expect(await status(snap, { headers: { 'x-user': 'busy0' } })).toBe(429);
  });

  it('drops the buckets of limits no longer configured', async () => {
    const { status, rateLimits } = setup();
    const snap = limited({ requests: 1, interval: '1m' });
    await status(snap);
    expect(rateLimits.groups).toBe(1);
    rateLimits.retain(snap.traffic.values());
    expect(rateLimits.groups).toBe(1);
    rateLimits.retain([]);
    expect(rateLimits.groups).toBe(0);
  });
});

describe('TrafficPolicy rateLimits', () => {
  const compile = (rateLimits: unknown) =>
    compileTrafficPolicy(trafficPolicy('reviews', 'reviews', { rateLimits })).settings.rateLimits;

  it('compiles requests, interval, burst (default: requests), key and routes', () => {
    const [a, b] = compile([
      { requests: 100 },
      {
        name: 'per-user',
        requests: 5,
        interval: '10s',
        burst: 20,
        key: 'header:X-User',
        routes: [{ name: 'api' }],
      },
    ]);
    expect(a).toMatchObject({
      id: 'shop/reviews#0',
      requests: 100,
      intervalMs: 1000,
      burst: 100,
      key: { type: 'none' },
    });
    expect(a!.routes).toBeUndefined();
    expect(b).toMatchObject({
      id: 'shop/reviews#per-user',
      intervalMs: 10_000,
      burst: 20,
      key: { type: 'header', name: 'x-user' },
    });
    expect(b!.routes!.prefixes).toEqual(['HTTPRoute shop/api rule ', 'GRPCRoute shop/api rule ']);
  });

  it.each([
    ['no requests', [{ interval: '1s' }], /rateLimits/],
    ['zero requests', [{ requests: 0 }], /requests/],
    ['an unknown key', [{ requests: 1, key: 'cookie' }], /none, sourcePrincipal, sourceIp or header/],
    ['a zero interval', [{ requests: 1, interval: '0s' }], /longer than 0/],
    [
      'two limits of one name',
      [
        { name: 'a', requests: 1 },
        { name: 'a', requests: 2 },
      ],
      /names two rate limits/,
    ],
  ])('refuses %s', (_what, rateLimits, message) => {
    expect(() => compile(rateLimits)).toThrow(message);
  });
});
