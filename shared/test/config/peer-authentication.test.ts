// PeerAuthentication: which mTLS mode applies to a workload port, and which rule set it.
import {
  type ConfigState,
  createConfigState,
  mtlsFor,
  translateObject,
  type Workload,
} from '@hypha/shared/config';
import { beforeEach, describe, expect, it } from 'vitest';
import { ns, pod, typed } from './objects.js';

function peerAuth(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  created?: string,
): Record<string, unknown> {
  return {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'PeerAuthentication',
    metadata: { namespace, name, ...(created ? { creationTimestamp: created } : {}) },
    spec,
  };
}

let state: ConfigState;
beforeEach(() => {
  state = createConfigState();
});

const cluster = (...extra: Record<string, unknown>[]) =>
  typed(
    ns('shop', { 'hypha.dev/dataplane-mode': 'ambient' }),
    ns('tools', { 'hypha.dev/dataplane-mode': 'ambient' }),
    pod('web', { namespace: 'shop', ip: '10.1.1.10', labels: { app: 'web' } }),
    pod('db', { namespace: 'shop', ip: '10.1.1.11', labels: { app: 'db' } }),
    pod('probe', { namespace: 'tools', ip: '10.1.1.12', labels: { app: 'probe' } }),
    ...extra,
  );

const web = (): Workload => state.findWorkloadByName('shop', 'web')!;
const db = (): Workload => state.findWorkloadByName('shop', 'db')!;
const probe = (): Workload => state.findWorkloadByName('tools', 'probe')!;

describe('PeerAuthentication', () => {
  it('without any rule, every port is PERMISSIVE by the mesh default', () => {
    state.applySnapshot(cluster());
    expect(mtlsFor(web(), 8080)).toEqual({ mode: 'permissive', rule: 'mesh default: PERMISSIVE' });
  });

  it('namespace-wide STRICT with one port exempt: that port PERMISSIVE, the others STRICT', () => {
    state.applySnapshot(
      cluster(
        peerAuth('shop', 'default', {
          mtls: { mode: 'STRICT' },
          portLevelMtls: { 9090: { mode: 'PERMISSIVE' } },
        }),
      ),
    );
    expect(mtlsFor(web(), 8080)).toEqual({ mode: 'strict', rule: 'PeerAuthentication shop/default: STRICT' });
    expect(mtlsFor(web(), 9090)).toEqual({
      mode: 'permissive',
      rule: 'PeerAuthentication shop/default portLevelMtls 9090: PERMISSIVE',
    });
    expect(web().mtlsMode).toBe('strict');
    // Another namespace is untouched.
    expect(mtlsFor(probe(), 8080).mode).toBe('permissive');
  });

  it('a selecting policy beats the namespace-wide one, for the pods it selects only', () => {
    state.applySnapshot(
      cluster(
        peerAuth('shop', 'default', { mtls: { mode: 'STRICT' } }),
        peerAuth('shop', 'db-legacy', {
          selector: { matchLabels: { app: 'db' } },
          mtls: { mode: 'PERMISSIVE' },
        }),
      ),
    );
    expect(mtlsFor(db(), 5432)).toEqual({
      mode: 'permissive',
      rule: 'PeerAuthentication shop/db-legacy: PERMISSIVE',
    });
    expect(mtlsFor(web(), 8080).mode).toBe('strict');
  });

  it('UNSET inherits: a selecting policy with only a port rule keeps the namespace mode elsewhere', () => {
    state.applySnapshot(
      cluster(
        ns('shop', { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/mtls-mode': 'strict' }),
        peerAuth('shop', 'web-health', {
          selector: { matchLabels: { app: 'web' } },
          mtls: { mode: 'UNSET' },
          portLevelMtls: { 8081: { mode: 'PERMISSIVE' }, 8082: { mode: 'UNSET' } },
        }),
      ),
    );
    expect(mtlsFor(web(), 8080)).toEqual({
      mode: 'strict',
      rule: 'namespace label hypha.dev/mtls-mode=strict: STRICT',
    });
    expect(mtlsFor(web(), 8081).mode).toBe('permissive');
    expect(mtlsFor(web(), 8082).mode).toBe('strict');
    expect(mtlsFor(db(), 8081).mode).toBe('strict');
  });

  it('a namespace-wide policy beats the namespace label (the label is the shorthand)', () => {
    state.applySnapshot(
      cluster(
        ns('shop', { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/mtls-mode': 'strict' }),
        peerAuth('shop', 'default', { mtls: { mode: 'PERMISSIVE' } }),
      ),
    );
    expect(mtlsFor(web(), 8080)).toEqual({
      mode: 'permissive',
      rule: 'PeerAuthentication shop/default: PERMISSIVE',
    });
  });

  it('the root namespace sets the mesh; a namespace can relax it', () => {
    state.applySnapshot(
      cluster(
        ns('hypha-system'),
        peerAuth('hypha-system', 'default', { mtls: { mode: 'STRICT' } }),
        peerAuth('tools', 'default', { mtls: { mode: 'PERMISSIVE' } }),
      ),
    );
    expect(mtlsFor(web(), 8080)).toEqual({
      mode: 'strict',
      rule: 'PeerAuthentication hypha-system/default (mesh-wide): STRICT',
    });
    expect(mtlsFor(probe(), 8080).mode).toBe('permissive');
  });

  it('competing selecting policies: the oldest wins, as in Istio', () => {
    state.applySnapshot(
      cluster(
        peerAuth(
          'shop',
          'b-new',
          { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'PERMISSIVE' } },
          '2026-02-01T00:00:00Z',
        ),
        peerAuth(
          'shop',
          'z-old',
          { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' } },
          '2026-01-01T00:00:00Z',
        ),
      ),
    );
    expect(mtlsFor(web(), 80).rule).toBe('PeerAuthentication shop/z-old: STRICT');
  });

  it('DISABLE accepts plaintext like PERMISSIVE (the HBONE port still requires mTLS)', () => {
    state.applySnapshot(cluster(peerAuth('shop', 'default', { mtls: { mode: 'DISABLE' } })));
    expect(mtlsFor(web(), 80)).toEqual({
      mode: 'permissive',
      rule: 'PeerAuthentication shop/default: DISABLE',
    });
  });

  it('adding, changing and removing a policy re-derives the namespace (and only it) at once', () => {
    state.applySnapshot(cluster());
    const before = probe();
    const change = state.upsert(typed(peerAuth('shop', 'default', { mtls: { mode: 'STRICT' } }))[0]!);
    expect(change?.workloads.updated.map((u) => u.current.name).sort()).toEqual(['db', 'web']);
    expect(mtlsFor(web(), 80).mode).toBe('strict');
    expect(probe()).toBe(before);
    state.remove({ kind: 'PeerAuthentication', namespace: 'shop', name: 'default' });
    expect(mtlsFor(web(), 80)).toEqual({ mode: 'permissive', rule: 'mesh default: PERMISSIVE' });
    expect(state.stats().peerAuthentications).toBe(0);
  });

  it('workloads with the same settings share one settings object', () => {
    state.applySnapshot(cluster(peerAuth('shop', 'default', { mtls: { mode: 'STRICT' } })));
    expect(web().mtls).toBe(db().mtls);
  });
});

describe('PeerAuthentication translation', () => {
  const translate = (spec: Record<string, unknown>) =>
    translateObject(peerAuth('shop', 'bad', spec), { source: 'mesh.yaml' });
  const messages = (r: ReturnType<typeof translate>) =>
    r.status === 'invalid' ? r.errors.map((e) => e.message).join('\n') : r.status;

  it('names the field and says what to write for each mistake', () => {
    expect(messages(translate({ mtls: { mode: 'strict' } }))).toMatch(
      /spec\.mtls\.mode.*must be one of "STRICT", "PERMISSIVE", "DISABLE", "UNSET"/,
    );
    expect(messages(translate({ portLevelMtls: { http: { mode: 'PERMISSIVE' } } }))).toMatch(
      /spec\.portLevelMtls\["http"\].*port number from 1 to 65535 \(the workload port/,
    );
    expect(messages(translate({ portLevelMtls: { 70000: { mode: 'PERMISSIVE' } } }))).toMatch(/65535/);
    expect(messages(translate({ portLevelMtls: { 8080: {} } }))).toMatch(
      /portLevelMtls\["8080"\]\.mode.*missing/,
    );
    expect(messages(translate({ mTLS: { mode: 'STRICT' } }))).toMatch(/mTLS/);
  });

  it('reads Istio-shaped YAML as written', () => {
    const r = translate({
      selector: { matchLabels: { app: 'web' } },
      mtls: { mode: 'STRICT' },
      portLevelMtls: { '8081': { mode: 'PERMISSIVE' } },
    });
    expect(r).toMatchObject({
      status: 'ok',
      object: {
        kind: 'PeerAuthentication',
        selector: { app: 'web' },
        mode: 'STRICT',
        portLevel: { 8081: 'PERMISSIVE' },
      },
    });
  });
});
