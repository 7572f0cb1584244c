// gRPC through the waypoint: HTTP/2 prior knowledge in, GRPCRoute, HTTP/2 to the endpoint, trailers kept.
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GrpcServer, grpcCall, startGrpcServer } from '../grpc.js';
import { loopbackIp, startWaypoint, type TestWaypoint } from '../helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function methods(name: string) {
  return {
    '/shop.Reviews/Get': async (req: Buffer) => {
      void req;
      return { status: 0 };
    },
    '/shop.Reviews/List': async (req: Buffer, send: (m: string) => void) => {
      const n = Number(req.toString());
      for (let i = 0; i < n; i++) {
        send(`${name}:item-${i}`);
        await sleep(40);
      }
      return { status: 0 };
    },
    '/shop.Reviews/Missing': async () => ({ status: 5, message: 'review not found' }),
  };
}

let v1: GrpcServer;
let v2: GrpcServer;
let tw: TestWaypoint;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  v1 = await startGrpcServer(loopbackIp(), {
    ...methods('v1'),
    '/shop.Reviews/Get': async (req, send) => {
      send(`v1 says hello ${req.toString()}`);
      return { status: 0 };
    },
  });
  v2 = await startGrpcServer(loopbackIp(), {
    ...methods('v2'),
    '/shop.Reviews/Get': async (req, send) => {
      send(`v2 says hello ${req.toString()}`);
      return { status: 0 };
    },
  });
  const svc = (name: string, vip: string, s: GrpcServer) => ({
    name,
    namespace: 'shop',
    vips: [vip],
    ports: [{ port: 9000, name: 'grpc', appProtocol: 'grpc' }],
    endpoints: [
      {
        ip: s.ip,
        targetPorts: { '9000': s.port },
        workload: { name, namespace: 'shop', serviceAccount: name },
      },
    ],
  });
  tw = await startWaypoint(
    {
      services: [
        svc('reviews', '10.96.3.1', v1),
        svc('reviews-v1', '10.96.3.2', v1),
        svc('reviews-v2', '10.96.3.3', v2),
      ],
      grpcRoutes: [
        {
          kind: 'GRPCRoute',
          metadata: { name: 'reviews', namespace: 'shop' },
          spec: {
            parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 9000 }],
            rules: [
              {
                matches: [
                  { method: { service: 'shop.Reviews' }, headers: [{ name: 'x-canary', value: 'true' }] },
                ],
                backendRefs: [{ name: 'reviews-v2', port: 9000 }],
              },
              {
                matches: [{ method: { service: 'shop.Reviews' } }],
                backendRefs: [{ name: 'reviews-v1', port: 9000 }],
              },
            ],
          },
        },
      ],
    },
    { host: '10.96.3.1', port: 9000 },
  );
  session = http2.connect(tw.origin);
  session.on('error', () => {});
});

afterAll(async () => {
  session.close();
  await tw.close();
  await v1.close();
  await v2.close();
});

describe('gRPC through a GRPCRoute', () => {
  it('carries a unary call and its grpc-status trailer', async () => {
    const r = await grpcCall(session, '/shop.Reviews/Get', 'ana');
    expect(r).toMatchObject({ httpStatus: 200, messages: ['v1 says hello ana'], status: '0' });
  });

  it('routes by header to v2', async () => {
    const r = await grpcCall(session, '/shop.Reviews/Get', 'bo', { 'x-canary': 'true' });
    expect(r.messages).toEqual(['v2 says hello bo']);
  });

  it('streams server-streaming responses as they are produced', async () => {
    const r = await grpcCall(session, '/shop.Reviews/List', '5');
    expect(r.messages).toEqual(['v1:item-0', 'v1:item-1', 'v1:item-2', 'v1:item-3', 'v1:item-4']);
    expect(r.status).toBe('0');
    // Not buffered until the end: the first message arrived well before the last one.
    expect(r.arrivals[4]! - r.arrivals[0]!).toBeGreaterThan(100);
  });

  it('preserves error statuses and messages from trailers', async () => {
    const r = await grpcCall(session, '/shop.Reviews/Missing', '');
    expect(r.status).toBe('5');
    expect(r.message).toBe('review not found');
    const metrics = await tw.wp.registry.getSingleMetricAsString('istio_requests_total');
    expect(metrics).toMatch(
      /istio_requests_total\{[^}]*request_protocol="grpc"[^}]*grpc_response_status="5"[^}]*\} 1/,
    );
  });

  it('runs concurrent calls on one client connection', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => grpcCall(session, '/shop.Reviews/Get', `c${i}`)),
    );
    expect(results.map((r) => r.messages[0])).toEqual(
      Array.from({ length: 20 }, (_, i) => `v1 says hello c${i}`),
    );
  });
});
