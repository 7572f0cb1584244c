// Filter 8 alone: the circuit-breaker slot (held across retries) and outlier detection.
import { describe, expect, it } from 'vitest';
import { breakerFilter } from '../../src/pipeline/breaker.js';
import { failure, type Outcome, type RequestContext } from '../../src/pipeline/context.js';
import type { Cluster } from '../../src/traffic/cluster.js';
import {
  answerWith,
  clustersOf,
  hang,
  prepare,
  recordingNext,
  requestOf,
  snapshotOf,
  svc,
  trafficPolicy,
  upstreamAnswer,
} from './fixtures.js';

const snap = snapshotOf({
  services: [
    svc('busy', '10.96.8.1', [{ name: 'b', ip: '10.0.8.1', port: 8080 }]),
    svc('pair', '10.96.8.2', [
      { name: 'good', ip: '10.0.8.2', port: 8080 },
      { name: 'bad', ip: '10.0.8.3', port: 8080 },
    ]),
  ],
  trafficPolicies: [
    trafficPolicy('busy', 'busy', { connectionPool: { maxConnections: 1, maxPendingRequests: 1 } }),
    trafficPolicy('pair', 'pair', {
      outlierDetection: { consecutive5xxErrors: 2, baseEjectionTime: '30s', maxEjectionPercent: 50 },
    }),
  ],
});
const ok = answerWith({ kind: 'local', status: 200, body: 'upstream' });

/** Fresh clusters per test: slots and endpoint health are per cluster. */
async function setup(
  host: string,
): Promise<{ rc: RequestContext; cluster: Cluster; res: ReturnType<typeof requestOf>['res'] }> {
  const clusters = clustersOf(snap);
  const { rc, res } = requestOf(snap, { authority: { host, port: 80 } });
  await prepare(rc, clusters);
  return { rc, cluster: rc.cluster!, res };
}

/** A `next` that sets the endpoint of the try (as balance does) and answers `o`. */
const on = (ip: string, o: () => Outcome) => (rc: RequestContext) => {
  rc.endpoint = rc.cluster!.endpoints.find((e) => e.ip === ip);
  return o();
};

describe('breaker filter: the connection-pool slot', () => {
  it('takes a slot for the first try and keeps it: a retry does not take another', async () => {
    const { rc, cluster } = await setup('10.96.8.1');
    const next = recordingNext(ok);
    await breakerFilter.run(rc, next);
    expect(rc.slot).toBe(true);
    expect(next.calls[0]!.slot).toBe(true);
    expect(cluster.activeRequests).toBe(1);
    // The cluster is full (maxConnections 1), yet the retry goes straight on with the slot it holds.
    await breakerFilter.run(rc, next);
    expect(next.calls).toHaveLength(2);
    expect(cluster.activeRequests).toBe(1);
    expect(cluster.pendingRequests).toBe(0);
  });

  it('overflows (503 UO) without calling next beyond maxPendingRequests', async () => {
    const { rc, cluster } = await setup('10.96.8.1');
    expect(cluster.acquire()).toEqual({ result: 'ok' });
    const queued = cluster.acquire();
    expect('wait' in queued).toBe(true);
    const next = recordingNext(ok);
    expect(await breakerFilter.run(rc, next)).toEqual(failure('OVERFLOW'));
    expect(next.calls).toHaveLength(0);
    expect(rc.slot).toBe(false);
  });

  it('queues within maxPendingRequests and goes on once a slot is given back', async () => {
    const { rc, cluster } = await setup('10.96.8.1');
    cluster.acquire();
    const next = recordingNext(ok);
    const pending = breakerFilter.run(rc, next);
    await new Promise((r) => setTimeout(r, 5));
    expect(next.calls).toHaveLength(0);
    expect(cluster.pendingRequests).toBe(1);
    cluster.release();
    expect(await pending).toMatchObject({ status: 200 });
    expect(next.calls).toHaveLength(1);
    expect(rc.slot).toBe(true);
    expect(cluster.activeRequests).toBe(1);
  });

  it('leaves the queue when the request is aborted while waiting, holding no slot', async () => {
    const { rc, cluster } = await setup('10.96.8.1');
    cluster.acquire();
    const next = recordingNext(ok);
    const pending = breakerFilter.run(rc, next);
    rc.abort('TIMEOUT');
    expect(await pending).toEqual(failure('TIMEOUT'));
    expect(next.calls).toHaveLength(0);
    expect(cluster.pendingRequests).toBe(0);
    cluster.release();
    expect(cluster.activeRequests).toBe(0);
  });

  it('gives the slot back when the client went away before the try', async () => {
    const { rc, cluster, res } = await setup('10.96.8.1');
    res.destroy();
    const next = recordingNext(ok);
    expect(await breakerFilter.run(rc, next)).toEqual(failure('DOWNSTREAM_CLOSED'));
    expect(next.calls).toHaveLength(0);
    expect(cluster.activeRequests).toBe(0);
    expect(rc.slot).toBe(false);
  });

  it('holds the slot while the try is in flight', async () => {
    const { rc, cluster } = await setup('10.96.8.1');
    const pending = breakerFilter.run(rc, recordingNext(hang));
    expect(cluster.activeRequests).toBe(1);
    rc.abort('TIMEOUT');
    expect(await pending).toEqual(failure('TIMEOUT'));
  });
});

describe('breaker filter: outlier detection', () => {
  it('counts a 5xx against the endpoint and ejects it after consecutive5xxErrors', async () => {
    const { rc, cluster } = await setup('10.96.8.2');
    const bad = cluster.endpoints.find((e) => e.ip === '10.0.8.3')!;
    const next = recordingNext(on('10.0.8.3', () => upstreamAnswer(503)));
    await breakerFilter.run(rc, next);
    expect(bad.consecutive5xx).toBe(1);
    expect(bad.ejectedUntil).toBe(0);
    await breakerFilter.run(rc, next);
    expect(bad.ejectedUntil).toBeGreaterThan(Date.now());
    expect(cluster.findEndpoint(undefined)?.ip).toBe('10.0.8.2');
  });

  it('resets the count on a success', async () => {
    const { rc, cluster } = await setup('10.96.8.2');
    const bad = cluster.endpoints.find((e) => e.ip === '10.0.8.3')!;
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => upstreamAnswer(500))));
    expect(bad.consecutive5xx).toBe(1);
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => upstreamAnswer(404))));
    expect(bad.consecutive5xx).toBe(0);
  });

  it('counts connect failures, resets and per-try timeouts, not a route timeout', async () => {
    const { rc, cluster } = await setup('10.96.8.2');
    const bad = cluster.endpoints.find((e) => e.ip === '10.0.8.3')!;
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => failure('CONNECT_FAILED'))));
    expect(bad.consecutive5xx).toBe(1);
    bad.consecutive5xx = 0;
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => failure('UPSTREAM_RESET'))));
    expect(bad.consecutive5xx).toBe(1);
    bad.consecutive5xx = 0;
    // Per-try timeout: the request itself was not aborted.
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => failure('TIMEOUT'))));
    expect(bad.consecutive5xx).toBe(1);
    bad.consecutive5xx = 0;
    // Route timeout: the request was aborted; the endpoint was not at fault.
    rc.abort('TIMEOUT');
    await breakerFilter.run(rc, recordingNext(on('10.0.8.3', () => failure('TIMEOUT'))));
    expect(bad.consecutive5xx).toBe(0);
  });

  it('records nothing when no endpoint was tried', async () => {
    const { rc, cluster } = await setup('10.96.8.2');
    const o = await breakerFilter.run(rc, recordingNext(answerWith(failure('NO_HEALTHY_UPSTREAM'))));
    expect(o).toEqual(failure('NO_HEALTHY_UPSTREAM'));
    expect(cluster.endpoints.map((e) => e.consecutive5xx)).toEqual([0, 0]);
  });
});
