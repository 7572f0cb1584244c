// Timeouts, retries, circuit breaking, outlier detection and fault injection, end to end.
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  send,
  sendMany,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const parentFor = (name: string) => ({ group: '', kind: 'Service', name, port: 80 });
const route = (name: string, svc: string, rule: Record<string, unknown>) => ({
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop' },
  spec: { parentRefs: [parentFor(svc)], rules: [rule] },
});
const trafficPolicy = (name: string, svc: string, spec: Record<string, unknown>) => ({
  apiVersion: 'traffic.hypha.dev/v1alpha1',
  kind: 'TrafficPolicy',
  metadata: { name, namespace: 'shop' },
  spec: { targetRefs: [{ kind: 'Service', name: svc }], ...spec },
});

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

let slow: Backend;
let flaky: Backend;
let busy: Backend;
let good: Backend;
let bad: Backend;
let plain: Backend;
let faulty: Backend;
let tw: TestWaypoint;
let badFails = true;
const access = captureLog();

beforeAll(async () => {
  slow = await startBackend('slow', (_req, res) => {
    setTimeout(() => res.end('late'), 1000);
  });
  // Fails every other request: 1st, 3rd, 5th... answer 503.
  flaky = await startBackend('flaky', (_req, res, _body, n) => {
    res.statusCode = n % 2 === 1 ? 503 : 200;
    res.end(`attempt ${n}`);
  });
  busy = await startBackend('busy', (_req, res) => {
    setTimeout(() => res.end('done'), 800);
  });
  good = await startBackend('good');
  bad = await startBackend('bad', (_req, res) => {
    res.statusCode = badFails ? 500 : 200;
    res.end(badFails ? 'broken' : 'healed');
  });
  plain = await startBackend('plain');
  faulty = await startBackend('faulty');
  tw = await startWaypoint(
    {
      services: [
        service('slow', '10.96.1.1', [slow]),
        service('flaky', '10.96.1.2', [flaky]),
        service('busy', '10.96.1.3', [busy]),
        service('pair', '10.96.1.4', [good, bad]),
        service('faulty', '10.96.1.5', [faulty]),
        service('plain', '10.96.1.6', [plain]),
      ],
      httpRoutes: [
        route('slow', 'slow', { timeouts: { request: '200ms' } }),
        route('flaky', 'flaky', { retry: { attempts: 2, codes: [503], backoff: '5ms' } }),
      ],
      trafficPolicies: [
        trafficPolicy('busy', 'busy', { connectionPool: { maxConnections: 1, maxPendingRequests: 1 } }),
        trafficPolicy('pair', 'pair', {
          outlierDetection: { consecutive5xxErrors: 3, baseEjectionTime: '400ms', maxEjectionPercent: 50 },
        }),
        trafficPolicy('faulty', 'faulty', {
          fault: {
            delay: { fixedDelay: '100ms', percentage: 50 },
            abort: { httpStatus: 418, percentage: 20 },
          },
        }),
      ],
    },
    { host: '10.96.1.1', port: 80 },
    { accessLog: access.logger },
  );
});

afterAll(async () => {
  await tw.close();
  await Promise.all([slow, flaky, busy, good, bad, plain, faulty].map((b) => b.close()));
});

describe('timeouts', () => {
  it('answers 504 UT when the backend is slower than timeouts.request', async () => {
    const t0 = performance.now();
    const r = await send(tw.pool, '/');
    const took = performance.now() - t0;
    expect(r.status).toBe(504);
    expect(r.body).toBe('upstream request timeout');
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(1500);
  });
});

describe('retries', () => {
  it('turns a backend that fails every other request into all 200s', async () => {
    const c = await tw.listen({ host: '10.96.1.2', port: 80 });
    for (let i = 0; i < 10; i++) {
      const r = await send(c.pool, '/');
      expect(r.status).toBe(200);
    }
    // 10 client requests: each needed exactly two tries (503 then 200).
    expect(flaky.requests.length).toBe(20);
  });
});

describe('circuit breaking', () => {
  it('overflows with 503 UO beyond maxConnections + maxPendingRequests', async () => {
    const c = await tw.listen({ host: '10.96.1.3', port: 80 });
    const results = await Promise.all(Array.from({ length: 6 }, () => send(c.pool, '/')));
    const codes = results.map((r) => r.status).sort();
    expect(codes).toEqual([200, 200, 503, 503, 503, 503]);
    const overflow = results.find((r) => r.status === 503)!;
    expect(overflow.body).toContain('overflow');
    expect(busy.requests.length).toBe(2);
    expect(tw.wp.findCluster('shop/busy')?.activeRequests).toBe(0);
  });
});

describe('outlier detection', () => {
  it('ejects an endpoint after consecutive 5xx and restores it after the ejection time', async () => {
    const c = await tw.listen({ host: '10.96.1.4', port: 80 });
    badFails = true;
    // Round robin: every other request reaches "bad" until it is ejected after 3 x 500.
    const early: number[] = [];
    for (let i = 0; i < 6; i++) early.push((await send(c.pool, '/')).status);
    expect(early.filter((s) => s === 500).length).toBe(3);
    const badBefore = bad.requests.length;
    for (let i = 0; i < 10; i++) expect((await send(c.pool, '/')).status).toBe(200);
    expect(bad.requests.length).toBe(badBefore);
    const cluster = tw.wp.findCluster('shop/pair')!;
    expect(cluster.endpoints.find((e) => e.ip === bad.ip)?.ejectedUntil).toBeGreaterThan(0);

    badFails = false;
    await delay(450);
    const after: string[] = [];
    for (let i = 0; i < 6; i++) after.push((await send(c.pool, '/')).body);
    expect(after.filter((b) => b === 'healed').length).toBe(3);
  });
});

describe('fault injection', () => {
  it('delays and aborts close to the configured percentages', async () => {
    const c = await tw.listen({ host: '10.96.1.5', port: 80 });
    // Enough client connections that no request queues behind a delayed one.
    const pool = new Pool(c.origin, { connections: 64 });
    const n = 400;
    const latency = new Map<string, number>();
    let aborted = 0;
    await sendMany(n, 40, async (i) => {
      const id = `fault-${i}`;
      const t0 = performance.now();
      const r = await send(pool, '/', { headers: { 'x-request-id': id } });
      latency.set(id, performance.now() - t0);
      if (r.status === 418) {
        aborted++;
        expect(r.body).toBe('fault filter abort');
      } else expect(r.status).toBe(200);
    });
    await pool.destroy();
    const lines = access.lines.filter(
      (l) => typeof l.x_request_id === 'string' && l.x_request_id.startsWith('fault-'),
    );
    expect(lines.length).toBe(n);
    const delayed = lines.filter((l) => String(l.response_flags).includes('DI'));
    const within = (count: number, p: number) => Math.abs(count - n * p) < 4 * Math.sqrt(n * p * (1 - p));
    expect(within(aborted, 0.2), `aborted ${aborted}/${n}`).toBe(true);
    expect(within(delayed.length, 0.5), `delayed ${delayed.length}/${n}`).toBe(true);
    // The client really waited for each delayed request.
    for (const l of delayed) expect(latency.get(l.x_request_id as string)).toBeGreaterThanOrEqual(99);
    expect(lines.filter((l) => String(l.response_flags).includes('FI')).length).toBe(aborted);
    expect(faulty.requests.length).toBe(n - aborted);
  });

  it('leaves services without a fault policy alone', async () => {
    const c = await tw.listen({ host: '10.96.1.6', port: 80 });
    for (let i = 0; i < 20; i++) expect((await send(c.pool, '/')).status).toBe(200);
  });
});
