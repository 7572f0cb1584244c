import { createConfigState, translateObject } from '@hypha/shared/config';
import { describe, expect, it } from 'vitest';
import { WaypointGuard } from '../../src/agent/waypoint-guard.js';

const pod = (
  name: string,
  ip: string,
  labels: Record<string, string>,
  extra: Record<string, string> = {},
) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { ...labels, ...extra } },
  spec: { nodeName: 'n1', serviceAccountName: name },
  status: { podIP: ip },
});
const service = (name: string, app: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop', labels },
  spec: { clusterIP: `10.96.0.${name.length}`, selector: { app }, ports: [{ port: 80, targetPort: 8080 }] },
});
const gateway = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'wp', namespace: 'shop' },
  spec: { gatewayClassName: 'hypha-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
};

function stateOf(raw: unknown[]) {
  const state = createConfigState();
  const objects = raw.map((r) => {
    const t = translateObject(r, { source: 'test' });
    if (t.status !== 'ok') throw new Error(JSON.stringify(t));
    return t.object;
  });
  state.applySnapshot([
    ...objects,
    ...[
      translateObject(
        {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
        },
        { source: 'test' },
      ),
    ].map((t) => (t.status === 'ok' ? t.object : (undefined as never))),
  ]);
  return state;
}

describe('WaypointGuard', () => {
  it('guards endpoints of a bound service with the waypoint identity, and leaves others alone', () => {
    const state = stateOf([
      gateway,
      service('reviews', 'reviews', { 'hypha.dev/use-waypoint': 'wp' }),
      service('ratings', 'ratings'),
      pod('reviews-1', '10.1.0.2', { app: 'reviews' }),
      pod('ratings-1', '10.1.0.3', { app: 'ratings' }),
    ]);
    const guard = new WaypointGuard();
    guard.rebuild(state);
    const reviews = state.findWorkloadByIp('10.1.0.2')!;
    const ratings = state.findWorkloadByIp('10.1.0.3')!;
    expect([...guard.find(reviews.uid)!.allowed]).toEqual(['spiffe://cluster.local/ns/shop/sa/wp']);
    expect(guard.find(reviews.uid)!.waypoints).toEqual(['shop/wp']);
    expect(guard.find(ratings.uid)).toBeUndefined();
  });

  it('a binding to a waypoint that does not exist allows nobody (fail closed)', () => {
    const state = stateOf([
      service('reviews', 'reviews', { 'hypha.dev/use-waypoint': 'gone' }),
      pod('reviews-1', '10.1.0.2', { app: 'reviews' }),
    ]);
    const guard = new WaypointGuard();
    guard.rebuild(state);
    const entry = guard.find(state.findWorkloadByIp('10.1.0.2')!.uid)!;
    expect(entry.allowed.size).toBe(0);
    expect(entry.waypoints).toEqual(['shop/gone']);
  });
});
