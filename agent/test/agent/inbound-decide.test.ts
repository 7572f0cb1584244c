// decideInbound: the admission decision both the data path (Inbound.admit) and `hypha policy
// explain` take, in its order: STRICT mTLS, waypoint-only, then L4 policy.
import { createConfigState, translateObject } from '@hypha/shared/config';
import { SpiffeId } from '@hypha/shared/identity';
import { describe, expect, it } from 'vitest';
import { decideInbound } from '../../src/agent/inbound.js';
import { WaypointGuard } from '../../src/agent/waypoint-guard.js';

const ns = (labels: Record<string, string>) => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient', ...labels } },
});
const pod = (name: string, ip: string, labels: Record<string, string>) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels },
  spec: { nodeName: 'n1', serviceAccountName: name },
  status: { podIP: ip },
});
const policy = (name: string, action: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'db' } }, action, ...spec },
});
const gateway = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'wp', namespace: 'shop', labels: { 'hypha.dev/waypoint-for': 'all' } },
  spec: { gatewayClassName: 'hypha-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
};

function setup(raw: unknown[]) {
  const state = createConfigState();
  state.applySnapshot(
    raw.map((r) => {
      const t = translateObject(r, { source: 'test' });
      if (t.status !== 'ok') throw new Error(JSON.stringify(t));
      return t.object;
    }),
  );
  const guard = new WaypointGuard();
  guard.rebuild(state);
  const db = state.findWorkloadByName('shop', 'db')!;
  return { state, guard, db };
}

const api = SpiffeId.of('cluster.local', 'shop', 'api');
const web = SpiffeId.of('cluster.local', 'shop', 'web');

describe('decideInbound', () => {
  it('STRICT refuses plaintext before any policy, and admits mTLS peers', () => {
    const { state, guard, db } = setup([
      ns({ 'hypha.dev/mtls-mode': 'strict' }),
      pod('db', '10.1.0.2', { app: 'db' }),
    ]);
    const plain = decideInbound(state, db, { port: 5432, peer: undefined, sourceIp: '10.9.0.1' }, guard);
    expect(plain).toMatchObject({ ok: false, kind: 'strict_mtls', policy: undefined, decision: undefined });
    expect(decideInbound(state, db, { port: 5432, peer: api, sourceIp: '10.1.0.3' }, guard).ok).toBe(true);
  });

  it('PERMISSIVE admits plaintext subject to policy', () => {
    const { state, guard, db } = setup([
      ns({}),
      pod('db', '10.1.0.2', { app: 'db' }),
      policy('no-outside', 'DENY', { rules: [{ from: [{ source: { ipBlocks: ['10.9.0.0/16'] } }] }] }),
    ]);
    expect(decideInbound(state, db, { port: 5432, peer: undefined, sourceIp: '10.8.0.1' }, guard).ok).toBe(
      true,
    );
    expect(
      decideInbound(state, db, { port: 5432, peer: undefined, sourceIp: '10.9.0.1' }, guard),
    ).toMatchObject({
      ok: false,
      kind: 'deny_policy',
      policy: 'shop/no-outside',
    });
  });

  it('names the kind of each policy denial: DENY match, no ALLOW match, L7 fail-closed', () => {
    const { state, guard, db } = setup([
      ns({}),
      pod('db', '10.1.0.2', { app: 'db' }),
      policy('api-only', 'ALLOW', {
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/api'] } }] }],
      }),
    ]);
    expect(decideInbound(state, db, { port: 5432, peer: api, sourceIp: '10.1.0.3' }, guard)).toMatchObject({
      ok: true,
      decision: { policy: { namespace: 'shop', name: 'api-only' }, rule: 0 },
    });
    const other = decideInbound(state, db, { port: 5432, peer: web, sourceIp: '10.1.0.4' }, guard);
    expect(other).toMatchObject({ ok: false, kind: 'no_allow_match', policy: undefined });
    expect(other.ok ? '' : other.reason).toMatch(/shop\/api-only/);

    const l7 = setup([
      ns({}),
      pod('db', '10.1.0.2', { app: 'db' }),
      policy('gets', 'ALLOW', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
    ]);
    expect(
      decideInbound(l7.state, l7.db, { port: 5432, peer: api, sourceIp: '10.1.0.3' }, l7.guard),
    ).toMatchObject({
      ok: false,
      kind: 'fail_closed',
      policy: 'shop/gets',
    });
  });

  it('a pod behind a waypoint admits only the waypoint identity; a missing waypoint admits nobody', () => {
    const bound = { app: 'db', 'hypha.dev/use-waypoint': 'wp' };
    const { state, guard, db } = setup([ns({}), gateway, pod('db', '10.1.0.2', bound)]);
    const wp = SpiffeId.of('cluster.local', 'shop', 'wp');
    expect(decideInbound(state, db, { port: 5432, peer: wp, sourceIp: '10.1.0.9' }, guard).ok).toBe(true);
    const direct = decideInbound(state, db, { port: 5432, peer: api, sourceIp: '10.1.0.3' }, guard);
    expect(direct).toMatchObject({ ok: false, kind: 'waypoint_only' });
    expect(direct.ok ? '' : direct.reason).toMatch(
      /only from its waypoint shop\/wp, not from spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api/,
    );
    expect(decideInbound(state, db, { port: 5432, peer: undefined, sourceIp: '10.9.0.1' }, guard).ok).toBe(
      false,
    );

    const gone = setup([ns({}), pod('db', '10.1.0.2', bound)]);
    const r = decideInbound(gone.state, gone.db, { port: 5432, peer: wp, sourceIp: '10.1.0.9' }, gone.guard);
    expect(r).toMatchObject({ ok: false, kind: 'waypoint_only' });
    expect(r.ok ? '' : r.reason).toMatch(/does not exist: refused \(fail closed\)/);
  });
});
