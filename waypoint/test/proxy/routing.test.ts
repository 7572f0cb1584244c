// Routing through the waypoint over real loopback sockets: splits, matches, filters, mirroring.
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, send, service, startBackend, startWaypoint, type TestWaypoint } from '../helpers.js';

const VIP = '10.96.0.10';
let v1: Backend;
let v2: Backend;
let mirror: Backend;
let tw: TestWaypoint;

const parent = { group: '', kind: 'Service', name: 'reviews', port: 80 };
const route = (name: string, rules: unknown[]) => ({
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop', creationTimestamp: '2026-01-01T00:00:00Z' },
  spec: { parentRefs: [parent], rules },
});

beforeAll(async () => {
  v1 = await startBackend('reviews-v1');
  v2 = await startBackend('reviews-v2');
  mirror = await startBackend('reviews-mirror');
  tw = await startWaypoint(
    {
      services: [
        service('reviews', VIP, [v1]),
        service('reviews-v1', '10.96.0.11', [v1]),
        service('reviews-v2', '10.96.0.12', [v2]),
        service('reviews-mirror', '10.96.0.13', [mirror]),
      ],
      httpRoutes: [
        route('split', [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/split' } }],
            backendRefs: [
              { name: 'reviews-v1', port: 80, weight: 90 },
              { name: 'reviews-v2', port: 80, weight: 10 },
              { name: 'reviews-mirror', port: 80, weight: 0 },
            ],
          },
          {
            matches: [
              {
                path: { type: 'PathPrefix', value: '/split' },
                headers: [{ name: 'x-user', value: 'jason' }],
              },
            ],
            backendRefs: [{ name: 'reviews-v2', port: 80 }],
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
              {
                type: 'ResponseHeaderModifier',
                responseHeaderModifier: { set: [{ name: 'x-resp', value: 'set' }], remove: ['x-instance'] },
              },
            ],
            backendRefs: [{ name: 'reviews-v1', port: 80 }],
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
            matches: [{ path: { type: 'PathPrefix', value: '/mirrored' } }],
            filters: [
              { type: 'RequestMirror', requestMirror: { backendRef: { name: 'reviews-mirror', port: 80 } } },
            ],
            backendRefs: [{ name: 'reviews-v1', port: 80 }],
          },
        ]),
      ],
    },
    { host: VIP, port: 80 },
  );
});

afterAll(async () => {
  await tw.close();
  await Promise.all([v1.close(), v2.close(), mirror.close()]);
});

describe('header matches', () => {
  it('routes a request with the matching header to v2 only', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await send(tw.pool, '/split/item', { headers: { 'x-user': 'jason' } });
      expect(r.json().instance).toBe('reviews-v2');
    }
  });
});

describe('filters', () => {
  it('rewrites path prefix and host, and modifies request and response headers', async () => {
    const r = await send(tw.pool, '/old/thing?q=1', {
      headers: { 'x-add': 'one', 'x-drop': 'gone', 'x-set': 'client' },
    });
    expect(r.status).toBe(200);
    const seen = r.json();
    expect(seen.url).toBe('/new/thing?q=1');
    expect(seen.headers.host).toBe('new.internal');
    expect(seen.headers['x-set']).toBe('yes');
    expect(seen.headers['x-add']).toBe('one,two');
    expect(seen.headers['x-drop']).toBeUndefined();
    expect(r.headers['x-resp']).toBe('set');
    expect(r.headers['x-instance']).toBeUndefined();
  });

  it('replaces the full path', async () => {
    const r = await send(tw.pool, '/full');
    expect(r.json().url).toBe('/replaced');
  });

  it('redirects without calling any backend', async () => {
    const before = v1.requests.length + v2.requests.length;
    const r = await send(tw.pool, '/moved/cart?x=1');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('https://shop.example.com/store/cart?x=1');
    expect(v1.requests.length + v2.requests.length).toBe(before);
  });

  it('mirrors requests (body included) while the client sees only the primary', async () => {
    const before = mirror.requests.length;
    for (let i = 0; i < 5; i++) {
      const r = await send(tw.pool, `/mirrored/${i}`, { method: 'POST', body: `payload-${i}` });
      expect(r.json().instance).toBe('reviews-v1');
      expect(r.json().body).toBe(`payload-${i}`);
    }
    await expect.poll(() => mirror.requests.length - before, { timeout: 3000 }).toBe(5);
    const copies = mirror.requests.slice(before);
    expect(copies.map((c) => c.body).sort()).toEqual([
      'payload-0',
      'payload-1',
      'payload-2',
      'payload-3',
      'payload-4',
    ]);
    expect(copies[0]!.headers.host).toBe('reviews.shop.svc.cluster.local-shadow');
  });
});

describe('defaults', () => {
  it("sends requests no route matches to the service's own endpoints", async () => {
    const r = await send(tw.pool, '/nothing-matches');
    expect(r.status).toBe(200);
    expect(r.json().instance).toBe('reviews-v1');
  });

  it('streams large request bodies intact', async () => {
    const big = 'x'.repeat(3 << 20);
    const r = await send(tw.pool, '/nothing-matches', { method: 'PUT', body: big });
    expect(r.json().body.length).toBe(big.length);
  });

  it('answers 404 NR for an address it does not serve', async () => {
    const other = await tw.listen({ host: '10.96.9.9', port: 80 });
    const r = await send(other.pool, '/', { headers: { host: 'unknown.example' } });
    expect(r.status).toBe(404);
  });
});

describe('HTTP/2 clients', () => {
  it('routes plain HTTP/2 (prior knowledge) requests to HTTP/1.1 backends', async () => {
    const session = http2.connect(tw.origin);
    session.on('error', () => {});
    const get = (path: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; body: string; headers: http2.IncomingHttpHeaders }>((resolve, reject) => {
        const st = session.request({
          ':path': path,
          ':authority': 'reviews.shop.svc.cluster.local',
          ...headers,
        });
        let body = '';
        let h: http2.IncomingHttpHeaders = {};
        st.on('response', (r) => {
          h = r;
        });
        st.on('data', (c: Buffer) => {
          body += c.toString();
        });
        st.on('end', () => resolve({ status: Number(h[':status']), body, headers: h }));
        st.on('error', reject);
      });
    const a = await get('/split/x', { 'x-user': 'jason' });
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body).instance).toBe('reviews-v2');
    const b = await get('/old/y');
    expect(JSON.parse(b.body).url).toBe('/new/y');
    expect(b.headers['x-resp']).toBe('set');
    session.close();
  });
});
