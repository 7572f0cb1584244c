// Filter 6 alone: a copy of the request goes to the mirror service (a real local server through
// real upstream pools); the client's request goes on without waiting for it.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WaypointSnapshot } from '../../src/config.js';
import { mirrorFilter } from '../../src/pipeline/mirror.js';
import type { Cluster } from '../../src/traffic/cluster.js';
import type { UpstreamPools } from '../../src/upstream.js';
import { type Backend, service, startBackend } from '../helpers.js';
import {
  answerWith,
  clustersOf,
  eventually,
  httpRoute,
  prepare,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  streamingBody,
  svc,
  tcpPools,
} from './fixtures.js';

let main: Backend;
let shadow: Backend;
let silent: Backend;
let snap: WaypointSnapshot;
let clusters: Map<string, Cluster>;
let pools: UpstreamPools;
const mirrorTo = (name: string) => ({
  type: 'RequestMirror',
  requestMirror: { backendRef: { name, port: 80 } },
});
const ok = answerWith({ kind: 'local', status: 200, body: 'client path' });

beforeAll(async () => {
  main = await startBackend('main');
  shadow = await startBackend('shadow');
  silent = await startBackend('silent', () => {});
  snap = snapshotOf({
    services: [
      service('reviews', '10.96.0.10', [main]),
      service('reviews-mirror', '10.96.0.13', [shadow]),
      service('reviews-silent', '10.96.0.14', [silent]),
      // Nothing listens on port 1 of this loopback address.
      svc('reviews-dead', '10.96.0.15', [{ name: 'dead', ip: '127.0.0.1', port: 1 }]),
    ],
    httpRoutes: [
      httpRoute('reviews', 'reviews', [
        {
          matches: [{ path: { type: 'PathPrefix', value: '/mirrored' } }],
          filters: [mirrorTo('reviews-mirror')],
        },
        {
          matches: [{ path: { type: 'PathPrefix', value: '/silent' } }],
          filters: [mirrorTo('reviews-silent')],
        },
        { matches: [{ path: { type: 'PathPrefix', value: '/dead' } }], filters: [mirrorTo('reviews-dead')] },
      ]),
    ],
  });
  clusters = clustersOf(snap);
  pools = tcpPools();
});

afterAll(async () => {
  await pools.close();
  await Promise.all([main.close(), shadow.close(), silent.close()]);
});

async function run(init: RequestInit) {
  const { rc } = requestOf(snap, { host: 'reviews.shop.svc.cluster.local', ...init });
  await prepare(rc, clusters);
  const filter = mirrorFilter({
    clusters,
    pools,
    log: pino({ level: 'silent' }),
    maxBufferedBodyBytes: 1024,
  });
  const next = recordingNext(ok);
  const o = await filter.run(rc, next);
  return { rc, next, o };
}

describe('mirror filter', () => {
  it('sends a copy with Host <host>-shadow to the mirror and goes on with the client request', async () => {
    const before = shadow.requests.length;
    const { next, o } = await run({
      url: '/mirrored/x?q=1',
      headers: { 'x-trace': 'abc' },
      requestId: 'rid-m',
    });
    expect(o).toMatchObject({ status: 200, body: 'client path' });
    expect(next.calls).toHaveLength(1);
    await eventually(() => shadow.requests.length > before);
    const copy = shadow.requests[before]!;
    expect(copy.method).toBe('GET');
    expect(copy.url).toBe('/mirrored/x?q=1');
    expect(copy.headers.host).toBe('reviews.shop.svc.cluster.local-shadow');
    expect(copy.headers['x-trace']).toBe('abc');
    expect(copy.headers['x-request-id']).toBe('rid-m');
    // The client's own request is not sent by the mirror filter.
    expect(main.requests).toHaveLength(0);
  });

  it('mirrors a streamed body it could buffer, and hands the same bytes on', async () => {
    const before = shadow.requests.length;
    const { next } = await run({ method: 'POST', url: '/mirrored', body: streamingBody('{"a":', '1}') });
    expect(String(next.calls[0]!.body)).toBe('{"a":1}');
    await eventually(() => shadow.requests.length > before);
    expect(shadow.requests[before]!.body).toBe('{"a":1}');
  });

  it('does not wait for the mirror to answer', async () => {
    const done = await Promise.race([
      run({ url: '/silent' }),
      new Promise<'waited'>((r) => setTimeout(() => r('waited'), 500)),
    ]);
    if (done === 'waited') throw new Error('the client request waited for the mirror');
    expect(done.next.calls).toHaveLength(1);
    await eventually(() => silent.requests.length > 0);
  });

  it('goes on when the mirror cannot be reached', async () => {
    const { next, o } = await run({ url: '/dead' });
    expect(next.calls).toHaveLength(1);
    expect(o).toMatchObject({ status: 200 });
    await new Promise((r) => setTimeout(r, 30));
  });

  it('leaves a request without a mirror untouched (its body still streams)', async () => {
    const before = shadow.requests.length;
    const body = streamingBody('streamed');
    const { next } = await run({ method: 'POST', url: '/plain', body });
    expect(next.calls[0]!.body).toBe(body);
    await new Promise((r) => setTimeout(r, 30));
    expect(shadow.requests.length).toBe(before);
  });

  it('mirrors a body too large to buffer without it, while the client request streams it whole', async () => {
    const before = shadow.requests.length;
    const { rc } = requestOf(snap, {
      host: 'reviews.shop.svc.cluster.local',
      method: 'POST',
      url: '/mirrored/big',
      headers: { 'content-length': '2048' },
      body: streamingBody('a'.repeat(1024), 'b'.repeat(1024)),
    });
    await prepare(rc, clusters);
    const filter = mirrorFilter({
      clusters,
      pools,
      log: pino({ level: 'silent' }),
      maxBufferedBodyBytes: 1024,
    });
    const next = recordingNext(ok);
    await filter.run(rc, next);
    await eventually(() => shadow.requests.length > before);
    expect(shadow.requests[before]!.url).toBe('/mirrored/big');
    expect(shadow.requests[before]!.body).toBe('');
    const chunks: Buffer[] = [];
    for await (const c of next.calls[0]!.body as AsyncIterable<Buffer>) chunks.push(c);
    expect(Buffer.concat(chunks).toString()).toBe('a'.repeat(1024) + 'b'.repeat(1024));
  });
});
