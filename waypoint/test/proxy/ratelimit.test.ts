// Local rate limiting end to end (TrafficPolicy `rateLimits`, the example in docs/waypoint.md): a
// burst over the limit gets 429s with the rate limit headers, other routes and other principals are
// unaffected, and the refusals are counted (istio_requests_total with flag RL, the access log, the
// limiter's own metric). Time is the test's clock, not the wall's: nothing here is timed.
import { parseSpiffeId } from '@hypha/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  send,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const batch = parseSpiffeId('spiffe://cluster.local/ns/jobs/sa/batch');
const loader = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/loader');
const VIP = { host: '10.96.7.1', port: 80 };

const route = {
  kind: 'HTTPRoute',
  metadata: { name: 'reviews', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 80 }],
    rules: [
      { matches: [{ path: { type: 'PathPrefix', value: '/search' } }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/' } }] },
    ],
  },
};

// docs/waypoint.md, "TrafficPolicy": 10 searches a second per caller, bursts of 5.
const limits = (requests = 10) => ({
  apiVersion: 'traffic.hypha.dev/v1alpha1',
  kind: 'TrafficPolicy',
  metadata: { name: 'reviews-limits', namespace: 'shop' },
  spec: {
    targetRefs: [{ kind: 'Service', name: 'reviews' }],
    rateLimits: [
      {
        name: 'search-per-caller',
        requests,
        interval: '1s',
        burst: 5,
        key: 'sourcePrincipal',
        routes: [{ kind: 'HTTPRoute', name: 'reviews', rule: 0 }],
      },
    ],
  },
});

const clock = { t: 0 };
const access = captureLog();
let backend: Backend;
let tw: TestWaypoint;
let asWeb: Awaited<ReturnType<TestWaypoint['listen']>>;
let asBatch: Awaited<ReturnType<TestWaypoint['listen']>>;
let asLoader: Awaited<ReturnType<TestWaypoint['listen']>>;

const config = (requests?: number) => ({
  gateway: { name: 'waypoint', namespace: 'shop' },
  services: [service('reviews', VIP.host, [backend])],
  httpRoutes: [route],
  trafficPolicies: [limits(requests)],
});

beforeAll(async () => {
  backend = await startBackend('reviews-v1');
  tw = await startWaypoint(config(), VIP, { accessLog: access.logger, rateLimitClock: () => clock.t });
  expect(tw.wp.configErrors).toEqual([]);
  asWeb = await tw.listen(VIP, web);
  asBatch = await tw.listen(VIP, batch);
  asLoader = await tw.listen(VIP, loader);
});

afterAll(async () => {
  await tw.close();
  await backend.close();
});

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = (await tw.wp.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((sum, v) => sum + v.value, 0);
}

describe('local rate limiting', () => {
  it('answers a burst over the limit with 429 and the rate limit headers', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await send(asWeb.pool, `/search?q=${i}`);
      codes.push(r.status);
      if (r.status === 429) {
        expect(r.body).toBe('local_rate_limited');
        expect(r.headers).toMatchObject({
          'retry-after': '1',
          'x-ratelimit-limit': '5',
          'x-ratelimit-remaining': '0',
          'x-ratelimit-reset': '1',
        });
      }
    }
    expect(codes).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(backend.requests.length).toBe(5);
  });

  it('leaves other routes and other principals alone', async () => {
    for (let i = 0; i < 5; i++) expect((await send(asWeb.pool, `/reviews/${i}`)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await send(asBatch.pool, `/search?q=${i}`)).status).toBe(200);
    expect((await send(asWeb.pool, '/search')).status).toBe(429);
  });

  it('counts the refusals: istio_requests_total and the access log with flag RL, and its own metric', async () => {
    expect(await metric('istio_requests_total', { response_code: '429', response_flags: 'RL' })).toBe(4);
    const logged = access.lines.filter((l) => l.response_flags === 'RL');
    expect(logged).toHaveLength(4);
    expect(logged[0]).toMatchObject({ response_code: 429, route_name: 'HTTPRoute shop/reviews rule 0' });
    const series = { policy: 'shop/reviews-limits', limit: 'search-per-caller' };
    expect(await metric('hypha_waypoint_ratelimit_total', { ...series, decision: 'limited' })).toBe(4);
    expect(await metric('hypha_waypoint_ratelimit_total', { ...series, decision: 'allowed' })).toBe(10);
  });

  it('admits the configured rate over 10 seconds of load (driven clock): burst + 10/s, the rest 429', async () => {
    let ok = 0;
    let limited = 0;
    // 50 requests a second for 10 seconds against 10 a second.
    for (let t = 0; t < 10_000; t += 20) {
      clock.t = t;
      const s = (await send(asLoader.pool, '/search')).status;
      if (s === 200) ok++;
      else if (s === 429) limited++;
    }
    expect(ok + limited).toBe(500);
    expect(ok).toBe(5 + 99);
    expect(Math.abs(ok - (5 + 10 * 10))).toBeLessThanOrEqual(10);
  });

  it('keeps spent tokens across a config update that leaves the limit alone, and starts over when it changes', async () => {
    clock.t = 100_000;
    for (let i = 0; i < 5; i++) expect((await send(asWeb.pool, '/search')).status).toBe(200);
    expect(tw.wp.updateConfig(config())).toEqual([]);
    expect((await send(asWeb.pool, '/search')).status).toBe(429);
    expect(tw.wp.updateConfig(config(20))).toEqual([]);
    expect((await send(asWeb.pool, '/search')).status).toBe(200);
  });
});
