// computeRouteStatus: what `kubectl get httproute -o yaml` would show for routes attached to a
// waypoint, computed from the config state (no API server).
import { type ConfigState, createConfigState, translateObject } from '@hypha/shared/config';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  computeRouteStatus,
  type ObservedRoute,
  type RouteCondition,
  type RouteParentStatus,
  type RouteStatusResult,
} from '../../src/index.js';

const WAYPOINT = { namespace: 'shop', name: 'shop-waypoint' };
const T0 = new Date('2026-01-01T10:00:00.000Z');
const T1 = new Date('2026-01-01T11:30:00.000Z');

let state: ConfigState;

function put(raw: Record<string, unknown>): void {
  const r = translateObject(raw, { source: 'test' });
  if (r.status !== 'ok') throw new Error(`fixture rejected: ${JSON.stringify(r)}`);
  state.upsert(r.object);
}

function service(ns: string, name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns, labels },
    spec: {
      clusterIP: `10.96.0.${10 + Math.floor(Math.random() * 200)}`,
      selector: { app: name },
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    },
  };
}

function httpRoute(
  ns: string,
  name: string,
  parentRefs: Record<string, unknown>[],
  backends: Record<string, unknown>[] = [{ name: 'echo', port: 80 }],
  extraRule: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns },
    spec: { parentRefs, rules: [{ backendRefs: backends, ...extraRule }] },
  };
}

function only(results: RouteStatusResult[], name: string): RouteStatusResult {
  const found = results.filter((r) => r.name === name);
  expect(found).toHaveLength(1);
  return found[0]!;
}

function cond(p: RouteParentStatus | undefined, type: string): RouteCondition {
  const c = p?.conditions.find((x) => x.type === type);
  if (c === undefined) throw new Error(`no ${type} condition in ${JSON.stringify(p)}`);
  return c;
}

beforeEach(() => {
  state = createConfigState();
  put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  put({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'shop-waypoint', namespace: 'shop' },
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  });
  // echo is bound to the waypoint (GAMMA parent); other-svc is bound to a different waypoint.
  put(service('shop', 'echo', { 'hypha.dev/use-waypoint': 'shop-waypoint' }));
  put(service('shop', 'other-svc', { 'hypha.dev/use-waypoint': 'other-waypoint' }));
});

describe('computeRouteStatus', () => {
  it('accepts a route attached to the waypoint Gateway, with resolved backends', () => {
    put(httpRoute('shop', 'to-gateway', [{ name: 'shop-waypoint' }]));
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'to-gateway');
    expect(r.kind).toBe('HTTPRoute');
    expect(r.changed).toBe(true);
    expect(r.parents).toEqual([
      {
        parentRef: { name: 'shop-waypoint' },
        controllerName: 'hypha.dev/waypoint',
        conditions: [
          {
            type: 'Accepted',
            status: 'True',
            reason: 'Accepted',
            message: 'attached to waypoint shop/shop-waypoint',
            lastTransitionTime: '2026-01-01T10:00:00Z',
          },
          {
            type: 'ResolvedRefs',
            status: 'True',
            reason: 'ResolvedRefs',
            message: 'all backend references resolved',
            lastTransitionTime: '2026-01-01T10:00:00Z',
          },
        ],
      },
    ]);
  });

  it('accepts a GAMMA route whose parent Service is bound to the waypoint, and stamps the generation', () => {
    put(httpRoute('shop', 'to-service', [{ group: '', kind: 'Service', name: 'echo', port: 80 }]));
    const r = only(
      computeRouteStatus(state, WAYPOINT, 'example.com/ctl', {
        now: T0,
        observed: () => ({ generation: 4, parents: [] }),
      }),
      'to-service',
    );
    expect(r.parents).toHaveLength(1);
    expect(r.parents[0]!.parentRef).toEqual({ group: '', kind: 'Service', name: 'echo', port: 80 });
    expect(r.parents[0]!.controllerName).toBe('example.com/ctl');
    expect(cond(r.parents[0], 'Accepted')).toMatchObject({ status: 'True', observedGeneration: 4 });
    expect(cond(r.parents[0], 'ResolvedRefs')).toMatchObject({ status: 'True', observedGeneration: 4 });
  });

  it('reports a missing backend as ResolvedRefs False/BackendNotFound naming the Service', () => {
    put(
      httpRoute(
        'shop',
        'split',
        [{ name: 'shop-waypoint' }],
        [
          { name: 'echo', port: 80, weight: 90 },
          { name: 'echo-v2', port: 80, weight: 10 },
        ],
      ),
    );
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'split');
    expect(cond(r.parents[0], 'Accepted').status).toBe('True');
    const refs = cond(r.parents[0], 'ResolvedRefs');
    expect(refs.status).toBe('False');
    expect(refs.reason).toBe('BackendNotFound');
    expect(refs.message).toContain('Service shop/echo-v2 not found');
    expect(refs.message).toContain('spec.rules[0].backendRefs[1]');
    expect(refs.message).not.toContain('shop/echo ');
  });

  it('reports a non-Service backend as InvalidKind, and the route the engine drops as not Accepted', () => {
    put(
      httpRoute(
        'shop',
        'bucket',
        [{ name: 'shop-waypoint' }],
        [{ group: 'example.com', kind: 'Bucket', name: 'b' }],
      ),
    );
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'bucket');
    expect(cond(r.parents[0], 'ResolvedRefs')).toMatchObject({ status: 'False', reason: 'InvalidKind' });
    expect(cond(r.parents[0], 'ResolvedRefs').message).toContain('example.com/Bucket b');
    expect(cond(r.parents[0], 'Accepted')).toMatchObject({ status: 'False', reason: 'UnsupportedValue' });
  });

  it('reports an object the engine rejects as Accepted False/UnsupportedValue with the field', () => {
    put(
      httpRoute('shop', 'bad-path', [{ name: 'shop-waypoint' }], [{ name: 'echo', port: 80 }], {
        matches: [{ path: { type: 'PathPrefix', value: 'no-slash' } }],
      }),
    );
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'bad-path');
    const accepted = cond(r.parents[0], 'Accepted');
    expect(accepted).toMatchObject({ status: 'False', reason: 'UnsupportedValue' });
    expect(accepted.message).toContain('spec.rules[0].matches[0].path.value');
    expect(accepted.message).toContain('must start with "/"');
  });

  it('rejects a listener or port the parent does not have as NoMatchingParent', () => {
    put(httpRoute('shop', 'wrong-section', [{ name: 'shop-waypoint', sectionName: 'web' }]));
    put(httpRoute('shop', 'wrong-port', [{ group: '', kind: 'Service', name: 'echo', port: 9090 }]));
    const results = computeRouteStatus(state, WAYPOINT, undefined, {
      now: T0,
      listeners: [{ name: 'mesh', port: 15008 }],
    });
    const a = cond(only(results, 'wrong-section').parents[0], 'Accepted');
    expect(a).toMatchObject({ status: 'False', reason: 'NoMatchingParent' });
    expect(a.message).toContain('no listener named "web" (listeners: mesh)');
    const b = cond(only(results, 'wrong-port').parents[0], 'Accepted');
    expect(b).toMatchObject({ status: 'False', reason: 'NoMatchingParent' });
    expect(b.message).toContain('Service shop/echo has no port 9090');
  });

  it('rejects a route from another namespace on the Gateway as NotAllowedByListeners', () => {
    put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'blog' } });
    put(httpRoute('blog', 'foreign', [{ name: 'shop-waypoint', namespace: 'shop' }]));
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'foreign');
    expect(cond(r.parents[0], 'Accepted')).toMatchObject({
      status: 'False',
      reason: 'NotAllowedByListeners',
    });
  });

  it('ignores parentRefs to another Gateway or to Services bound elsewhere', () => {
    put(
      httpRoute('shop', 'elsewhere', [
        { name: 'other-waypoint' },
        { group: '', kind: 'Service', name: 'other-svc' },
      ]),
    );
    put(
      httpRoute('shop', 'mixed', [
        { name: 'other-waypoint' },
        { name: 'shop-waypoint' },
        { group: '', kind: 'Service', name: 'other-svc' },
      ]),
    );
    const results = computeRouteStatus(state, WAYPOINT, undefined, { now: T0 });
    expect(results.map((r) => r.name)).toEqual(['mixed']);
    expect(results[0]!.parents.map((p) => p.parentRef)).toEqual([{ name: 'shop-waypoint' }]);
  });

  it("keeps other controllers' entries in place and replaces only its own", () => {
    put(httpRoute('shop', 'shared', [{ name: 'istio-gw', namespace: 'istio' }, { name: 'shop-waypoint' }]));
    const foreign: RouteParentStatus = {
      parentRef: { name: 'istio-gw', namespace: 'istio' },
      controllerName: 'istio.io/gateway-controller',
      conditions: [
        {
          type: 'Accepted',
          status: 'True',
          reason: 'Accepted',
          message: 'Route was valid',
          observedGeneration: 1,
          lastTransitionTime: '2025-05-05T05:05:05Z',
        },
      ],
    };
    // An entry of ours for a parent that no longer attaches (the route used to name Service echo).
    const stale: RouteParentStatus = {
      parentRef: { group: '', kind: 'Service', name: 'echo' },
      controllerName: 'hypha.dev/waypoint',
      conditions: [],
    };
    // Ours for a Service bound to another waypoint of the same controller: that waypoint's to write.
    const sibling: RouteParentStatus = {
      parentRef: { group: '', kind: 'Service', name: 'other-svc' },
      controllerName: 'hypha.dev/waypoint',
      conditions: [],
    };
    const observed: ObservedRoute = { generation: 2, parents: [foreign, stale, sibling] };
    const r = only(
      computeRouteStatus(state, WAYPOINT, undefined, { now: T0, observed: () => observed }),
      'shared',
    );
    expect(r.parents.map((p) => [p.controllerName, p.parentRef.name])).toEqual([
      ['istio.io/gateway-controller', 'istio-gw'],
      ['hypha.dev/waypoint', 'other-svc'],
      ['hypha.dev/waypoint', 'shop-waypoint'],
    ]);
    expect(r.parents[0]).toEqual(foreign);
    expect(r.parents[1]).toEqual(sibling);
  });

  it('keeps lastTransitionTime while a condition holds and moves it on a flip', () => {
    put(httpRoute('shop', 'r', [{ name: 'shop-waypoint' }]));
    const first = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'r');
    const observed = (parents: RouteParentStatus[]) => () => ({ generation: 1, parents });

    // Same verdicts an hour later: times kept; only observedGeneration was added.
    const again = only(
      computeRouteStatus(state, WAYPOINT, undefined, { now: T1, observed: observed(first.parents) }),
      'r',
    );
    expect(cond(again.parents[0], 'Accepted').lastTransitionTime).toBe('2026-01-01T10:00:00Z');
    expect(cond(again.parents[0], 'ResolvedRefs').lastTransitionTime).toBe('2026-01-01T10:00:00Z');
    const settled = only(
      computeRouteStatus(state, WAYPOINT, undefined, { now: T1, observed: observed(again.parents) }),
      'r',
    );
    expect(settled.changed).toBe(false);

    // The backend disappears: ResolvedRefs flips (new time), Accepted does not (old time).
    state.remove({ kind: 'Service', namespace: 'shop', name: 'echo' });
    const broken = only(
      computeRouteStatus(state, WAYPOINT, undefined, { now: T1, observed: observed(again.parents) }),
      'r',
    );
    expect(broken.changed).toBe(true);
    expect(cond(broken.parents[0], 'ResolvedRefs')).toMatchObject({
      status: 'False',
      reason: 'BackendNotFound',
      lastTransitionTime: '2026-01-01T11:30:00Z',
    });
    expect(cond(broken.parents[0], 'Accepted').lastTransitionTime).toBe('2026-01-01T10:00:00Z');
  });

  it('reports GRPCRoutes too', () => {
    put({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GRPCRoute',
      metadata: { name: 'grpc', namespace: 'shop' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'echo' }],
        rules: [{ backendRefs: [{ name: 'missing-grpc', port: 9000 }] }],
      },
    });
    const r = only(computeRouteStatus(state, WAYPOINT, undefined, { now: T0 }), 'grpc');
    expect(r.kind).toBe('GRPCRoute');
    expect(cond(r.parents[0], 'ResolvedRefs')).toMatchObject({ status: 'False', reason: 'BackendNotFound' });
  });
});
