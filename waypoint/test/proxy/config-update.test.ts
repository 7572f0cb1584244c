// Live configuration changes: new routes apply to the next request on an open connection, bad
// objects are reported without disturbing the rest, endpoint health, clusters and upstream
// connections survive the update, and a request in flight finishes on the config it started with.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WaypointConfigInput } from '../../src/index.js';
import { type Backend, send, service, startBackend, startWaypoint, type TestWaypoint } from '../helpers.js';

let v1: Backend;
let v2: Backend;
let tw: TestWaypoint;

const routeTo = (backend: string) => ({
  kind: 'HTTPRoute',
  metadata: { name: 'reviews', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'reviews' }],
    rules: [{ backendRefs: [{ name: backend, port: 80 }] }],
  },
});

let base: WaypointConfigInput;

beforeAll(async () => {
  v1 = await startBackend('reviews-v1');
  v2 = await startBackend('reviews-v2');
  base = {
    gateway: { name: 'waypoint', namespace: 'shop' },
    services: [
      service('reviews', '10.96.9.1', [v1]),
      service('reviews-v1', '10.96.9.2', [v1]),
      service('reviews-v2', '10.96.9.3', [v2]),
    ],
    httpRoutes: [routeTo('reviews-v1')],
  };
  tw = await startWaypoint(base, { host: '10.96.9.1', port: 80 });
});

afterAll(async () => {
  await tw.close();
  await v1.close();
  await v2.close();
});

describe('updateConfig', () => {
  it('moves traffic at once and reports rejected objects by name and field', async () => {
    expect((await send(tw.pool, '/')).json().instance).toBe('reviews-v1');
    const cluster = tw.wp.findCluster('shop/reviews-v1')!;
    cluster.endpoints[0]!.consecutive5xx = 2;

    const bad = {
      kind: 'HTTPRoute',
      metadata: { name: 'broken', namespace: 'shop' },
      spec: { parentRefs: [] },
    };
    const errors = tw.wp.updateConfig({ ...base, httpRoutes: [routeTo('reviews-v2'), bad] });
    expect(errors.map((e) => `${e.kind} ${e.namespace}/${e.objectName} ${e.field}`)).toEqual([
      'HTTPRoute shop/broken spec.parentRefs',
    ]);
    expect(tw.wp.configErrors).toHaveLength(1);

    // Same client connection, next request: the new route.
    expect((await send(tw.pool, '/')).json().instance).toBe('reviews-v2');
    // Endpoint state carried over (same cluster object, same counters).
    expect(tw.wp.findCluster('shop/reviews-v1')).toBe(cluster);
    expect(cluster.endpoints[0]!.consecutive5xx).toBe(2);
  });

  it('stops serving a service removed from the configuration', async () => {
    tw.wp.updateConfig({ ...base, services: base.services.slice(1), httpRoutes: [] });
    expect(tw.wp.servesAddress('10.96.9.1', 80)).toBe(false);
    expect((await send(tw.pool, '/', { headers: { host: 'gone.example' } })).status).toBe(404);
  });
});

describe('updateConfig keeps upstream state', () => {
  const TP = {
    kind: 'TrafficPolicy',
    metadata: { name: 'reviews-v1', namespace: 'shop' },
    spec: {
      targetRefs: [{ kind: 'Service', name: 'reviews-v1' }],
      outlierDetection: { consecutive5xxErrors: 1, baseEjectionTime: '300s', maxEjectionPercent: 50 },
      // One request at a time to reviews-v1; more wait in the breaker's queue (observable).
      connectionPool: { maxRequests: 1, maxPendingRequests: 10 },
    },
  };
  let a1: Backend;
  let a2: Backend;
  let b: Backend;
  let held: (() => void)[];
  let w: TestWaypoint;
  let cfg: WaypointConfigInput;
  const connects: string[] = [];

  beforeAll(async () => {
    held = [];
    // a1 holds a request whose path starts with /hold until the test releases it.
    a1 = await startBackend('a1', (req, res) => {
      const answer = () => res.end(JSON.stringify({ instance: 'a1', url: req.url }));
      if (req.url?.startsWith('/hold')) held.push(answer);
      else answer();
    });
    a2 = await startBackend('a2');
    b = await startBackend('b');
    cfg = {
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [
        service('reviews', '10.96.9.11', [a1]),
        service('reviews-v1', '10.96.9.12', [a1, a2]),
        service('reviews-v2', '10.96.9.13', [b]),
      ],
      httpRoutes: [routeTo('reviews-v1')],
      trafficPolicies: [TP],
    };
    w = await startWaypoint(
      cfg,
      { host: '10.96.9.11', port: 80 },
      {
        connectUpstream: (ep) =>
          new Promise((resolve, reject) => {
            connects.push(ep.ip);
            const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
            s.once('connect', () => {
              s.off('error', reject);
              resolve(s);
            });
            s.once('error', reject);
          }),
      },
    );
  });

  afterAll(async () => {
    for (const answer of held) answer();
    await w.close();
    await Promise.all([a1.close(), a2.close(), b.close()]);
  });

  it('keeps every cluster, its ejected endpoints and the open upstream connections across a route change', async () => {
    const v1 = w.wp.findCluster('shop/reviews-v1')!;
    const ejected = v1.endpoints.find((e) => e.ip === a2.ip)!;
    v1.recordOutcome(ejected, true);
    expect(ejected.ejectedUntil).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) expect((await send(w.pool, '/')).json().instance).toBe('a1');
    const opened = connects.length;
    expect(connects.filter((ip) => ip === a1.ip)).toHaveLength(opened);
    const keys = ['shop/reviews', 'shop/reviews-v1', 'shop/reviews-v2'];
    const clusters = keys.map((k) => w.wp.findCluster(k));
    expect(clusters).not.toContain(undefined);

    // The route changes (/v2 now goes to reviews-v2); then the same objects arrive as new ones (a
    // source that rebuilds everything): both keep the clusters and their state.
    const split = {
      ...routeTo('reviews-v1'),
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'reviews' }],
        rules: [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/v2' } }],
            backendRefs: [{ name: 'reviews-v2', port: 80 }],
          },
          { backendRefs: [{ name: 'reviews-v1', port: 80 }] },
        ],
      },
    };
    expect(w.wp.updateConfig({ ...cfg, httpRoutes: [split] })).toEqual([]);
    expect(w.wp.updateConfig(structuredClone({ ...cfg, httpRoutes: [split] }))).toEqual([]);

    // The same Cluster objects (endpoint state, breaker queue, load-balancer position).
    for (const [i, k] of keys.entries()) expect(w.wp.findCluster(k), k).toBe(clusters[i]);
    expect(v1.endpoints.find((e) => e.ip === a2.ip)).toBe(ejected);
    expect(ejected.ejectedUntil).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) expect((await send(w.pool, '/')).json().instance).toBe('a1');
    // No new connection to a1: the pooled one carried on.
    expect(connects).toHaveLength(opened);
    expect((await send(w.pool, '/v2/x')).json().instance).toBe('b');
    expect(connects.slice(opened)).toEqual([b.ip]);
  });

  it('finishes a request in flight on the backend it was routed to; the next one takes the new route', async () => {
    w.wp.updateConfig(cfg);
    const v1 = w.wp.findCluster('shop/reviews-v1')!;
    // A is answered by a1 only when released; B is routed to reviews-v1 and waits for A's slot.
    const a = send(w.pool, '/hold/a');
    await until(() => held.length === 1);
    const bReq = send(w.pool, '/b');
    await until(() => v1.pendingRequests === 1);

    expect(w.wp.updateConfig({ ...cfg, httpRoutes: [routeTo('reviews-v2')] })).toEqual([]);
    expect((await send(w.pool, '/c')).json().instance).toBe('b');

    held.shift()!();
    expect((await a).json()).toMatchObject({ instance: 'a1', url: '/hold/a' });
    // B started under the old route: reviews-v1 (a1; a2 is still ejected), not reviews-v2.
    expect((await bReq).json()).toMatchObject({ instance: 'a1', url: '/b' });
    expect((await send(w.pool, '/d')).json().instance).toBe('b');
  });
});

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
