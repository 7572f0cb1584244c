// The HTTP/1.1 upstream try alone, against real local node:http servers through real upstream pools
// over TCP: an answer is held until the retry filter decides, then written downstream.
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WaypointSnapshot } from '../../src/config.js';
import { failure, type UpstreamAnswer } from '../../src/pipeline/context.js';
import { http1Try } from '../../src/pipeline/upstream-http1.js';
import type { Cluster } from '../../src/traffic/cluster.js';
import { UpstreamPools } from '../../src/upstream.js';
import { type Backend, service, startBackend } from '../helpers.js';
import {
  clustersOf,
  httpRoute,
  prepare,
  type RequestInit,
  requestOf,
  snapshotOf,
  streamingBody,
  tcpPools,
} from './fixtures.js';

let echo: Backend;
let flaky: Backend;
let resets: Backend;
let silent: Backend;
let big: Backend;
let closedPort: number;
const flakyPorts: number[] = [];
let snap: WaypointSnapshot;
let clusters: Map<string, Cluster>;
let pools: UpstreamPools;
const BIG = 200_000;

beforeAll(async () => {
  echo = await startBackend('echo', (req, res, body) => {
    res.setHeader('x-instance', 'echo');
    res.setHeader('x-internal', 'secret');
    res.statusCode = 201;
    res.end(JSON.stringify({ url: req.url, headers: req.headers, body }));
  });
  flaky = await startBackend('flaky', (req, res, _body, n) => {
    flakyPorts.push(req.socket.remotePort ?? 0);
    res.statusCode = n === 1 ? 503 : 200;
    res.end(n === 1 ? 'x'.repeat(10_000) : 'ok');
  });
  resets = await startBackend('resets', (req) => req.socket.destroy());
  silent = await startBackend('silent', () => {});
  big = await startBackend('big', (_req, res) => {
    res.write(Buffer.alloc(BIG / 2, 'a'));
    setTimeout(() => res.end(Buffer.alloc(BIG / 2, 'b')), 5);
  });
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  snap = snapshotOf({
    services: [service('reviews', '10.96.0.10', [echo])],
    httpRoutes: [
      httpRoute('reviews', 'reviews', [
        {
          filters: [
            {
              type: 'ResponseHeaderModifier',
              responseHeaderModifier: { set: [{ name: 'x-resp', value: 'set' }], remove: ['x-internal'] },
            },
          ],
        },
      ]),
    ],
  });
  clusters = clustersOf(snap);
  pools = tcpPools();
});

afterAll(async () => {
  await pools.close();
  await Promise.all([echo, flaky, resets, silent, big].map((b) => b.close()));
});

/** A request prepared up to the upstream step, sent to `to` (the endpoint balance would pick). */
async function setup(to: { ip: string; port: number }, init: RequestInit = {}) {
  const r = requestOf(snap, { host: 'reviews.shop.svc.cluster.local', ...init });
  await prepare(r.rc, clusters);
  r.rc.upstream = { ip: to.ip, port: to.port };
  return r;
}

function asAnswer(o: Awaited<ReturnType<typeof http1Try>>): UpstreamAnswer {
  if (o.kind !== 'response') throw new Error(`expected an upstream answer, got ${JSON.stringify(o)}`);
  return o;
}

describe('HTTP/1.1 upstream try', () => {
  it('holds the answer until respond(), then writes it with hop-by-hop headers dropped and modifiers applied', async () => {
    const { rc, res } = await setup(echo, { url: '/a/b?c=d', requestId: 'rid-1', headers: { 'x-in': '1' } });
    const answer = asAnswer(await http1Try(rc, pools));
    expect(answer.status).toBe(201);
    expect(res.headersSent).toBe(false);
    answer.respond(rc);
    await res.settled();
    expect(res.head?.status).toBe(201);
    const head = res.head!.headers;
    expect(head).not.toHaveProperty('connection');
    expect(head).not.toHaveProperty('keep-alive');
    expect(head).not.toHaveProperty('x-internal');
    expect(head['x-resp']).toBe('set');
    expect(head['x-instance']).toBe('echo');
    const seen = JSON.parse(res.body) as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/a/b?c=d');
    expect(seen.headers.host).toBe('reviews.shop.svc.cluster.local');
    expect(seen.headers['x-request-id']).toBe('rid-1');
    expect(seen.headers['x-in']).toBe('1');
    expect(rc.responseBytes).toBe(Buffer.byteLength(res.body));
  });

  it('sends a buffered body', async () => {
    const { rc, res } = await setup(echo, { method: 'POST', body: 'hello' });
    asAnswer(await http1Try(rc, pools)).respond(rc);
    await res.settled();
    expect(JSON.parse(res.body).body).toBe('hello');
  });

  it('streams a body and counts its bytes', async () => {
    const { rc, res } = await setup(echo, { method: 'POST', body: streamingBody('part1-', 'part2') });
    asAnswer(await http1Try(rc, pools)).respond(rc);
    await res.settled();
    expect(JSON.parse(res.body).body).toBe('part1-part2');
    expect(rc.requestBytes).toBe(11);
  });

  it('streams a large response downstream whole', async () => {
    const { rc, res } = await setup(big);
    asAnswer(await http1Try(rc, pools)).respond(rc);
    await res.settled();
    expect(res.body.length).toBe(BIG);
    expect(res.body.endsWith('b')).toBe(true);
    expect(rc.responseBytes).toBe(BIG);
  });

  it('drains a discarded answer and keeps its connection for the retry', async () => {
    const first = await setup(flaky);
    const a = asAnswer(await http1Try(first.rc, pools));
    expect(a.status).toBe(503);
    a.discard();
    expect(first.res.headersSent).toBe(false);
    // Once the rest of the discarded body has drained, its connection is free again.
    await new Promise((r) => setTimeout(r, 50));
    const second = await setup(flaky);
    const b = asAnswer(await http1Try(second.rc, pools));
    b.respond(second.rc);
    await second.res.settled();
    expect(second.res.body).toBe('ok');
    expect(flakyPorts).toHaveLength(2);
    expect(flakyPorts[1]).toBe(flakyPorts[0]);
  });

  it('fails CONNECT_FAILED when nothing listens', async () => {
    const { rc } = await setup({ ip: '127.0.0.1', port: closedPort });
    expect(await http1Try(rc, pools)).toEqual(failure('CONNECT_FAILED'));
  });

  it('fails UPSTREAM_RESET when the upstream closes before answering', async () => {
    const { rc } = await setup(resets);
    expect(await http1Try(rc, pools)).toEqual(failure('UPSTREAM_RESET'));
  });

  it('fails TIMEOUT after the per-try timeout', async () => {
    const { rc } = await setup(silent);
    rc.perTryTimeoutMs = 50;
    const t0 = performance.now();
    expect(await http1Try(rc, pools)).toEqual(failure('TIMEOUT'));
    expect(performance.now() - t0).toBeLessThan(500);
  });

  it('fails TIMEOUT when the route timeout aborts the request mid-try', async () => {
    const { rc } = await setup(silent);
    setTimeout(() => rc.abort('TIMEOUT'), 30);
    expect(await http1Try(rc, pools)).toEqual(failure('TIMEOUT'));
  });

  it('does not go upstream for a request already aborted', async () => {
    const before = echo.requests.length;
    const { rc } = await setup(echo);
    rc.abort('TIMEOUT');
    expect(await http1Try(rc, pools)).toEqual(failure('TIMEOUT'));
    await new Promise((r) => setTimeout(r, 30));
    expect(echo.requests.length).toBe(before);
  });

  it('writes nothing when the client went away before the answer was sent', async () => {
    const { rc, res } = await setup(echo);
    const answer = asAnswer(await http1Try(rc, pools));
    res.destroy();
    answer.respond(rc);
    expect(res.head).toBeUndefined();
  });

  it('cancels a try for good when its per-try timeout fires while still connecting', async () => {
    // Connections take 80 ms to open; the try gives up after 20 ms.
    const slowPools = new UpstreamPools({
      connect: async (ep) => {
        await new Promise((r) => setTimeout(r, 80));
        const s = net.connect({ host: ep.ip, port: ep.port });
        await new Promise((resolve, reject) => s.once('connect', resolve).once('error', reject));
        return s;
      },
    });
    try {
      const before = echo.requests.length;
      const { rc } = await setup(echo);
      rc.perTryTimeoutMs = 20;
      expect(await http1Try(rc, slowPools)).toEqual(failure('TIMEOUT'));
      // What runs next (a retry's backoff) registers its cancel hook; the dead try must not clear it.
      let cancelled = false;
      rc.onAbort(() => {
        cancelled = true;
      });
      await new Promise((r) => setTimeout(r, 150));
      // The timed-out request was never sent once the connection came up.
      expect(echo.requests.length).toBe(before);
      rc.abort('TIMEOUT');
      expect(cancelled).toBe(true);
    } finally {
      await slowPools.close();
    }
  });
});
