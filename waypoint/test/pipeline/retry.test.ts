// Filter 7 alone: the route timeout across tries, and retries with backoff on a replayable body.
import { describe, expect, it } from 'vitest';
import { failure, type RequestContext } from '../../src/pipeline/context.js';
import { retryFilter } from '../../src/pipeline/retry.js';
import {
  answerWith,
  clustersOf,
  hang,
  httpRoute,
  prepare,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  streamingBody,
  svc,
  trafficPolicy,
  upstreamAnswer,
} from './fixtures.js';

const ep = (ip: string) => [{ name: ip, ip, port: 8080 }];
const snap = snapshotOf({
  services: [
    svc('flaky', '10.96.7.1', ep('10.0.7.1')),
    svc('slow', '10.96.7.2', ep('10.0.7.2')),
    svc('defaults', '10.96.7.3', ep('10.0.7.3')),
    svc('plain', '10.96.7.4', ep('10.0.7.4')),
    svc('per-try', '10.96.7.5', ep('10.0.7.5')),
  ],
  httpRoutes: [
    httpRoute('flaky', 'flaky', [{ retry: { attempts: 2, codes: [503], backoff: '1ms' } }]),
    httpRoute('per-try', 'per-try', [{ timeouts: { backendRequest: '30ms' } }]),
    httpRoute('slow', 'slow', [
      { timeouts: { request: '60ms' }, retry: { attempts: 3, codes: [503], backoff: '1ms' } },
    ]),
  ],
  trafficPolicies: [
    trafficPolicy('defaults', 'defaults', {
      retries: { attempts: 1, perTryTimeout: '250ms', retryOn: ['5xx', 'unavailable'] },
    }),
  ],
});
const clusters = clustersOf(snap);
const filter = retryFilter({ maxBufferedBodyBytes: 16 });

async function setup(host: string, init: RequestInit = {}): Promise<RequestContext> {
  const { rc } = requestOf(snap, { authority: { host, port: 80 }, ...init });
  await prepare(rc, clusters);
  return rc;
}

describe('retry filter: retries', () => {
  it('retries a 503 and answers with the 200, discarding the first answer', async () => {
    const rc = await setup('10.96.7.1');
    const first = upstreamAnswer(503);
    const second = upstreamAnswer(200);
    const next = recordingNext(
      () => first,
      () => second,
    );
    expect(await filter.run(rc, next)).toBe(second);
    expect(next.calls).toHaveLength(2);
    expect(first.discarded).toBe(1);
    expect(second.discarded).toBe(0);
    expect(rc.flags).not.toContain('URX');
  });

  it('gives the last answer with flag URX when every try fails', async () => {
    const rc = await setup('10.96.7.1');
    const answers = [upstreamAnswer(503), upstreamAnswer(503), upstreamAnswer(503)];
    const next = recordingNext((_rc, i) => answers[i]!);
    expect(await filter.run(rc, next)).toBe(answers[2]);
    expect(next.calls).toHaveLength(3);
    expect(answers.map((a) => a.discarded)).toEqual([1, 1, 0]);
    expect(rc.flags).toContain('URX');
  });

  it('does not retry a status the policy does not name', async () => {
    const rc = await setup('10.96.7.1');
    const answer = upstreamAnswer(500);
    const next = recordingNext(() => answer);
    expect(await filter.run(rc, next)).toBe(answer);
    expect(next.calls).toHaveLength(1);
    expect(answer.discarded).toBe(0);
  });

  it('retries a connect failure, and flags URX (pending, after the failure flag) when they run out', async () => {
    const rc = await setup('10.96.7.1');
    const recovered = recordingNext(answerWith(failure('CONNECT_FAILED')), () => upstreamAnswer(200));
    expect(await filter.run(rc, recovered)).toMatchObject({ kind: 'response', status: 200 });
    expect(recovered.calls).toHaveLength(2);

    const rc2 = await setup('10.96.7.1');
    const dead = recordingNext(answerWith(failure('CONNECT_FAILED')));
    expect(await filter.run(rc2, dead)).toEqual(failure('CONNECT_FAILED'));
    expect(dead.calls).toHaveLength(3);
    expect(rc2.pendingFlag).toBe('URX');
  });

  it('does not retry when no endpoint is healthy', async () => {
    const rc = await setup('10.96.7.1');
    const next = recordingNext(answerWith(failure('NO_HEALTHY_UPSTREAM')));
    expect(await filter.run(rc, next)).toEqual(failure('NO_HEALTHY_UPSTREAM'));
    expect(next.calls).toHaveLength(1);
  });

  it('gives back the in-flight count of a discarded try', async () => {
    const rc = await setup('10.96.7.1');
    const endpoint = clusters.get('shop/flaky')!.endpoints[0]!;
    const next = recordingNext((r, i) => {
      endpoint.active++;
      r.activeOn = endpoint;
      return upstreamAnswer(i === 0 ? 503 : 200);
    });
    await filter.run(rc, next);
    expect(next.calls).toHaveLength(2);
    // The first try's count was released before the second took its own.
    expect(endpoint.active).toBe(1);
    rc.releaseActive();
    expect(endpoint.active).toBe(0);
  });

  it('replays a small streamed body: it is buffered once and every try sees it', async () => {
    const rc = await setup('10.96.7.1', { method: 'POST', body: streamingBody('hello ', 'world') });
    const next = recordingNext(
      () => upstreamAnswer(503),
      () => upstreamAnswer(200),
    );
    expect(await filter.run(rc, next)).toMatchObject({ status: 200 });
    expect(next.calls).toHaveLength(2);
    for (const c of next.calls) expect(String(c.body)).toBe('hello world');
    expect(rc.requestBytes).toBe(11);
  });

  it('does not retry a streamed body too large to buffer', async () => {
    const rc = await setup('10.96.7.1', {
      method: 'POST',
      body: streamingBody('0123456789', '0123456789', 'tail'),
    });
    const answer = upstreamAnswer(503);
    const next = recordingNext(() => answer);
    expect(await filter.run(rc, next)).toBe(answer);
    expect(next.calls).toHaveLength(1);
    expect(answer.discarded).toBe(0);
    // What was read to decide is still sent: the stream starts with it.
    const body = next.calls[0]!.body;
    expect(Buffer.isBuffer(body)).toBe(false);
    const chunks: Buffer[] = [];
    for await (const c of body as AsyncIterable<Buffer>) chunks.push(c);
    expect(Buffer.concat(chunks).toString()).toBe('01234567890123456789tail');
  });
});

describe('retry filter: the route timeout', () => {
  it('ends a request whose upstream never answers with TIMEOUT', async () => {
    const rc = await setup('10.96.7.2');
    const next = recordingNext(hang);
    const t0 = performance.now();
    expect(await filter.run(rc, next)).toEqual(failure('TIMEOUT'));
    expect(performance.now() - t0).toBeLessThan(500);
    expect(rc.aborted).toBe('TIMEOUT');
    // A timed-out request is not tried again.
    expect(next.calls).toHaveLength(1);
  });

  it('counts the timeout across tries, not per try', async () => {
    const rc = await setup('10.96.7.2');
    const next = recordingNext(
      () => new Promise((resolve) => setTimeout(() => resolve(upstreamAnswer(503)), 25)),
    );
    expect(await filter.run(rc, next)).toEqual(failure('TIMEOUT'));
    // Four 25 ms tries would outlast the 60 ms: the route timeout ended them before the last.
    expect(next.calls.length).toBeLessThan(4);
  });

  it('stops the timer once an answer arrives', async () => {
    const rc = await setup('10.96.7.2');
    const answer = upstreamAnswer(200);
    expect(
      await filter.run(
        rc,
        recordingNext(() => answer),
      ),
    ).toBe(answer);
    await new Promise((r) => setTimeout(r, 90));
    expect(rc.aborted).toBeUndefined();
  });
});

describe('retry filter: defaults', () => {
  it("uses the TrafficPolicy's retries (and its per-try timeout) when the route has none", async () => {
    const rc = await setup('10.96.7.3');
    const next = recordingNext(
      () => upstreamAnswer(502),
      () => upstreamAnswer(200),
    );
    expect(await filter.run(rc, next)).toMatchObject({ status: 200 });
    expect(next.calls).toHaveLength(2);
    expect(rc.perTryTimeoutMs).toBe(250);
  });

  it('retries a trailers-only gRPC answer whose grpc-status the policy names', async () => {
    const rc = await setup('10.96.7.3');
    const next = recordingNext(
      () => upstreamAnswer(200, 14),
      () => upstreamAnswer(200, 0),
    );
    expect(await filter.run(rc, next)).toMatchObject({ grpcStatus: 0 });
    expect(next.calls).toHaveLength(2);
  });

  it('calls next once, untouched, without a timeout or retry policy', async () => {
    const rc = await setup('10.96.7.4');
    const answer = upstreamAnswer(503);
    const next = recordingNext(() => answer);
    expect(filter.run(rc, next)).toBe(answer);
    expect(next.calls).toHaveLength(1);
  });

  it("hands the route's backendRequest timeout to each try", async () => {
    const rc = await setup('10.96.7.5');
    const next = recordingNext(() => upstreamAnswer(200));
    await filter.run(rc, next);
    expect(rc.perTryTimeoutMs).toBe(30);
    expect(next.calls).toHaveLength(1);
  });
});
