// gRPC through the waypoint while the node agent carrying its tunnel drains (an upgrade): the
// agent's HBONE connection sends GOAWAY and is cut at the drain deadline. A call made after the
// GOAWAY must go over a new tunnel, not the old one, or the cut fails it. Found by the soak (issue
// 18): a gRPC call failed 503 when the old agent's drain deadline cut the waypoint's long-lived
// HTTP/2 session to a pod on that node.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frame, grpcCall, unframe } from '../grpc.js';
import { loopbackIp, service, startCarrier, startWaypoint, type TestWaypoint } from '../helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let app: http2.Http2Server;
let carrier: Awaited<ReturnType<typeof startCarrier>>;
let tw: TestWaypoint;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  const ip = loopbackIp();
  // The app: answers "slow" after 400 ms, anything else at once.
  app = http2.createServer();
  app.on('stream', (stream) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', async () => {
      const [req = Buffer.alloc(0)] = unframe(Buffer.concat(chunks));
      if (req.toString() === 'slow') await sleep(400);
      if (stream.destroyed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame(`said ${req.toString()}`));
    });
  });
  await new Promise<void>((resolve) => app.listen(0, ip, resolve));
  const appPort = (app.address() as AddressInfo).port;
  // The node agent's side (CONNECT streams piped to the app) and the waypoint's HBONE pool.
  carrier = await startCarrier(ip, appPort);
  tw = await startWaypoint(
    {
      services: [
        service('echo', '10.96.5.1', [{ name: 'echo', ip, port: appPort }], {
          port: 9000,
          appProtocol: 'grpc',
        }),
      ],
    },
    { host: '10.96.5.1', port: 9000 },
    { connectUpstream: carrier.connectUpstream },
  );
  session = http2.connect(tw.origin);
  session.on('error', () => {});
});

afterAll(async () => {
  session.close();
  await tw.close();
  await carrier.close();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

describe('gRPC through the waypoint while the carrying agent drains', () => {
  it('a call made after the HBONE connection got GOAWAY survives the drain deadline cutting that connection', async () => {
    expect((await grpcCall(session, '/hypha.echo.Echo/Say', 'before')).status).toBe('0');
    const draining = [...carrier.carried];
    expect(draining.length).toBe(1);
    // Drain: GOAWAY now (streams already open may finish), the connection cut 150 ms later.
    for (const s of draining) s.goaway(http2.constants.NGHTTP2_NO_ERROR);
    await sleep(50);
    const call = grpcCall(session, '/hypha.echo.Echo/Say', 'slow');
    await sleep(150);
    for (const s of draining) s.destroy();
    const r = await call;
    expect(r).toMatchObject({ status: '0', messages: ['said slow'] });
    expect(carrier.carried.length).toBe(2);
    expect((await grpcCall(session, '/hypha.echo.Echo/Say', 'after')).status).toBe('0');
  });
});
