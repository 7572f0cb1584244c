// Weighted backendRefs over many requests: the split a canary rollout relies on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  send,
  sendMany,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const VIP = '10.96.0.20';
let v1: Backend;
let v2: Backend;
let v3: Backend;
let tw: TestWaypoint;

beforeAll(async () => {
  v1 = await startBackend('reviews-v1');
  v2 = await startBackend('reviews-v2');
  v3 = await startBackend('reviews-mirror');
  tw = await startWaypoint(
    {
      services: [
        service('reviews', VIP, [v1]),
        service('reviews-v1', '10.96.0.21', [v1]),
        service('reviews-v2', '10.96.0.22', [v2]),
        service('reviews-mirror', '10.96.0.23', [v3]),
      ],
      httpRoutes: [
        {
          kind: 'HTTPRoute',
          metadata: { name: 'split', namespace: 'shop' },
          spec: {
            parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 80 }],
            rules: [
              {
                matches: [{ path: { type: 'PathPrefix', value: '/split' } }],
                backendRefs: [
                  { name: 'reviews-v1', port: 80, weight: 90 },
                  { name: 'reviews-v2', port: 80, weight: 10 },
                  { name: 'reviews-mirror', port: 80, weight: 0 },
                ],
              },
            ],
          },
        },
      ],
    },
    { host: VIP, port: 80 },
  );
});

afterAll(async () => {
  await tw.close();
  await Promise.all([v1.close(), v2.close(), v3.close()]);
});

describe('weighted backendRefs', () => {
  it('splits 90/10 within four standard deviations over 2000 requests, never to a weight-0 backend', async () => {
    const n = 2000;
    const counts: Record<string, number> = {};
    await sendMany(n, 16, async () => {
      const r = await send(tw.pool, '/split');
      expect(r.status).toBe(200);
      const who = r.json().instance;
      counts[who] = (counts[who] ?? 0) + 1;
    });
    const v2Count = counts['reviews-v2'] ?? 0;
    const sigma = Math.sqrt(n * 0.1 * 0.9);
    expect(Math.abs(v2Count - n * 0.1)).toBeLessThan(4 * sigma);
    expect((counts['reviews-v1'] ?? 0) + v2Count).toBe(n);
    expect(counts['reviews-mirror']).toBeUndefined();
  });
});
