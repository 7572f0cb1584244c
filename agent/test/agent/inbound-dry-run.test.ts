// A dry-run AuthorizationPolicy at the node agent (L4): Inbound.admit lets the connection through,
// counts it in hypha_authz_dry_run_total{would="deny",layer="L4"} and logs one "would deny" line.
import type { Logger } from '@hypha/shared';
import { createConfigState, translateObject } from '@hypha/shared/config';
import { SpiffeId } from '@hypha/shared/identity';
import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import type { ConnectionTracker } from '../../src/agent/connections.js';
import { Inbound } from '../../src/agent/inbound.js';
import { PolicyMetrics } from '../../src/agent/policy-metrics.js';
import { WaypointGuard } from '../../src/agent/waypoint-guard.js';

const objects = (annotations: Record<string, string> | undefined) => [
  {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
  },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'echo', namespace: 'shop', labels: { app: 'echo' } },
    spec: { nodeName: 'n1', serviceAccountName: 'echo' },
    status: { podIP: '10.1.0.2' },
  },
  {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-web', namespace: 'shop', ...(annotations ? { annotations } : {}) },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      action: 'DENY',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }],
    },
  },
];

function setup(annotations: Record<string, string> | undefined) {
  const state = createConfigState();
  state.applySnapshot(
    objects(annotations).map((r) => {
      const t = translateObject(r, { source: 'test' });
      if (t.status !== 'ok') throw new Error(JSON.stringify(t));
      return t.object;
    }),
  );
  const waypointGuard = new WaypointGuard();
  waypointGuard.rebuild(state);
  const info = vi.fn();
  const logger = { info, warn: vi.fn(), debug: vi.fn(), child: () => logger } as unknown as Logger;
  const registry = new Registry();
  const inbound = new Inbound({
    state,
    nodeName: 'n1',
    tracker: undefined as unknown as ConnectionTracker,
    waypointGuard,
    logger,
    transparent: false,
    policyMetrics: new PolicyMetrics(registry),
  });
  return { inbound, info, registry };
}

const web = SpiffeId.of('cluster.local', 'shop', 'web');
const api = SpiffeId.of('cluster.local', 'shop', 'api');
const fromWeb = { destinationIp: '10.1.0.2', port: 8080, peer: web, sourceIp: '10.1.0.3' };

describe('Inbound.admit with a dry-run DENY policy', () => {
  it('lets the connection through, counts it and logs "would deny" with policy, source and destination', async () => {
    const { inbound, info, registry } = setup({ 'istio.io/dry-run': 'true' });
    expect(inbound.admit(fromWeb)).toMatchObject({ ok: true });
    const metric = await registry.getSingleMetricAsString('hypha_authz_dry_run_total');
    expect(metric).toContain('hypha_authz_dry_run_total{policy="shop/deny-web",would="deny",layer="L4"} 1');
    const lines = info.mock.calls.filter((c) => String(c[1]).includes('dry-run'));
    expect(lines).toEqual([
      [
        expect.objectContaining({
          policy: 'shop/deny-web',
          would: 'deny',
          rule: 0,
          enforced: 'allow',
          peer: 'spiffe://cluster.local/ns/shop/sa/web',
          src: '10.1.0.3',
          dst: 'shop/echo',
          port: 8080,
        }),
        'dry-run policy shop/deny-web would deny',
      ],
    ]);
  });

  it('reports nothing for a peer the policy would not deny, and nothing again on a recheck', async () => {
    const { inbound, info, registry } = setup({ 'hypha.dev/dry-run': 'true' });
    expect(inbound.admit({ ...fromWeb, peer: api })).toMatchObject({ ok: true });
    expect(inbound.admit(fromWeb, 'recheck')).toMatchObject({ ok: true });
    expect(info).not.toHaveBeenCalled();
    const metric = await registry.getSingleMetricAsString('hypha_authz_dry_run_total');
    expect(metric).not.toContain('shop/deny-web');
  });

  it('without the annotation the same policy denies (the control case)', () => {
    const { inbound, info } = setup(undefined);
    expect(inbound.admit(fromWeb)).toMatchObject({ ok: false, status: 401, policy: 'shop/deny-web' });
    expect(info).not.toHaveBeenCalled();
  });
});
