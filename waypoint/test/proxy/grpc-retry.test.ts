// gRPC retries on grpc-status: a TrafficPolicy written Istio's way (`retries.retryOn: [unavailable]`)
// retries calls that fail with a trailers-only UNAVAILABLE, and leaves other statuses alone.
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GrpcServer, grpcCall, startGrpcServer } from '../grpc.js';
import { loopbackIp, startWaypoint, type TestWaypoint } from '../helpers.js';

/** Odd calls answer trailers-only UNAVAILABLE (14); even calls answer one message and status 0. */
function startFlaky(ip: string): Promise<GrpcServer> {
  return startGrpcServer(
    ip,
    {
      '/shop.Reviews/Get': async (_req, send) => {
        send('served');
        return { status: 0 };
      },
      '/shop.Reviews/Missing': async () => ({ status: 0 }),
    },
    (path, call) =>
      path === '/shop.Reviews/Missing'
        ? { status: 5, message: 'nope' }
        : call % 2 === 1
          ? { status: 14, message: 'busy' }
          : undefined,
  );
}

let flaky: GrpcServer;
let tw: TestWaypoint;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  flaky = await startFlaky(loopbackIp());
  tw = await startWaypoint(
    {
      services: [
        {
          name: 'reviews',
          namespace: 'shop',
          vips: ['10.96.4.1'],
          ports: [{ port: 9000, name: 'grpc', appProtocol: 'grpc' }],
          endpoints: [
            {
              ip: flaky.ip,
              targetPorts: { '9000': flaky.port },
              workload: { name: 'reviews', namespace: 'shop', serviceAccount: 'reviews' },
            },
          ],
        },
      ],
      trafficPolicies: [
        {
          apiVersion: 'traffic.hypha.dev/v1alpha1',
          kind: 'TrafficPolicy',
          metadata: { name: 'reviews', namespace: 'shop' },
          spec: {
            targetRefs: [{ kind: 'Service', name: 'reviews' }],
            retries: { attempts: 2, perTryTimeout: '2s', retryOn: ['unavailable'] },
          },
        },
      ],
    },
    { host: '10.96.4.1', port: 9000 },
  );
  session = http2.connect(tw.origin);
  session.on('error', () => {});
});

afterAll(async () => {
  session.close();
  await tw.close();
  await flaky.close();
});

describe('gRPC retries (TrafficPolicy retries.retryOn)', () => {
  it('retries a trailers-only UNAVAILABLE, so every call succeeds', async () => {
    const before = flaky.calls;
    for (let i = 0; i < 5; i++) {
      const r = await grpcCall(session, '/shop.Reviews/Get', `c${i}`);
      expect(r.status).toBe('0');
      expect(r.messages).toHaveLength(1);
    }
    // Each call took two tries on the server: UNAVAILABLE, then OK.
    expect(flaky.calls - before).toBe(10);
    // The retried calls count as successes (URX is only for a retry budget that ran out).
    const metrics = await tw.wp.registry.getSingleMetricAsString('istio_requests_total');
    expect(metrics).toMatch(/istio_requests_total\{[^}]*response_flags="-"[^}]*grpc_response_status="0"\} 5/);
  });

  it('does not retry a status that retryOn does not name', async () => {
    const before = flaky.calls;
    const r = await grpcCall(session, '/shop.Reviews/Missing', '');
    expect(r.status).toBe('5');
    expect(r.message).toBe('nope');
    expect(flaky.calls - before).toBe(1);
  });
});
