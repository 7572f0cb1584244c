// Filter 5 alone: redirects, the backend pick (weighted split) and the upstream request head.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { failure } from '../../src/pipeline/context.js';
import { rewriteFilter } from '../../src/pipeline/rewrite.js';
import {
  answerWith,
  clustersOf,
  httpRoute,
  prepare,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  svc,
} from './fixtures.js';

const ep = (ip: string) => [{ name: ip, ip, port: 8080 }];
const services = [
  svc('reviews', '10.96.0.10', ep('10.0.0.1')),
  svc('reviews-v1', '10.96.0.11', ep('10.0.0.2')),
  svc('reviews-v2', '10.96.0.12', ep('10.0.0.3')),
  svc('greeter', '10.96.0.14', ep('10.0.0.4'), { appProtocol: 'grpc' }),
];
const snap = snapshotOf({
  services,
  httpRoutes: [
    httpRoute('reviews', 'reviews', [
      {
        matches: [{ path: { type: 'PathPrefix', value: '/split' } }],
        backendRefs: [
          { name: 'reviews-v1', port: 80, weight: 90 },
          { name: 'reviews-v2', port: 80, weight: 10 },
        ],
      },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/old' } }],
        filters: [
          {
            type: 'URLRewrite',
            urlRewrite: {
              hostname: 'new.internal',
              path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' },
            },
          },
          {
            type: 'RequestHeaderModifier',
            requestHeaderModifier: {
              set: [{ name: 'x-set', value: 'yes' }],
              add: [{ name: 'x-add', value: 'two' }],
              remove: ['x-drop'],
            },
          },
        ],
        backendRefs: [
          {
            name: 'reviews-v1',
            port: 80,
            filters: [
              {
                type: 'RequestHeaderModifier',
                requestHeaderModifier: { set: [{ name: 'x-backend', value: 'v1' }] },
              },
            ],
          },
        ],
      },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/moved' } }],
        filters: [
          {
            type: 'RequestRedirect',
            requestRedirect: {
              scheme: 'https',
              hostname: 'shop.example.com',
              path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/store' },
              statusCode: 301,
            },
          },
        ],
      },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/elsewhere' } }],
        filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'other.example.com' } }],
      },
      {
        matches: [{ path: { type: 'Exact', value: '/full' } }],
        filters: [
          {
            type: 'URLRewrite',
            urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/replaced' } },
          },
        ],
        backendRefs: [{ name: 'reviews-v1', port: 80 }],
      },
      {
        matches: [{ path: { type: 'PathPrefix', value: '/self' } }],
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-self', value: '1' }] } },
        ],
      },
    ]),
  ],
});
const clusters = clustersOf(snap);
const ok = answerWith({ kind: 'local', status: 200, body: 'upstream' });

async function run(init: RequestInit, cl = clusters, s = snap) {
  const { rc } = requestOf(s, init);
  await prepare(rc);
  const next = recordingNext(ok);
  const o = await rewriteFilter(cl).run(rc, next);
  return { rc, next, o };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('rewrite filter: redirects', () => {
  it('answers a RequestRedirect with 3xx and Location (query kept) and never calls next', async () => {
    const { o, next } = await run({ url: '/moved/item?id=7' });
    expect(o).toEqual({
      kind: 'local',
      status: 301,
      body: '',
      headers: { location: 'https://shop.example.com/store/item?id=7' },
    });
    expect(next.calls).toHaveLength(0);
  });
});

describe('rewrite filter: redirects keep what they do not change', () => {
  it('keeps the scheme, the Host port, path and query; default status 302', async () => {
    const { o } = await run({ url: '/elsewhere/a?b=1', host: 'reviews:8080' });
    expect(o).toMatchObject({
      status: 302,
      headers: { location: 'http://other.example.com:8080/elsewhere/a?b=1' },
    });
  });
});

describe('rewrite filter: the upstream request head', () => {
  it('drops hop-by-hop headers, sets x-request-id and keeps end-to-end headers', async () => {
    const { next } = await run({
      url: '/split',
      requestId: 'rid-42',
      headers: {
        connection: 'keep-alive, x-hop',
        'keep-alive': 'timeout=5',
        'proxy-connection': 'keep-alive',
        'transfer-encoding': 'chunked',
        upgrade: 'websocket',
        te: 'gzip',
        expect: '100-continue',
        'x-request-id': 'from-client',
        'x-keep': 'me',
      },
    });
    expect(next.calls).toHaveLength(1);
    const h = next.calls[0]!.upstreamHeaders;
    for (const k of [
      'connection',
      'keep-alive',
      'proxy-connection',
      'transfer-encoding',
      'upgrade',
      'te',
      'expect',
      'host',
    ])
      expect(h).not.toHaveProperty(k);
    expect(h['x-keep']).toBe('me');
    expect(h['x-request-id']).toBe('rid-42');
    expect(next.calls[0]!.upstreamHost).toBe('10.96.0.10:80');
  });

  it('keeps `te: trailers` (gRPC needs it)', async () => {
    const { next } = await run({ url: '/split', headers: { te: 'trailers' } });
    expect(next.calls[0]!.upstreamHeaders.te).toBe('trailers');
  });

  it('rewrites the prefix and the host, keeps the query, and applies route and backend header modifiers', async () => {
    const { next } = await run({
      url: '/old/page?q=1&r=2',
      headers: { 'x-drop': 'gone', 'x-add': 'one', 'x-set': 'client' },
    });
    const seen = next.calls[0]!;
    expect(seen.upstreamPath).toBe('/new/page?q=1&r=2');
    expect(seen.upstreamHost).toBe('new.internal');
    expect(seen.upstreamHeaders).not.toHaveProperty('x-drop');
    expect(seen.upstreamHeaders['x-set']).toBe('yes');
    expect(seen.upstreamHeaders['x-add']).toBe('one,two');
    expect(seen.upstreamHeaders['x-backend']).toBe('v1');
    expect(seen.backend).toBe('shop/reviews-v1');
    expect(seen.target).toBe('shop/reviews-v1');
    expect(seen.targetPort).toBe(80);
  });

  it('replaces the full path but keeps the query', async () => {
    const { next } = await run({ url: '/full?x=y' });
    expect(next.calls[0]!.upstreamPath).toBe('/replaced?x=y');
  });

  it('leaves the path and query as sent without a rewrite', async () => {
    const { next } = await run({ url: '/split/a%20b?z=1' });
    expect(next.calls[0]!.upstreamPath).toBe('/split/a%20b?z=1');
  });

  it('forwards a rule without backendRefs to the service itself', async () => {
    const { rc, next } = await run({ url: '/self' });
    expect(next.calls[0]!.backend).toBe('shop/reviews');
    expect(next.calls[0]!.upstreamHeaders['x-self']).toBe('1');
    expect(rc.cluster).toBe(clusters.get('shop/reviews'));
  });

  it('marks a gRPC service upstream as HTTP/2 and a plain one as HTTP/1.1', async () => {
    const grpc = await run({ authority: { host: '10.96.0.14', port: 80 } });
    expect(grpc.next.calls[0]!.h2Upstream).toBe(true);
    const plain = await run({ url: '/split' });
    expect(plain.next.calls[0]!.h2Upstream).toBe(false);
  });
});

describe('rewrite filter: weighted split', () => {
  it('picks backends by weight (90/10)', async () => {
    const random = vi.spyOn(Math, 'random');
    random.mockReturnValue(0.89);
    expect((await run({ url: '/split' })).next.calls[0]!.backend).toBe('shop/reviews-v1');
    random.mockReturnValue(0.91);
    expect((await run({ url: '/split' })).next.calls[0]!.backend).toBe('shop/reviews-v2');
  });
});

describe('rewrite filter: unknown backends', () => {
  it('answers NO_CLUSTER when the route names a service the waypoint does not know', async () => {
    const snapshot = snapshotOf({
      services,
      httpRoutes: [httpRoute('ghost', 'reviews', [{ backendRefs: [{ name: 'ghost', port: 80 }] }])],
    });
    const { o, next } = await run({ url: '/' }, clustersOf(snapshot), snapshot);
    expect(o).toEqual(failure('NO_CLUSTER'));
    expect(next.calls).toHaveLength(0);
  });

  it('answers NO_CLUSTER when the backend has no cluster', async () => {
    const without = new Map(clusters);
    without.delete('shop/reviews-v1');
    const { o, next } = await run({ url: '/full' }, without);
    expect(o).toEqual(failure('NO_CLUSTER'));
    expect(next.calls).toHaveLength(0);
  });
});
