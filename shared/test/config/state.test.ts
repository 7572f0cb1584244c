import { type ConfigChange, type ConfigState, createConfigState } from '@hypha/shared/config';
import { evaluateL4 } from '@hypha/shared/policy';
import { beforeEach, describe, expect, it } from 'vitest';
import { authz, gateway, ns, pod, svc, typed } from './objects.js';

let state: ConfigState;
let changes: ConfigChange[];
beforeEach(() => {
  state = createConfigState({ trustDomain: 'example.org' });
  changes = [];
  state.onChange((c) => changes.push(c));
});

const base = () =>
  typed(
    ns('demo', { 'hypha.dev/dataplane-mode': 'ambient' }),
    ns('outside'),
    pod('client', { ip: '10.1.1.10', node: 'node-a', labels: { app: 'client' }, sa: 'client' }),
    pod('echo-v1', {
      ip: '10.1.1.11',
      node: 'node-a',
      labels: { app: 'echo', version: 'v1' },
      ports: { http: 8080 },
    }),
    pod('echo-v2', {
      ip: '10.1.2.10',
      node: 'node-b',
      labels: { app: 'echo', version: 'v2' },
      ports: { http: 8081 },
    }),
    pod('plain', { namespace: 'outside', ip: '10.1.2.11', node: 'node-b', labels: { app: 'plain' } }),
    svc('echo', '10.96.0.10', { app: 'echo' }, [
      { name: 'web', port: 80, targetPort: 8080 },
      { name: 'named', port: 81, targetPort: 'http' },
    ]),
  );

describe('workloads', () => {
  it('derives identity, mesh membership, mTLS mode and indexes every workload', () => {
    state.applySnapshot(base());
    const client = state.findWorkloadByIp('10.1.1.10')!;
    expect(client).toMatchObject({
      name: 'client',
      namespace: 'demo',
      node: 'node-a',
      inMesh: true,
      mtlsMode: 'permissive',
    });
    expect(client.identity.toString()).toBe('spiffe://example.org/ns/demo/sa/client');
    expect(state.findWorkloadByIp('10.1.1.11')!.identity.toString()).toBe(
      'spiffe://example.org/ns/demo/sa/default',
    );
    expect(state.findWorkloadByUid('outside/plain')).toMatchObject({ name: 'plain', inMesh: false });
    expect(state.findWorkloadByName('demo', 'echo-v2')?.ips).toEqual(['10.1.2.10']);
    expect(
      state
        .findWorkloadsOnNode('node-a')
        .map((w) => w.name)
        .sort(),
    ).toEqual(['client', 'echo-v1']);
    expect(
      state
        .findWorkloadsOnNode('node-b')
        .map((w) => w.name)
        .sort(),
    ).toEqual(['echo-v2', 'plain']);
    expect(state.findWorkloadByIp('10.9.9.9')).toBeUndefined();
    expect(state.findWorkloadByIp('::ffff:10.1.1.10')?.name).toBe('client');
  });

  it('applies the opt-in rules: namespace ambient, pod none opts out, pod ambient opts in, hostNetwork never', () => {
    const hostNet = pod('agent', { ip: '192.168.0.2' });
    (hostNet.spec as Record<string, unknown>).hostNetwork = true;
    state.applySnapshot([
      ...base(),
      ...typed(
        pod('skip', { ip: '10.1.1.20', labels: { 'hypha.dev/dataplane-mode': 'none' } }),
        pod('join', {
          namespace: 'outside',
          ip: '10.1.2.20',
          labels: { 'hypha.dev/dataplane-mode': 'ambient' },
        }),
        hostNet,
        pod('orphan', { namespace: 'nowhere', ip: '10.1.3.1' }),
      ),
    ]);
    expect(state.findWorkloadByIp('10.1.1.20')?.inMesh).toBe(false);
    expect(state.findWorkloadByIp('10.1.2.20')?.inMesh).toBe(true);
    expect(state.findWorkloadByIp('192.168.0.2')?.inMesh).toBe(false);
    expect(state.findWorkloadByIp('10.1.3.1')).toMatchObject({ inMesh: false, mtlsMode: 'permissive' });
  });

  it('re-derives every workload of a namespace when its labels change, with no restart', () => {
    state.applySnapshot(base());
    changes.length = 0;
    state.upsert(
      typed(ns('outside', { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/mtls-mode': 'strict' }))[0]!,
    );
    expect(state.findWorkloadByIp('10.1.2.11')).toMatchObject({ inMesh: true, mtlsMode: 'strict' });
    expect(changes).toHaveLength(1);
    expect(changes[0]!.workloads.updated.map((u) => [u.previous.inMesh, u.current.inMesh])).toEqual([
      [false, true],
    ]);
    state.remove({ kind: 'Namespace', namespace: '', name: 'outside' });
    expect(state.findWorkloadByIp('10.1.2.11')?.inMesh).toBe(false);
  });

  it('keeps every index consistent through add, update (IP, node, labels) and remove', () => {
    state.applySnapshot(base());
    const v = state.version;
    changes.length = 0;
    // echo-v1 moves: new IP, new node, new labels (no longer selected by echo).
    state.upsert(typed(pod('echo-v1', { ip: '10.1.2.99', node: 'node-b', labels: { app: 'old' } }))[0]!);
    expect(state.version).toBe(v + 1);
    expect(state.findWorkloadByIp('10.1.1.11')).toBeUndefined();
    expect(state.findWorkloadByIp('10.1.2.99')?.name).toBe('echo-v1');
    expect(state.findWorkloadsOnNode('node-a').map((w) => w.name)).toEqual(['client']);
    expect(
      state
        .findWorkloadsOnNode('node-b')
        .map((w) => w.name)
        .sort(),
    ).toEqual(['echo-v1', 'echo-v2', 'plain']);
    expect(state.findServiceByName('demo', 'echo')!.endpoints.map((e) => e.ip)).toEqual(['10.1.2.10']);
    const c = changes[0]!;
    expect(c.workloads.updated).toHaveLength(1);
    expect(c.workloads.updated[0]!.previous.ips).toEqual(['10.1.1.11']);
    expect(c.services.updated).toHaveLength(1);

    state.remove({ kind: 'Pod', namespace: 'demo', name: 'echo-v1' });
    expect(state.findWorkloadByIp('10.1.2.99')).toBeUndefined();
    expect(state.findWorkloadByUid('demo/echo-v1')).toBeUndefined();
    expect(
      state
        .findWorkloadsOnNode('node-b')
        .map((w) => w.name)
        .sort(),
    ).toEqual(['echo-v2', 'plain']);
    expect(changes[1]!.workloads.removed.map((w) => w.name)).toEqual(['echo-v1']);

    // Re-applying the same snapshot twice changes nothing the second time.
    state.applySnapshot(base());
    const after = state.version;
    expect(state.applySnapshot(base())).toBeUndefined();
    expect(state.version).toBe(after);
    expect(state.stats()).toMatchObject({ workloads: 4, services: 1, namespaces: 2 });
  });

  it('applySnapshot removes what the new snapshot no longer has', () => {
    state.applySnapshot(base());
    state.applySnapshot(base().filter((o) => o.kind !== 'Service' && o.name !== 'client'));
    expect(state.findWorkloadByIp('10.1.1.10')).toBeUndefined();
    expect(state.findServiceByVip('10.96.0.10')).toBeUndefined();
    expect(changes.at(-1)!.services.removed.map((s) => s.name)).toEqual(['echo']);
  });

  it('prefers the ready pod when a finished pod still claims a reused IP', () => {
    state.applySnapshot([
      ...typed(pod('old', { ip: '10.1.1.50', ready: false }), pod('new', { ip: '10.1.1.50', ready: true })),
    ]);
    expect(state.findWorkloadByIp('10.1.1.50')?.name).toBe('new');
    state.remove({ kind: 'Pod', namespace: 'demo', name: 'new' });
    expect(state.findWorkloadByIp('10.1.1.50')?.name).toBe('old');
  });
});

describe('services', () => {
  it('derives endpoints from the selector over ready pods, resolving named target ports per pod', () => {
    state.applySnapshot(base());
    const echo = state.findServiceByVip('10.96.0.10', 80)!;
    expect(echo.name).toBe('echo');
    expect(echo.endpoints.map((e) => [e.ip, e.node, e.targetPorts.get(80), e.targetPorts.get(81)])).toEqual([
      ['10.1.1.11', 'node-a', 8080, 8080],
      ['10.1.2.10', 'node-b', 8080, 8081],
    ]);
    expect(echo.endpoints[0]!.workloadUid).toBe('demo/echo-v1');
    expect(state.findServiceByVip('10.96.0.10', 9999)).toBeUndefined();
    expect(state.findServiceByName('demo', 'echo')).toBe(echo);
  });

  it('drops a pod that lacks the named port from that port only', () => {
    state.applySnapshot([...base(), ...typed(pod('echo-v3', { ip: '10.1.1.12', labels: { app: 'echo' } }))]);
    const e = state.findServiceByName('demo', 'echo')!.endpoints.find((x) => x.ip === '10.1.1.12')!;
    expect(e.targetPorts.get(80)).toBe(8080);
    expect(e.targetPorts.has(81)).toBe(false);
  });

  it('follows readiness: a pod that turns unready leaves the endpoints, and comes back', () => {
    state.applySnapshot(base());
    state.upsert(
      typed(
        pod('echo-v2', {
          ip: '10.1.2.10',
          node: 'node-b',
          labels: { app: 'echo', version: 'v2' },
          ready: false,
        }),
      )[0]!,
    );
    expect(state.findServiceByName('demo', 'echo')!.endpoints.map((e) => e.ip)).toEqual(['10.1.1.11']);
    state.upsert(
      typed(
        pod('echo-v2', {
          ip: '10.1.2.10',
          node: 'node-b',
          labels: { app: 'echo', version: 'v2' },
          ready: true,
        }),
      )[0]!,
    );
    expect(state.findServiceByName('demo', 'echo')!.endpoints.map((e) => e.ip)).toEqual([
      '10.1.1.11',
      '10.1.2.10',
    ]);
  });

  it('uses EndpointSlices for selector-less services, and for all in endpoint-slices mode', () => {
    const slice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'ext-1', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'ext' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.1.1.11'] }, { addresses: ['10.7.0.1'], conditions: { ready: false } }],
      ports: [{ name: 'tcp', port: 5000 }],
    };
    state.applySnapshot([
      ...base(),
      ...typed(svc('ext', '10.96.0.20', undefined, [{ name: 'tcp', port: 50 }]), slice),
    ]);
    const ext = state.findServiceByVip('10.96.0.20')!;
    expect(ext.endpoints.map((e) => [e.ip, e.ready, e.targetPorts.get(50), e.workloadUid])).toEqual([
      ['10.1.1.11', true, 5000, 'demo/echo-v1'],
      ['10.7.0.1', false, 5000, undefined],
    ]);

    const k8s = createConfigState({ endpoints: 'endpoint-slices' });
    k8s.applySnapshot(base());
    expect(k8s.findServiceByName('demo', 'echo')!.endpoints).toEqual([]);
    k8s.upsert(
      typed({
        ...slice,
        metadata: { ...slice.metadata, labels: { 'kubernetes.io/service-name': 'echo' } },
        ports: [{ name: 'web', port: 8080 }],
      })[0]!,
    );
    expect(
      k8s.findServiceByName('demo', 'echo')!.endpoints.map((e) => [e.ip, e.targetPorts.get(80)]),
    ).toEqual([
      ['10.1.1.11', 8080],
      ['10.7.0.1', 8080],
    ]);
  });
});

describe('waypoints', () => {
  const wpPod = () =>
    pod('waypoint-abc', {
      ip: '10.1.1.99',
      labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
      sa: 'waypoint',
    });

  it('binds services (service label > namespace label) and workloads (pod label > namespace label)', () => {
    state.applySnapshot([
      ...typed(
        ns('demo', { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/use-waypoint': 'waypoint' }),
        gateway('waypoint', 'demo', 'all'),
        gateway('special', 'demo', 'service'),
        wpPod(),
        pod('a', { ip: '10.1.1.1' }),
        pod('b', { ip: '10.1.1.2', labels: { 'hypha.dev/use-waypoint': 'none' } }),
        svc('s1', '10.96.1.1', { app: 'x' }, [{ port: 80 }]),
        svc('s2', '10.96.1.2', { app: 'x' }, [{ port: 80 }], {
          labels: { 'hypha.dev/use-waypoint': 'special' },
        }),
        svc('waypoint', '10.96.1.99', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, [
          { port: 15008 },
        ]),
      ),
    ]);
    const wp = state.findWaypointFor(state.findWorkloadByIp('10.1.1.1')!)!;
    expect(wp.ref).toEqual({ namespace: 'demo', name: 'waypoint' });
    expect(wp.waypoint).toMatchObject({ for: 'all', addresses: ['10.96.1.99'] });
    expect(wp.waypoint!.identity.toString()).toBe('spiffe://example.org/ns/demo/sa/waypoint');
    expect(state.findWaypointFor(state.findWorkloadByIp('10.1.1.2')!)).toBeUndefined();
    expect(state.findWaypointFor(state.findServiceByName('demo', 's1')!)?.ref.name).toBe('waypoint');
    expect(state.findWaypointFor(state.findServiceByName('demo', 's2')!)?.ref.name).toBe('special');
    expect(state.findWaypointWorkloads(wp.ref).map((w) => w.ips[0])).toEqual(['10.1.1.99']);
  });

  it('honours waypoint-for, and reports a binding to a missing Gateway so callers fail closed', () => {
    state.applySnapshot(
      typed(
        ns('demo', { 'hypha.dev/use-waypoint': 'waypoint' }),
        gateway('waypoint', 'demo'), // default: service
        pod('a', { ip: '10.1.1.1' }),
        svc('s1', '10.96.1.1', { app: 'x' }, [{ port: 80 }]),
      ),
    );
    expect(state.findWaypointFor(state.findWorkloadByIp('10.1.1.1')!)).toBeUndefined();
    expect(state.findWaypointFor(state.findServiceByName('demo', 's1')!)?.waypoint?.for).toBe('service');
    changes.length = 0;
    state.remove({ kind: 'Gateway', namespace: 'demo', name: 'waypoint' });
    expect(changes[0]!.waypoints.removed.map((w) => w.name)).toEqual(['waypoint']);
    expect(state.findWaypointFor(state.findServiceByName('demo', 's1')!)).toEqual({
      ref: { namespace: 'demo', name: 'waypoint' },
      waypoint: undefined,
    });
  });
});

describe('authorization policies', () => {
  it('finds selector policies of the namespace and the root namespace, compiled once', () => {
    state.applySnapshot([
      ...base(),
      ...typed(
        authz('demo', 'echo-only', {
          selector: { matchLabels: { app: 'echo' } },
          rules: [{ from: [{ source: { namespaces: ['demo'] } }] }],
        }),
        authz('demo', 'ns-wide', { action: 'AUDIT', rules: [{}] }),
        authz('hypha-system', 'mesh', {
          action: 'DENY',
          rules: [{ from: [{ source: { ipBlocks: ['192.0.2.0/24'] } }] }],
        }),
        authz('outside', 'other', { rules: [{}] }),
        authz('demo', 'l7', {
          targetRefs: [{ kind: 'Service', name: 'echo' }],
          rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
        }),
      ),
    ]);
    const echo = state.findWorkloadByName('demo', 'echo-v1')!;
    const names = (w: typeof echo) => state.findPoliciesFor(w).map((p) => `${p.namespace}/${p.name}`);
    expect(names(echo)).toEqual(['demo/echo-only', 'demo/ns-wide', 'hypha-system/mesh']);
    expect(names(state.findWorkloadByName('demo', 'client')!)).toEqual(['demo/ns-wide', 'hypha-system/mesh']);
    const client = state.findWorkloadByName('demo', 'client')!;
    const d = evaluateL4(state.findPoliciesFor(echo), {
      source: { identity: client.identity, ip: client.ips[0]! },
      destination: { workload: echo, port: 8080 },
    });
    expect(d).toMatchObject({
      decision: 'allow',
      policy: { name: 'echo-only' },
      audit: [{ name: 'ns-wide' }],
    });

    // Answered from a cache per workload until policies change (no allocation per connection).
    expect(state.findPoliciesFor(echo)).toBe(state.findPoliciesFor(echo));
    changes.length = 0;
    const before = state.findPoliciesFor(echo)[0];
    state.upsert(
      typed(authz('demo', 'echo-only', { selector: { matchLabels: { app: 'echo' } }, rules: [] }))[0]!,
    );
    expect(changes[0]!.authorizationPolicies.updated).toHaveLength(1);
    expect(state.findPoliciesFor(echo)[0]).not.toBe(before);
    expect(
      evaluateL4(state.findPoliciesFor(echo), {
        source: { identity: client.identity, ip: '10.1.1.10' },
        destination: { workload: echo, port: 8080 },
      }).decision,
    ).toBe('deny');
    state.remove({ kind: 'AuthorizationPolicy', namespace: 'demo', name: 'echo-only' });
    expect(names(echo)).toEqual(['demo/ns-wide', 'hypha-system/mesh']);
  });
});

describe('change notifications', () => {
  it('reports added workloads/services on the first snapshot, then only real changes, and unsubscribes', () => {
    state.applySnapshot(base());
    expect(changes).toHaveLength(1);
    expect(changes[0]!.version).toBe(1);
    expect(changes[0]!.workloads.added.map((w) => w.name).sort()).toEqual([
      'client',
      'echo-v1',
      'echo-v2',
      'plain',
    ]);
    expect(changes[0]!.services.added.map((s) => s.name)).toEqual(['echo']);
    expect(changes[0]!.namespaces.added.map((n) => n.name)).toEqual(['demo', 'outside']);
    const seen: number[] = [];
    const off = state.onChange((c) => seen.push(c.version));
    state.upsert(typed(pod('x', { ip: '10.1.1.77' }))[0]!);
    off();
    state.upsert(typed(pod('y', { ip: '10.1.1.78' }))[0]!);
    expect(seen).toEqual([2]);
    expect(changes.map((c) => c.version)).toEqual([1, 2, 3]);
  });

  it('rejects an invalid trust domain at creation', () => {
    expect(() => createConfigState({ trustDomain: 'Not Valid' })).toThrow(/trust domain/);
  });
});

describe('memory under churn', () => {
  // Found by the soak (issue 18): every service account ever seen stayed interned, so an agent's
  // heap grew with each pod that had an account of its own, long after the pod was gone.
  it('forgets the identities of service accounts no pod uses any more', () => {
    state.applySnapshot(base());
    const client = state.findWorkloadByIp('10.1.1.10')!.identity;
    for (let i = 0; i < 1000; i++) {
      const [job] = typed(pod(`job-${i}`, { ip: '10.1.3.10', node: 'node-b', sa: `job-${i}` }));
      state.upsert(job!);
      state.remove({ kind: 'Pod', namespace: 'demo', name: `job-${i}` });
    }
    expect(state.stats().workloads).toBe(4);
    expect(state.internedIdentities()).toBeLessThanOrEqual(2 * 4 + 64 + 1);
    // Identities still in use are kept, and still shared.
    expect(state.findWorkloadByIp('10.1.1.10')!.identity).toBe(client);
    const [again] = typed(pod('client-2', { ip: '10.1.1.12', node: 'node-a', sa: 'client' }));
    state.upsert(again!);
    expect(state.findWorkloadByIp('10.1.1.12')!.identity).toBe(client);
  });
});
