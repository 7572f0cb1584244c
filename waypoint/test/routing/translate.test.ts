import { describe, expect, it } from 'vitest';
import { buildSnapshot, findRoute, type RequestView, type WaypointConfigInput } from '../../src/index.js';

const svc = (name: string, vip: string) => ({
  name,
  namespace: 'shop',
  vips: [vip],
  ports: [{ port: 80, targetPort: 8080, name: 'http' }],
  endpoints: [{ ip: '10.1.0.1' }],
});

function config(httpRoutes: unknown[], grpcRoutes: unknown[] = []): WaypointConfigInput {
  return {
    gateway: { name: 'waypoint', namespace: 'shop' },
    services: [svc('reviews', '10.96.0.10'), svc('reviews-v2', '10.96.0.11')],
    httpRoutes,
    grpcRoutes,
  };
}

const route = (name: string, rules: unknown[], extra: Record<string, unknown> = {}) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop', creationTimestamp: extra.created ?? '2026-01-01T00:00:00Z' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 80 }],
    rules,
    ...(extra.spec as object),
  },
});

const req = (path: string, more: Partial<RequestView> = {}): RequestView => ({
  method: 'GET',
  path,
  query: '',
  host: 'reviews',
  headers: {},
  port: 80,
  ...more,
});

function lookup(cfg: WaypointConfigInput, r: RequestView): string | undefined {
  const { snapshot, errors } = buildSnapshot(cfg);
  expect(errors.map((e) => e.message)).toEqual([]);
  const e = findRoute(snapshot.routes, 'shop/reviews', r);
  return e === undefined ? undefined : `${e.routeName}#${e.ruleIndex}`;
}

describe('HTTPRoute precedence', () => {
  const rules = [
    { matches: [{ path: { type: 'PathPrefix', value: '/' } }] },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' } }] },
    { matches: [{ path: { type: 'PathPrefix', value: '/api/v1' } }] },
    { matches: [{ path: { type: 'Exact', value: '/api/v1/x' } }] },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }] },
    {
      matches: [
        { path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'X-User', value: 'jason' }] },
      ],
    },
    {
      matches: [
        {
          path: { type: 'PathPrefix', value: '/api' },
          headers: [
            { name: 'x-user', value: 'jason' },
            { name: 'x-b', value: '1' },
          ],
        },
      ],
    },
    { matches: [{ path: { type: 'PathPrefix', value: '/api' }, queryParams: [{ name: 'v', value: '2' }] }] },
  ];
  const cfg = config([route('r', rules)]);

  it('prefers an exact path, then the longest prefix', () => {
    expect(lookup(cfg, req('/api/v1/x'))).toBe('r#3');
    expect(lookup(cfg, req('/api/v1/y'))).toBe('r#2');
    expect(lookup(cfg, req('/api/other'))).toBe('r#1');
    expect(lookup(cfg, req('/elsewhere'))).toBe('r#0');
  });

  it('matches path prefixes element by element', () => {
    expect(lookup(cfg, req('/apix'))).toBe('r#0');
    expect(lookup(cfg, req('/api/'))).toBe('r#1');
  });

  it('ranks method over headers, more headers over fewer, headers over query params', () => {
    expect(lookup(cfg, req('/api/z', { method: 'POST', headers: { 'x-user': 'jason', 'x-b': '1' } }))).toBe(
      'r#4',
    );
    expect(lookup(cfg, req('/api/z', { headers: { 'x-user': 'jason', 'x-b': '1' } }))).toBe('r#6');
    expect(lookup(cfg, req('/api/z', { headers: { 'x-user': 'jason' }, query: 'v=2' }))).toBe('r#5');
    expect(lookup(cfg, req('/api/z', { query: 'a=1&v=2' }))).toBe('r#7');
  });

  it('breaks ties by the oldest route, then by namespace/name', () => {
    const m = [{ matches: [{ path: { type: 'PathPrefix', value: '/same' } }] }];
    const older = config([
      route('b-new', m, { created: '2026-02-01T00:00:00Z' }),
      route('z-old', m, { created: '2025-01-01T00:00:00Z' }),
    ]);
    expect(lookup(older, req('/same'))).toBe('z-old#0');
    const sameAge = config([route('b', m), route('a', m)]);
    expect(lookup(sameAge, req('/same'))).toBe('a#0');
  });

  it('supports regular expressions and header regexes, anchored', () => {
    const c = config([
      route('re', [
        { matches: [{ path: { type: 'RegularExpression', value: '/items/[0-9]+' } }] },
        { matches: [{ headers: [{ type: 'RegularExpression', name: 'x-tier', value: 'gold|plat' }] }] },
      ]),
    ]);
    expect(lookup(c, req('/items/42'))).toBe('re#0');
    expect(lookup(c, req('/items/42/more'))).toBe(undefined);
    expect(lookup(c, req('/x', { headers: { 'x-tier': 'plat' } }))).toBe('re#1');
    expect(lookup(c, req('/x', { headers: { 'x-tier': 'platinum' } }))).toBe(undefined);
  });

  it('drops weight-0 backends from the split', () => {
    const { snapshot } = buildSnapshot(
      config([
        route('w', [
          {
            backendRefs: [
              { name: 'reviews', port: 80, weight: 0 },
              { name: 'reviews-v2', port: 80, weight: 5 },
            ],
          },
        ]),
      ]),
    );
    const e = findRoute(snapshot.routes, 'shop/reviews', req('/'));
    expect(e?.action.backends.map((b) => b.service)).toEqual(['shop/reviews-v2']);
    expect(e?.action.totalWeight).toBe(5);
  });

  it('reads timeouts and the Gateway API retry block', () => {
    const { snapshot } = buildSnapshot(
      config([
        route('t', [
          {
            timeouts: { request: '1m30s', backendRequest: '500ms' },
            retry: { attempts: 3, codes: [503], backoff: '10ms' },
          },
        ]),
      ]),
    );
    const a = findRoute(snapshot.routes, 'shop/reviews', req('/'))!.action;
    expect(a.requestTimeoutMs).toBe(90_000);
    expect(a.backendRequestTimeoutMs).toBe(500);
    expect(a.retry).toEqual({ attempts: 3, codes: new Set([503]), grpcCodes: new Set(), backoffMs: 10 });
  });

  it('applies routes on the waypoint Gateway by hostname, after Service routes', () => {
    const gw = {
      kind: 'HTTPRoute',
      metadata: { name: 'gw', namespace: 'shop' },
      spec: {
        parentRefs: [{ name: 'waypoint' }],
        hostnames: ['*.example.com'],
        rules: [{ matches: [{ path: { type: 'Exact', value: '/g' } }] }],
      },
    };
    const { snapshot } = buildSnapshot(config([gw]));
    expect(findRoute(snapshot.routes, 'shop/reviews', req('/g', { host: 'a.example.com' }))?.routeName).toBe(
      'gw',
    );
    expect(findRoute(snapshot.routes, 'shop/reviews', req('/g', { host: 'example.org' }))).toBeUndefined();
  });
});

describe('GRPCRoute', () => {
  it('matches service and method as the gRPC path', () => {
    const g = {
      kind: 'GRPCRoute',
      metadata: { name: 'g', namespace: 'shop' },
      spec: {
        parentRefs: [{ kind: 'Service', group: '', name: 'reviews' }],
        rules: [
          {
            matches: [{ method: { service: 'shop.Reviews', method: 'Get' } }],
            backendRefs: [{ name: 'reviews-v2', port: 80 }],
          },
          { matches: [{ method: { service: 'shop.Reviews' } }] },
        ],
      },
    };
    const { snapshot, errors } = buildSnapshot(config([], [g]));
    expect(errors).toEqual([]);
    expect(
      findRoute(snapshot.routes, 'shop/reviews', req('/shop.Reviews/Get', { method: 'POST' }))?.ruleIndex,
    ).toBe(0);
    expect(
      findRoute(snapshot.routes, 'shop/reviews', req('/shop.Reviews/List', { method: 'POST' }))?.ruleIndex,
    ).toBe(1);
    expect(
      findRoute(snapshot.routes, 'shop/reviews', req('/shop.Other/Get', { method: 'POST' })),
    ).toBeUndefined();
  });
});

describe('validation', () => {
  it('rejects a bad object with its name and the field, and keeps the others', () => {
    const bad = route('bad', [{ matches: [{ path: { type: 'Exact', value: 'no-slash' } }] }]);
    const badRegex = route('bad-re', [
      { matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: '(' }] }] },
    ]);
    const badDuration = route('bad-t', [{ timeouts: { request: 'ten seconds' } }]);
    const good = route('good', [{ matches: [{ path: { type: 'Exact', value: '/ok' } }] }]);
    const { snapshot, errors } = buildSnapshot(config([bad, badRegex, badDuration, good]));
    expect(errors.map((e) => [e.objectName, e.field])).toEqual([
      ['bad', 'spec.rules[0].matches[0].path.value'],
      ['bad-re', 'spec.rules[0].matches[0].headers[0].value'],
      ['bad-t', 'spec.rules[0].timeouts.request'],
    ]);
    expect(errors[0]!.message).toContain('HTTPRoute shop/bad');
    expect(findRoute(snapshot.routes, 'shop/reviews', req('/ok'))?.routeName).toBe('good');
  });

  it('rejects a route with an unsupported parentRef as a whole, not only from that parentRef on', () => {
    const r = route('odd-parent', [{ matches: [{ path: { type: 'Exact', value: '/odd' } }] }], {
      spec: {
        parentRefs: [
          { group: '', kind: 'Service', name: 'reviews', port: 80 },
          { group: 'example.com', kind: 'Mesh', name: 'm' },
        ],
      },
    });
    const { snapshot, errors } = buildSnapshot(config([r]));
    expect(errors.map((e) => [e.objectName, e.field])).toEqual([['odd-parent', 'spec.parentRefs[1].kind']]);
    expect(findRoute(snapshot.routes, 'shop/reviews', req('/odd'))).toBeUndefined();
  });

  it('marks a rule whose backend Service is missing, and clears it when the Service appears', () => {
    const r = route('to-v3', [{ backendRefs: [{ name: 'reviews-v3', port: 80 }] }]);
    const without = buildSnapshot(config([r])).snapshot;
    expect(findRoute(without.routes, 'shop/reviews', req('/'))?.action.invalidBackends).toBe(true);
    const cfg = config([r]);
    const withV3 = buildSnapshot({ ...cfg, services: [...cfg.services, svc('reviews-v3', '10.96.0.12')] });
    expect(findRoute(withV3.snapshot.routes, 'shop/reviews', req('/'))?.action.invalidBackends).toBe(false);
  });

  it('rejects a redirect combined with a rewrite', () => {
    const r = route('both', [
      {
        filters: [
          { type: 'RequestRedirect', requestRedirect: { hostname: 'x' } },
          { type: 'URLRewrite', urlRewrite: { hostname: 'y' } },
        ],
      },
    ]);
    const { errors } = buildSnapshot(config([r]));
    expect(errors[0]?.field).toBe('spec.rules[0].filters');
  });

  it('rejects a service with a malformed VIP, naming the field', () => {
    const { errors } = buildSnapshot({
      gateway: { name: 'w', namespace: 'shop' },
      services: [{ ...svc('x', 'not-an-ip') }],
    });
    expect(errors[0]?.kind).toBe('Service');
    expect(errors[0]?.field).toBe('vips[0]');
  });
});

describe('records from the config model', () => {
  it('accepts translated route records (refs beside the spec) and AuthorizationPolicy records', () => {
    const record = {
      kind: 'HTTPRoute',
      name: 'rec',
      namespace: 'shop',
      labels: {},
      refs: [{ group: '', kind: 'Service', name: 'reviews', namespace: undefined }],
      spec: { rules: [{ matches: [{ path: { type: 'Exact', value: '/rec' } }] }] },
    };
    const ap = {
      kind: 'AuthorizationPolicy',
      name: 'deny',
      namespace: 'shop',
      labels: {},
      action: 'DENY',
      selector: undefined,
      targetRefs: [{ group: '', kind: 'Service', name: 'reviews', namespace: undefined }],
      rules: [{ to: [{ operation: { paths: ['/rec'] } }] }],
    };
    const { snapshot, errors } = buildSnapshot({ ...config([record]), authorizationPolicies: [ap] });
    expect(errors).toEqual([]);
    expect(findRoute(snapshot.routes, 'shop/reviews', req('/rec'))?.routeName).toBe('rec');
    expect(snapshot.policies.get('shop/reviews')?.deny.map((p) => p.key)).toEqual(['shop/deny']);
  });
});
