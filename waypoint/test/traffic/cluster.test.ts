import { describe, expect, it } from 'vitest';
import {
  Cluster,
  compileTrafficPolicy,
  DEFAULT_TRAFFIC,
  type ServiceEntry,
  type TrafficSettings,
} from '../../src/index.js';

function svc(n: number): ServiceEntry {
  return {
    key: 'shop/api',
    name: 'api',
    namespace: 'shop',
    hostname: 'api.shop.svc.cluster.local',
    vips: ['10.96.0.1'],
    ports: new Map([
      [80, { port: 80, targetPort: 8080, name: 'http', appProtocol: undefined, http2: false, tcp: false }],
    ]),
    endpoints: Array.from({ length: n }, (_, i) => ({
      ip: `10.1.0.${i + 1}`,
      ready: true,
      targetPorts: new Map(),
      workload: undefined,
    })),
  };
}

const settings = (spec: Record<string, unknown>): TrafficSettings =>
  compileTrafficPolicy({
    metadata: { name: 'tp', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', name: 'api' }], ...spec },
  }).settings;

describe('load balancing', () => {
  it('round robin visits every endpoint in turn', () => {
    const c = new Cluster(svc(3), DEFAULT_TRAFFIC);
    expect(Array.from({ length: 6 }, () => c.findEndpoint(undefined)!.ip)).toEqual([
      '10.1.0.1',
      '10.1.0.2',
      '10.1.0.3',
      '10.1.0.1',
      '10.1.0.2',
      '10.1.0.3',
    ]);
  });

  it('least request prefers idle endpoints', () => {
    const c = new Cluster(svc(4), settings({ loadBalancer: { simple: 'LEAST_REQUEST' } }));
    for (const e of c.endpoints) e.active = 10;
    c.endpoints[2]!.active = 0;
    const picks = Array.from({ length: 400 }, () => c.findEndpoint(undefined)!.ip);
    // P2C picks the idle endpoint whenever it is one of the two candidates: 1 - (3/4 * 2/3) = 1/2.
    const idle = picks.filter((p) => p === '10.1.0.3').length;
    expect(idle).toBeGreaterThan(140);
    expect(idle).toBeLessThan(260);
  });

  it('random spreads over all endpoints', () => {
    const c = new Cluster(svc(4), settings({ loadBalancer: { simple: 'RANDOM' } }));
    const seen = new Set(Array.from({ length: 200 }, () => c.findEndpoint(undefined)!.ip));
    expect(seen.size).toBe(4);
  });

  it('consistent hash keeps a key on one endpoint and moves few keys when one leaves', () => {
    const c = new Cluster(
      svc(5),
      settings({ loadBalancer: { consistentHash: { httpHeaderName: 'X-User' } } }),
    );
    expect(c.settings.hashHeader).toBe('x-user');
    const keys = Array.from({ length: 500 }, (_, i) => `user-${i}`);
    const before = new Map(keys.map((k) => [k, c.findEndpoint(k)!.ip]));
    for (const k of keys.slice(0, 20)) expect(c.findEndpoint(k)!.ip).toBe(before.get(k));
    const four = svc(5);
    four.endpoints = four.endpoints.slice(0, 4);
    c.update(four, c.settings);
    const moved = keys.filter((k) => c.findEndpoint(k)!.ip !== before.get(k));
    // Only keys that lived on the removed endpoint move.
    expect(moved.every((k) => before.get(k) === '10.1.0.5')).toBe(true);
  });
});

describe('circuit breaker', () => {
  it('admits up to the limit, queues up to maxPendingRequests, overflows beyond', async () => {
    const c = new Cluster(svc(1), settings({ connectionPool: { maxRequests: 2, maxPendingRequests: 1 } }));
    expect(c.acquire()).toEqual({ result: 'ok' });
    expect(c.acquire()).toEqual({ result: 'ok' });
    const waiting = c.acquire();
    expect('wait' in waiting).toBe(true);
    expect(c.acquire()).toEqual({ result: 'overflow' });
    c.release();
    if ('wait' in waiting) await waiting.wait;
    expect(c.activeRequests).toBe(2);
    expect(c.pendingRequests).toBe(0);
  });

  it('lets a waiter give up without leaking a slot', () => {
    const c = new Cluster(svc(1), settings({ connectionPool: { maxConnections: 1, maxPendingRequests: 5 } }));
    c.acquire();
    const w = c.acquire();
    if (!('wait' in w)) throw new Error('expected a wait');
    expect(w.cancel()).toBe(true);
    c.release();
    expect(c.activeRequests).toBe(0);
  });
});

describe('outlier detection', () => {
  it('ejects after N consecutive failures, for base time × ejections, bounded by maxEjectionPercent', () => {
    const c = new Cluster(
      svc(4),
      settings({
        outlierDetection: { consecutive5xxErrors: 2, baseEjectionTime: '10s', maxEjectionPercent: 50 },
      }),
    );
    const [a, b, d] = c.endpoints as [
      (typeof c.endpoints)[0],
      (typeof c.endpoints)[0],
      (typeof c.endpoints)[0],
    ];
    const t = 1_000_000;
    c.recordOutcome(a, true, t);
    c.recordOutcome(a, false, t); // a success resets the streak
    c.recordOutcome(a, true, t);
    expect(a.ejectedUntil).toBe(0);
    c.recordOutcome(a, true, t);
    expect(a.ejectedUntil).toBe(t + 10_000);
    c.recordOutcome(b, true, t);
    c.recordOutcome(b, true, t);
    expect(b.ejectedUntil).toBe(t + 10_000);
    // 2 of 4 ejected = 50%: no more.
    c.recordOutcome(d, true, t);
    c.recordOutcome(d, true, t);
    expect(d.ejectedUntil).toBe(0);
    const picks = new Set(Array.from({ length: 20 }, () => c.findEndpoint(undefined, t + 1)!.ip));
    expect(picks).toEqual(new Set(['10.1.0.3', '10.1.0.4']));
    // Restored after the ejection time; a second ejection lasts twice as long.
    expect(c.findEndpoint(undefined, t + 10_001)).toBeDefined();
    expect(a.ejectedUntil).toBe(0);
    c.recordOutcome(a, true, t + 20_000);
    c.recordOutcome(a, true, t + 20_000);
    expect(a.ejectedUntil).toBe(t + 20_000 + 20_000);
  });

  it('reports no endpoint when every endpoint is ejected', () => {
    const c = new Cluster(
      svc(1),
      settings({ outlierDetection: { consecutive5xxErrors: 1, maxEjectionPercent: 100 } }),
    );
    c.recordOutcome(c.endpoints[0]!, true, 0);
    expect(c.findEndpoint(undefined, 1)).toBeUndefined();
  });
});

describe('TrafficPolicy validation', () => {
  it('names the bad field', () => {
    expect(() => settings({ fault: { abort: { percentage: 10 } } })).toThrow(
      /TrafficPolicy shop\/tp: field spec\.fault\.abort/,
    );
    expect(() => settings({ loadBalancer: { simple: 'FASTEST' } })).toThrow(/spec\.loadBalancer\.simple/);
  });
});

describe('TrafficPolicy retries (Istio spelling)', () => {
  it('maps retryOn to HTTP and gRPC statuses, and perTryTimeout to a per-try timeout', () => {
    const r = settings({
      retries: {
        attempts: 3,
        perTryTimeout: '2s',
        retryOn: ['gateway-error', 'unavailable', 'resource-exhausted'],
      },
    }).retry!;
    expect(r.attempts).toBe(3);
    expect([...r.codes].sort()).toEqual([502, 503, 504]);
    expect([...r.grpcCodes].sort((a, b) => a - b)).toEqual([8, 14]);
    expect(r.perTryTimeoutMs).toBe(2000);
    const fiveXx = settings({ retries: { attempts: 1, retryOn: ['5xx'] } }).retry!;
    expect(fiveXx.codes.has(500) && fiveXx.codes.has(599) && !fiveXx.codes.has(499)).toBe(true);
  });

  it("uses Istio's default conditions when retryOn is left out", () => {
    const r = settings({ retries: { attempts: 2 } }).retry!;
    expect(r.codes.size).toBe(0);
    expect([...r.grpcCodes].sort((a, b) => a - b)).toEqual([1, 14]);
  });

  it('refuses both spellings at once and unknown conditions, naming the field', () => {
    expect(() => settings({ retry: { attempts: 1 }, retries: { attempts: 1 } })).toThrow(/spec\.retries/);
    expect(() => settings({ retries: { attempts: 1, retryOn: ['sometimes'] } })).toThrow(
      /spec\.retries\.retryOn/,
    );
  });
});
