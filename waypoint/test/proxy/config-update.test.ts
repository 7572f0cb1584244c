// Live configuration changes: new routes apply to the next request on an open connection, bad
// objects are reported without disturbing the rest, endpoint health survives the update.
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
