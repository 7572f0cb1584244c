// Filter 1 alone: which route rule takes a request, handed to a recording `next`.
import { describe, expect, it } from 'vitest';
import { failure } from '../../src/pipeline/context.js';
import { routeFilter } from '../../src/pipeline/route.js';
import { answerWith, httpRoute, recordingNext, requestOf, snapshotOf, svc } from './fixtures.js';

const snap = snapshotOf({
  services: [
    svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }]),
    svc('reviews-v1', '10.96.0.11', [{ name: 'v1', ip: '10.0.0.2', port: 8080 }]),
    svc('reviews-v2', '10.96.0.12', [{ name: 'v2', ip: '10.0.0.3', port: 8080 }]),
  ],
  httpRoutes: [
    httpRoute('split', 'reviews', [
      {
        matches: [{ path: { type: 'PathPrefix', value: '/split' } }],
        backendRefs: [
          { name: 'reviews-v1', port: 80, weight: 90 },
          { name: 'reviews-v2', port: 80, weight: 10 },
        ],
      },
      {
        matches: [
          { path: { type: 'PathPrefix', value: '/split' }, headers: [{ name: 'x-user', value: 'jason' }] },
        ],
        backendRefs: [{ name: 'reviews-v2', port: 80 }],
      },
    ]),
  ],
});
const ok = answerWith({ kind: 'local', status: 200, body: 'next ran' });

describe('route filter', () => {
  it('hands a request matching a rule to next with that rule and its path match', async () => {
    const { rc } = requestOf(snap, { url: '/split/a?x=1' });
    const next = recordingNext(ok);
    const o = await routeFilter.run(rc, next);
    expect(o).toEqual({ kind: 'local', status: 200, body: 'next ran' });
    expect(next.calls).toHaveLength(1);
    expect(rc.action?.backends.map((b) => b.service)).toEqual(['shop/reviews-v1', 'shop/reviews-v2']);
    expect(rc.matched).toEqual({ type: 'PathPrefix', value: '/split' });
  });

  it('prefers the rule with a header match when the header is sent', async () => {
    const { rc } = requestOf(snap, { url: '/split', headers: { 'x-user': 'jason' } });
    await routeFilter.run(rc, recordingNext(ok));
    expect(rc.action?.backends.map((b) => b.service)).toEqual(['shop/reviews-v2']);
  });

  it('sends a request no rule matches to the service itself on the dialed port', async () => {
    const { rc } = requestOf(snap, { url: '/other' });
    const next = recordingNext(ok);
    await routeFilter.run(rc, next);
    expect(next.calls).toHaveLength(1);
    expect(rc.action?.name).toBe('default');
    expect(rc.action?.backends).toEqual([expect.objectContaining({ service: 'shop/reviews', port: 80 })]);
    expect(rc.matched).toEqual({ type: 'PathPrefix', value: '/' });
  });

  it('answers NO_ROUTE without calling next when no service is at the dialed address', async () => {
    const { rc } = requestOf(snap, { authority: { host: '10.96.9.9', port: 80 }, host: 'nowhere' });
    expect(rc.service).toBeUndefined();
    const next = recordingNext(ok);
    expect(await routeFilter.run(rc, next)).toBe(failure('NO_ROUTE'));
    expect(next.calls).toHaveLength(0);
  });

  it('finds the service by Host on the dialed port when the address names none', async () => {
    const { rc } = requestOf(snap, {
      authority: { host: '10.96.9.9', port: 80 },
      host: 'reviews-v1.shop.svc.cluster.local',
    });
    await routeFilter.run(rc, recordingNext(ok));
    expect(rc.action?.backends.map((b) => b.service)).toEqual(['shop/reviews-v1']);
  });
});
