// buildWaypointInput + buildSnapshot as the daemon runs them on every config change: a change to
// one object among many recompiles that object only, and everything else in the snapshot is the
// object the previous snapshot held.
import { type ConfigState, createConfigState, translateObject } from '@hypha/shared/config';
import { beforeEach, describe, expect, it } from 'vitest';
import { buildWaypointInput } from '../../src/daemon/input.js';
import { buildSnapshot } from '../../src/index.js';

const N = 500;
const GATEWAY = { namespace: 'shop', name: 'waypoint' };

let state: ConfigState;

function put(raw: Record<string, unknown>): void {
  const r = translateObject(raw, { source: 'test' });
  if (r.status !== 'ok') throw new Error(`fixture rejected: ${JSON.stringify(r)}`);
  state.upsert(r.object);
}

function pod(i: number, version = 'v1'): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `svc-${i}-pod`, namespace: 'shop', labels: { app: `svc-${i}`, version } },
    spec: { nodeName: 'node-a' },
    status: { podIP: `10.244.${i >> 8}.${i & 255}` },
  };
}

function route(i: number, path = '/'): Record<string, unknown> {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: `route-${i}`, namespace: 'shop' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: `svc-${i}` }],
      rules: [
        {
          matches: [{ path: { type: 'PathPrefix', value: path }, headers: [{ name: 'x-user', value: 'a' }] }],
          backendRefs: [{ name: `svc-${i}`, port: 80 }],
        },
      ],
    },
  };
}

beforeEach(() => {
  state = createConfigState();
  const objects: Record<string, unknown>[] = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: GATEWAY,
      spec: {
        gatewayClassName: 'hypha-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    },
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'deny-admin', namespace: 'shop' },
      spec: {
        targetRefs: [{ kind: 'Service', group: '', name: 'svc-1' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/admin'] } }] }],
      },
    },
    {
      apiVersion: 'traffic.hypha.dev/v1alpha1',
      kind: 'TrafficPolicy',
      metadata: { name: 'svc-2', namespace: 'shop' },
      spec: { targetRefs: [{ kind: 'Service', name: 'svc-2' }], loadBalancer: { simple: 'LEAST_REQUEST' } },
    },
  ];
  for (let i = 0; i < N; i++) {
    objects.push(pod(i), route(i), {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${i}`, namespace: 'shop', labels: { 'hypha.dev/use-waypoint': 'waypoint' } },
      spec: {
        clusterIP: `10.96.${i >> 8}.${i & 255}`,
        selector: { app: `svc-${i}` },
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      },
    });
  }
  for (const o of objects) put(o);
});

describe('config updates are incremental', () => {
  it('compiles only the HTTPRoute that changed among 500 services and 500 routes', () => {
    const first = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(first.errors).toEqual([]);
    // 500 Services + 500 HTTPRoutes + 1 TrafficPolicy + 1 AuthorizationPolicy.
    expect(first.stats).toEqual({ compiled: 2 * N + 2, reused: 0 });

    put(route(7, '/v2'));
    const input = buildWaypointInput(state, GATEWAY);
    const second = buildSnapshot(input);
    expect(second.stats).toEqual({ compiled: 1, reused: 2 * N + 1 });

    // The new route is in force; every other compiled piece is the previous snapshot's object.
    expect(second.snapshot.routes.byService.get('shop/svc-7')![0]!.path.value).toBe('/v2');
    for (const key of ['shop/svc-0', 'shop/svc-6', 'shop/svc-8', 'shop/svc-499']) {
      expect(second.snapshot.services.get(key)).toBe(first.snapshot.services.get(key));
      expect(second.snapshot.routes.byService.get(key)![0]!.action).toBe(
        first.snapshot.routes.byService.get(key)![0]!.action,
      );
    }
    expect(second.snapshot.traffic.get('shop/svc-2')).toBe(first.snapshot.traffic.get('shop/svc-2'));
    expect(second.snapshot.policies.get('shop/svc-1')!.deny).toEqual(
      first.snapshot.policies.get('shop/svc-1')!.deny,
    );

    // Nothing changed: nothing compiled.
    expect(buildSnapshot(buildWaypointInput(state, GATEWAY)).stats).toEqual({
      compiled: 0,
      reused: 2 * N + 2,
    });
  });

  it("recompiles a Service whose endpoint's workload changed, and only that one", () => {
    const first = buildSnapshot(buildWaypointInput(state, GATEWAY));
    put(pod(3, 'v2'));
    const second = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(second.stats).toEqual({ compiled: 1, reused: 2 * N + 1 });
    expect(second.snapshot.services.get('shop/svc-3')!.endpoints[0]!.workload?.version).toBe('v2');
    expect(first.snapshot.services.get('shop/svc-3')!.endpoints[0]!.workload?.version).toBe('v1');
    expect(second.snapshot.services.get('shop/svc-4')).toBe(first.snapshot.services.get('shop/svc-4'));
  });

  it('reports a bad object on every snapshot, not only the one that compiled it', () => {
    put({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'broken', namespace: 'shop' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'svc-5' }],
        rules: [{ matches: [{ path: { type: 'RegularExpression', value: '([' } }] }],
      },
    });
    const show = (errors: readonly { kind: string; objectName: string; field: string }[]) =>
      errors.map((e) => `${e.kind} ${e.objectName} ${e.field}`);
    const first = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(show(first.errors)).toEqual(['HTTPRoute broken spec.rules[0].matches[0].path.value']);
    put(route(9, '/other'));
    const second = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(second.stats.compiled).toBe(1);
    expect(second.errors).toEqual(first.errors);
  });
});

describe('RequestAuthentication through the config model', () => {
  it('reaches the snapshot for the Service it targets, and a selector policy reaches none', () => {
    put({
      apiVersion: 'security.hypha.dev/v1',
      kind: 'RequestAuthentication',
      metadata: { name: 'jwt', namespace: 'shop' },
      spec: {
        targetRefs: [{ kind: 'Service', name: 'svc-3' }],
        jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks.json' }],
      },
    });
    put({
      apiVersion: 'security.hypha.dev/v1',
      kind: 'RequestAuthentication',
      metadata: { name: 'pods', namespace: 'shop' },
      spec: {
        selector: { matchLabels: { app: 'svc-4' } },
        jwtRules: [{ issuer: 'https://other.example', jwksUri: 'https://other.example/jwks.json' }],
      },
    });
    const { snapshot, errors } = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(errors).toEqual([]);
    expect([...snapshot.authn.keys()]).toEqual(['shop/svc-3']);
    expect(snapshot.authn.get('shop/svc-3')!.rules).toMatchObject([
      {
        policy: 'shop/jwt',
        issuer: 'https://issuer.example',
        keys: { uri: 'https://issuer.example/jwks.json' },
      },
    ]);
  });
});
