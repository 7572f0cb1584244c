// The HTTP/2 upstream try alone, against a local h2c server through real upstream pools over TCP:
// gRPC answers with trailers, trailers-only answers the retry filter can act on, and failures.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WaypointSnapshot } from '../../src/config.js';
import { compose, failure, type UpstreamAnswer } from '../../src/pipeline/context.js';
import { retryFilter } from '../../src/pipeline/retry.js';
import { http2Try } from '../../src/pipeline/upstream-http2.js';
import type { Cluster } from '../../src/traffic/cluster.js';
import type { UpstreamPools } from '../../src/upstream.js';
import {
  clustersOf,
  httpRoute,
  prepare,
  type RequestInit,
  requestOf,
  snapshotOf,
  streamingBody,
  svc,
  tcpPools,
} from './fixtures.js';

let server: http2.Http2Server;
let port: number;
let closedPort: number;
let snap: WaypointSnapshot;
let clusters: Map<string, Cluster>;
let pools: UpstreamPools;

const GRPC = { 'content-type': 'application/grpc' };

beforeAll(async () => {
  server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = headers[':path'];
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => {});
    switch (path) {
      case '/pkg.Greeter/Hello':
        stream.on('end', () => {
          stream.respond(
            { ':status': 200, ...GRPC, 'x-seen-authority': headers[':authority'] ?? '' },
            {
              waitForTrailers: true,
            },
          );
          stream.on('wantTrailers', () =>
            stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine' }),
          );
          stream.end(Buffer.concat([Buffer.from('echo:'), ...chunks]));
        });
        break;
      case '/pkg.Greeter/Unavailable':
        stream.respond({ ':status': 200, ...GRPC, 'grpc-status': '14' }, { endStream: true });
        break;
      case '/pkg.Greeter/Busy':
        // A 503 head, the body never finished: a retry discards it (the stream is cancelled).
        stream.respond({ ':status': 503 });
        stream.write('busy');
        break;
      case '/pkg.Greeter/Reset':
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        break;
      default:
        // Never answers.
        break;
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  snap = snapshotOf({
    services: [svc('greeter', '10.96.5.1', [{ name: 'g', ip: '127.0.0.1', port }], { appProtocol: 'grpc' })],
    httpRoutes: [
      httpRoute('busy', 'greeter', [
        {
          matches: [{ path: { type: 'PathPrefix', value: '/pkg.Greeter/Busy' } }],
          timeouts: { request: '60ms' },
          retry: { attempts: 1, codes: [503], backoff: '600ms' },
        },
      ]),
    ],
  });
  clusters = clustersOf(snap);
  pools = tcpPools();
});

afterAll(async () => {
  await pools.close();
  await new Promise((r) => server.close(r));
});

async function setup(path: string, init: RequestInit = {}, to = { ip: '127.0.0.1', port: 0 }) {
  const r = requestOf(snap, {
    authority: { host: '10.96.5.1', port: 80 },
    host: 'greeter.shop.svc.cluster.local',
    h2: true,
    method: 'POST',
    url: path,
    headers: { ...GRPC, te: 'trailers' },
    ...init,
  });
  await prepare(r.rc, clusters);
  expect(r.rc.h2Upstream).toBe(true);
  r.rc.upstream = { ip: to.ip, port: to.port || port };
  return r;
}

function asAnswer(o: Awaited<ReturnType<typeof http2Try>>): UpstreamAnswer {
  if (o.kind !== 'response') throw new Error(`expected an upstream answer, got ${JSON.stringify(o)}`);
  return o;
}

describe('HTTP/2 upstream try', () => {
  it('relays a gRPC answer with its trailers and records grpc-status', async () => {
    const { rc, res } = await setup('/pkg.Greeter/Hello', { body: 'ping' });
    const answer = asAnswer(await http2Try(rc, pools));
    expect(answer.status).toBe(200);
    expect(answer.grpcStatus).toBeUndefined();
    expect(res.headersSent).toBe(false);
    answer.respond(rc);
    await res.settled();
    expect(res.head?.status).toBe(200);
    expect(res.head?.headers['content-type']).toBe('application/grpc');
    expect(res.head?.headers['x-seen-authority']).toBe('greeter.shop.svc.cluster.local');
    expect(Object.keys(res.head!.headers).some((k) => k.startsWith(':'))).toBe(false);
    expect(res.body).toBe('echo:ping');
    expect(res.trailers).toEqual({ 'grpc-status': '0', 'grpc-message': 'fine' });
    expect(rc.grpcStatus).toBe('0');
    expect(rc.responseBytes).toBe(9);
  });

  it('streams a request body upstream and counts it', async () => {
    const { rc, res } = await setup('/pkg.Greeter/Hello', { body: streamingBody('a', 'bc') });
    asAnswer(await http2Try(rc, pools)).respond(rc);
    await res.settled();
    expect(res.body).toBe('echo:abc');
    expect(rc.requestBytes).toBe(3);
  });

  it('reports the grpc-status of a trailers-only answer so it can be retried', async () => {
    const { rc, res } = await setup('/pkg.Greeter/Unavailable');
    const answer = asAnswer(await http2Try(rc, pools));
    expect(answer.grpcStatus).toBe(14);
    answer.discard();
    expect(res.headersSent).toBe(false);
  });

  it('fails UPSTREAM_RESET when the stream is reset before a response', async () => {
    const { rc } = await setup('/pkg.Greeter/Reset');
    expect(await http2Try(rc, pools)).toEqual(failure('UPSTREAM_RESET'));
  });

  it('fails TIMEOUT after the per-try timeout', async () => {
    const { rc } = await setup('/pkg.Greeter/Silent');
    rc.perTryTimeoutMs = 50;
    const t0 = performance.now();
    expect(await http2Try(rc, pools)).toEqual(failure('TIMEOUT'));
    expect(performance.now() - t0).toBeLessThan(500);
  });

  it('fails TIMEOUT when the route timeout aborts the request mid-try', async () => {
    const { rc } = await setup('/pkg.Greeter/Silent');
    setTimeout(() => rc.abort('TIMEOUT'), 30);
    expect(await http2Try(rc, pools)).toEqual(failure('TIMEOUT'));
  });

  it('fails CONNECT_FAILED when nothing listens', async () => {
    const { rc } = await setup('/pkg.Greeter/Hello', {}, { ip: '127.0.0.1', port: closedPort });
    expect(await http2Try(rc, pools)).toEqual(failure('CONNECT_FAILED'));
  });

  it('leaves the request cancellable after a discarded try: a route timeout cuts the retry backoff short', async () => {
    const { rc } = await setup('/pkg.Greeter/Busy');
    const chain = compose([retryFilter({ maxBufferedBodyBytes: 1024 })], (r) => http2Try(r, pools));
    const t0 = performance.now();
    expect(await chain(rc)).toEqual(failure('TIMEOUT'));
    // 60 ms route timeout; the backoff alone would take 300-600 ms.
    expect(performance.now() - t0).toBeLessThan(250);
  });
});
