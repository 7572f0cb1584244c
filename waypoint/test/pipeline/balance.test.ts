// Filter 9 alone: one endpoint per try, and the in-flight count it holds.
import { describe, expect, it } from 'vitest';
import { balanceFilter } from '../../src/pipeline/balance.js';
import { failure, type RequestContext } from '../../src/pipeline/context.js';
import {
  answerWith,
  clustersOf,
  prepare,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  svc,
  trafficPolicy,
  upstreamAnswer,
} from './fixtures.js';

const snap = snapshotOf({
  services: [
    svc('empty', '10.96.9.1', []),
    svc('pair', '10.96.9.2', [
      { name: 'a', ip: '10.0.9.2', port: 9001 },
      { name: 'b', ip: '10.0.9.3', port: 9002 },
    ]),
    svc('sticky', '10.96.9.4', [
      { name: 'a', ip: '10.0.9.4', port: 8080 },
      { name: 'b', ip: '10.0.9.5', port: 8080 },
      { name: 'c', ip: '10.0.9.6', port: 8080 },
    ]),
    svc('ejected', '10.96.9.5', [{ name: 'e', ip: '10.0.9.7', port: 8080 }]),
  ],
  trafficPolicies: [
    trafficPolicy('ejected', 'ejected', {
      outlierDetection: { consecutive5xxErrors: 1, baseEjectionTime: '30s', maxEjectionPercent: 100 },
    }),
    trafficPolicy('sticky', 'sticky', { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } }),
  ],
});

async function setup(
  host: string,
  init: RequestInit = {},
  clusters = clustersOf(snap),
): Promise<RequestContext> {
  const { rc } = requestOf(snap, { authority: { host, port: 80 }, ...init });
  await prepare(rc, clusters);
  return rc;
}

describe('balance filter', () => {
  it('answers NO_HEALTHY_UPSTREAM without calling next when the backend has no endpoints', async () => {
    const rc = await setup('10.96.9.1');
    const next = recordingNext(() => upstreamAnswer(200));
    expect(await balanceFilter.run(rc, next)).toEqual(failure('NO_HEALTHY_UPSTREAM'));
    expect(next.calls).toHaveLength(0);
    expect(rc.endpoint).toBeUndefined();
  });

  it('answers NO_HEALTHY_UPSTREAM when every endpoint is ejected', async () => {
    const rc = await setup('10.96.9.5');
    const cluster = rc.cluster!;
    cluster.recordOutcome(cluster.endpoints[0]!, true);
    const next = recordingNext(() => upstreamAnswer(200));
    expect(await balanceFilter.run(rc, next)).toEqual(failure('NO_HEALTHY_UPSTREAM'));
    expect(next.calls).toHaveLength(0);
  });

  it("dials the chosen endpoint's own target port and holds its in-flight count during the try", async () => {
    const rc = await setup('10.96.9.2');
    const answer = upstreamAnswer(200);
    const next = recordingNext(() => answer);
    expect(await balanceFilter.run(rc, next)).toBe(answer);
    const seen = next.calls[0]!;
    expect(seen.active).toBe(1);
    const port = seen.endpoint === '10.0.9.2' ? 9001 : 9002;
    expect(rc.upstream).toMatchObject({ ip: seen.endpoint, port });
    expect(rc.upstream?.workload?.name).toBe(seen.endpoint === '10.0.9.2' ? 'a' : 'b');
    // An answer keeps the count until the response is done (finish gives it back).
    expect(rc.activeOn).toBe(rc.endpoint);
    expect(rc.endpoint!.active).toBe(1);
    rc.releaseActive();
    expect(rc.endpoint!.active).toBe(0);
  });

  it('gives the in-flight count back when the try failed', async () => {
    const rc = await setup('10.96.9.2');
    const next = recordingNext(answerWith(failure('CONNECT_FAILED')));
    expect(await balanceFilter.run(rc, next)).toEqual(failure('CONNECT_FAILED'));
    expect(next.calls[0]!.active).toBe(1);
    expect(rc.endpoint!.active).toBe(0);
    expect(rc.activeOn).toBeUndefined();
  });

  it('gives the count back on an async failure too', async () => {
    const rc = await setup('10.96.9.2');
    const next = recordingNext(async () => failure('UPSTREAM_RESET'));
    await balanceFilter.run(rc, next);
    expect(rc.endpoint!.active).toBe(0);
  });

  it('spreads tries over the endpoints round robin', async () => {
    const clusters = clustersOf(snap);
    const picked = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const rc = await setup('10.96.9.2', {}, clusters);
      const next = recordingNext(answerWith(failure('UPSTREAM_RESET')));
      await balanceFilter.run(rc, next);
      picked.add(next.calls[0]!.endpoint!);
    }
    expect([...picked].sort()).toEqual(['10.0.9.2', '10.0.9.3']);
  });

  it('sends one user to one endpoint with a consistent-hash header', async () => {
    const clusters = clustersOf(snap);
    const pick = async (user: string) => {
      const rc = await setup('10.96.9.4', { headers: { 'x-user': user } }, clusters);
      const next = recordingNext(answerWith(failure('UPSTREAM_RESET')));
      await balanceFilter.run(rc, next);
      return next.calls[0]!.endpoint;
    };
    const first = await pick('jason');
    for (let i = 0; i < 5; i++) expect(await pick('jason')).toBe(first);
    const others = new Set<string | undefined>();
    for (let i = 0; i < 20; i++) others.add(await pick(`user-${i}`));
    expect(others.size).toBeGreaterThan(1);
  });
});
