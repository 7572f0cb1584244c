// Filter 4 alone: fault injection from the service's TrafficPolicy.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { failure } from '../../src/pipeline/context.js';
import { faultFilter } from '../../src/pipeline/fault.js';
import { answerWith, recordingNext, requestOf, snapshotOf, svc, trafficPolicy } from './fixtures.js';

const ep = (ip: string) => [{ name: ip, ip, port: 8080 }];
const snap = snapshotOf({
  services: [
    svc('aborts', '10.96.4.1', ep('10.0.4.1')),
    svc('grpc-aborts', '10.96.4.2', ep('10.0.4.2'), { appProtocol: 'grpc' }),
    svc('delays', '10.96.4.3', ep('10.0.4.3')),
    svc('sometimes', '10.96.4.4', ep('10.0.4.4')),
    svc('plain', '10.96.4.5', ep('10.0.4.5')),
  ],
  trafficPolicies: [
    trafficPolicy('aborts', 'aborts', { fault: { abort: { httpStatus: 418, percentage: 100 } } }),
    trafficPolicy('grpc-aborts', 'grpc-aborts', {
      fault: { abort: { httpStatus: 503, grpcStatus: 14, percentage: 100 } },
    }),
    trafficPolicy('delays', 'delays', { fault: { delay: { fixedDelay: '40ms', percentage: 100 } } }),
    trafficPolicy('sometimes', 'sometimes', { fault: { abort: { httpStatus: 500, percentage: 30 } } }),
  ],
});
const at = (host: string) => ({ authority: { host, port: 80 } });
const ok = answerWith({ kind: 'local', status: 200, body: 'upstream' });

afterEach(() => {
  vi.restoreAllMocks();
});

describe('fault filter', () => {
  it('passes a service without faults straight to next', async () => {
    const { rc } = requestOf(snap, at('10.96.4.5'));
    const next = recordingNext(ok);
    expect(await faultFilter.run(rc, next)).toMatchObject({ status: 200, body: 'upstream' });
    expect(next.calls).toHaveLength(1);
    expect(rc.flags).toEqual([]);
  });

  it('aborts 100% of requests with the configured status and flag FI, never calling next', async () => {
    const { rc } = requestOf(snap, at('10.96.4.1'));
    const next = recordingNext(ok);
    expect(await faultFilter.run(rc, next)).toEqual({
      kind: 'local',
      status: 418,
      body: 'fault filter abort',
      flag: 'FI',
    });
    expect(next.calls).toHaveLength(0);
  });

  it('aborts a gRPC call with 200 and grpc-status, as gRPC clients expect', async () => {
    const { rc } = requestOf(snap, {
      ...at('10.96.4.2'),
      h2: true,
      method: 'POST',
      url: '/pkg.Svc/Call',
      headers: { 'content-type': 'application/grpc' },
    });
    const next = recordingNext(ok);
    const o = await faultFilter.run(rc, next);
    expect(o).toMatchObject({
      kind: 'local',
      status: 200,
      flag: 'FI',
      headers: { 'content-type': 'application/grpc', 'grpc-status': '14' },
    });
    expect(rc.grpcStatus).toBe('14');
    expect(next.calls).toHaveLength(0);
  });

  it('aborts a plain HTTP request to that service with its httpStatus', async () => {
    const { rc } = requestOf(snap, at('10.96.4.2'));
    expect(await faultFilter.run(rc, recordingNext(ok))).toMatchObject({ status: 503, flag: 'FI' });
  });

  it('aborts only the configured share of requests', async () => {
    const random = vi.spyOn(Math, 'random');
    random.mockReturnValue(0.29);
    const hit = requestOf(snap, at('10.96.4.4'));
    expect(await faultFilter.run(hit.rc, recordingNext(ok))).toMatchObject({ status: 500, flag: 'FI' });
    random.mockReturnValue(0.3);
    const miss = requestOf(snap, at('10.96.4.4'));
    const next = recordingNext(ok);
    expect(await faultFilter.run(miss.rc, next)).toMatchObject({ status: 200 });
    expect(next.calls).toHaveLength(1);
  });

  it('delays the request (flag DI) before calling next', async () => {
    const { rc } = requestOf(snap, at('10.96.4.3'));
    const next = recordingNext(ok);
    const t0 = performance.now();
    expect(await faultFilter.run(rc, next)).toMatchObject({ status: 200 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(35);
    expect(next.calls).toHaveLength(1);
    expect(rc.flags).toEqual(['DI']);
  });

  it('ends a delayed request that is aborted meanwhile without calling next', async () => {
    const { rc } = requestOf(snap, at('10.96.4.3'));
    const next = recordingNext(ok);
    const pending = faultFilter.run(rc, next);
    rc.abort('TIMEOUT');
    expect(await pending).toEqual(failure('TIMEOUT'));
    expect(next.calls).toHaveLength(0);
  });
});
