// findEndpointCandidates: which addresses a connection to a service VIP may be tunneled to. On a
// dual-stack service an IPv6 VIP is balanced over the endpoints' IPv6 addresses and an IPv4 VIP
// over their IPv4 ones, whether the endpoints come from the selector or from EndpointSlices of
// both families; an endpoint without an address of the VIP's family serves only when none has one.
import { createConfigState, translateObject } from '@hypha/shared/config';
import { describe, expect, it } from 'vitest';
import { findEndpointCandidates } from '../../src/agent/outbound.js';

const ns = {
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
};
const pod = (name: string, ips: string[], ready = true) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { app: 'db' } },
  spec: { nodeName: 'n1', serviceAccountName: 'db' },
  status: {
    podIP: ips[0],
    podIPs: ips.map((ip) => ({ ip })),
    conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
  },
});
const service = (selector: Record<string, string> | undefined) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'db', namespace: 'shop' },
  spec: {
    clusterIP: '10.96.0.1',
    clusterIPs: ['10.96.0.1', 'fd00:96::1'],
    ...(selector ? { selector } : {}),
    ports: [{ name: 'sql', port: 80, targetPort: 8080 }],
  },
});
const slice = (family: 'IPv4' | 'IPv6', endpoints: [string, string][]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: {
    name: `db-${family.toLowerCase()}`,
    namespace: 'shop',
    labels: { 'kubernetes.io/service-name': 'db' },
  },
  addressType: family,
  endpoints: endpoints.map(([address, podName]) => ({
    addresses: [address],
    conditions: { ready: true },
    targetRef: { kind: 'Pod', name: podName },
  })),
  ports: [{ name: 'sql', port: 8080 }],
});

function setup(raw: unknown[]) {
  const state = createConfigState();
  state.applySnapshot(
    raw.map((r) => {
      const t = translateObject(r, { source: 'test' });
      if (t.status !== 'ok') throw new Error(JSON.stringify(t));
      return t.object;
    }),
  );
  const svc = state.findServiceByVip('fd00:96::1', 80);
  if (svc === undefined) throw new Error('service not found by its IPv6 VIP');
  return { state, svc };
}

const ipsOf = (c: { ip: string }[]) => c.map((x) => x.ip).sort();

describe('findEndpointCandidates', () => {
  it('balances an IPv6 VIP over the IPv6 addresses and an IPv4 VIP over the IPv4 ones (selector)', () => {
    const { state, svc } = setup([
      ns,
      pod('a', ['10.1.0.1', 'fd00:1::1']),
      pod('b', ['10.1.0.2', 'fd00:1::2']),
      pod('v4only', ['10.1.0.3']),
      pod('down', ['10.1.0.4', 'fd00:1::4'], false),
      service({ app: 'db' }),
    ]);
    expect(state.findServiceByVip('10.96.0.1', 80)).toBe(svc);
    const v6 = findEndpointCandidates(state, svc, 80, 6);
    expect(ipsOf(v6)).toEqual(['fd00:1::1', 'fd00:1::2']);
    expect(v6.every((c) => c.targetPort === 8080 && c.workload?.name !== undefined)).toBe(true);
    expect(ipsOf(findEndpointCandidates(state, svc, 80, 4))).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3']);
    expect(findEndpointCandidates(state, svc, 81, 6)).toEqual([]);
  });

  it('merges EndpointSlices of both families: one candidate per pod, at the VIP family', () => {
    const { state, svc } = setup([
      ns,
      pod('a', ['10.1.0.1', 'fd00:1::1']),
      pod('b', ['10.1.0.2', 'fd00:1::2']),
      service(undefined),
      slice('IPv4', [
        ['10.1.0.1', 'a'],
        ['10.1.0.2', 'b'],
      ]),
      slice('IPv6', [
        ['fd00:1::1', 'a'],
        ['fd00:1::2', 'b'],
      ]),
    ]);
    const v6 = findEndpointCandidates(state, svc, 80, 6);
    expect(ipsOf(v6)).toEqual(['fd00:1::1', 'fd00:1::2']);
    expect(v6.map((c) => c.workload?.name).sort()).toEqual(['a', 'b']);
    expect(ipsOf(findEndpointCandidates(state, svc, 80, 4))).toEqual(['10.1.0.1', '10.1.0.2']);
  });

  it('serves an IPv6 VIP from IPv4-only endpoints only when no endpoint has IPv6', () => {
    const { state, svc } = setup([ns, pod('v4only', ['10.1.0.3']), service({ app: 'db' })]);
    expect(ipsOf(findEndpointCandidates(state, svc, 80, 6))).toEqual(['10.1.0.3']);
  });
});
