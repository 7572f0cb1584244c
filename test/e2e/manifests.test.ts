// The install manifests, as an operator would apply them: kustomize renders them, every object is
// valid for the Kubernetes API (schemas from kubernetes-models), the CRDs accept the documented
// examples and refuse broken policies with a message that names the field, and the RBAC and pod
// settings keep the promises docs/kubernetes.md makes.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { translateObject } from '@hypha/shared/config';
import { compileAuthorizationPolicy, compileTrafficPolicy } from '@hypha/waypoint';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { type CrdObject, compileCrd, crdObjectValidator } from '../src/kube-api/crd-schema.js';
import { createKubeApiServer } from '../src/kube-api/index.js';

// biome-ignore lint/suspicious/noExplicitAny: rendered YAML is navigated freely in assertions
type Yaml = any;

const ROOT = join(import.meta.dirname, '..', '..');

type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
};

function kustomize(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as K8sObject);
}

function examples(file: string): K8sObject[] {
  return parseAllDocuments(readFileSync(join(ROOT, 'manifests', 'examples', file), 'utf8'))
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

// kubernetes-models classes by apiVersion/kind; an object of a kind missing here fails the test.
async function modelFor(
  apiVersion: string,
  kind: string,
): Promise<(new (o: unknown) => { validate(): void }) | undefined> {
  const modules: Record<string, () => Promise<Record<string, unknown>>> = {
    v1: () => import('kubernetes-models/v1'),
    'apps/v1': () => import('kubernetes-models/apps/v1'),
    'rbac.authorization.k8s.io/v1': () => import('kubernetes-models/rbac.authorization.k8s.io/v1'),
    'policy/v1': () => import('kubernetes-models/policy/v1'),
    'apiextensions.k8s.io/v1': () => import('kubernetes-models/apiextensions.k8s.io/v1'),
    'gateway.networking.k8s.io/v1': () =>
      import('@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1'),
  };
  const load = modules[apiVersion];
  if (!load) return undefined;
  return (await load())[kind] as (new (o: unknown) => { validate(): void }) | undefined;
}

const base = kustomize('manifests/base');
const find = (kind: string, name: string) => {
  const o = base.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`manifests/base renders no ${kind} ${name}`);
  return o as K8sObject & Record<string, Yaml>;
};
const crds = base.filter((o) => o.kind === 'CustomResourceDefinition') as unknown as CrdObject[];
const apCrd = compileCrd(crds.find((c) => c.spec.names.kind === 'AuthorizationPolicy')!);
const tpCrd = compileCrd(crds.find((c) => c.spec.names.kind === 'TrafficPolicy')!);
const paCrd = compileCrd(crds.find((c) => c.spec.names.kind === 'PeerAuthentication')!);
const seCrd = compileCrd(crds.find((c) => c.spec.names.kind === 'ServiceEntry')!);
const mcCrd = compileCrd(crds.find((c) => c.spec.names.kind === 'MeshConfig')!);

describe('manifests', () => {
  it('render with kustomize: base, dev overlay and waypoint template', () => {
    expect(base.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(
      expect.arrayContaining([
        'Namespace/hypha-system',
        'CustomResourceDefinition/authorizationpolicies.security.hypha.dev',
        'CustomResourceDefinition/requestauthentications.security.hypha.dev',
        'CustomResourceDefinition/peerauthentications.security.hypha.dev',
        'CustomResourceDefinition/trafficpolicies.traffic.hypha.dev',
        'CustomResourceDefinition/serviceentries.networking.hypha.dev',
        'CustomResourceDefinition/meshconfigs.networking.hypha.dev',
        'GatewayClass/hypha-waypoint',
        'ServiceAccount/hypha-agent',
        'ServiceAccount/hypha-ca',
        'ClusterRole/hypha-agent',
        'DaemonSet/hypha-agent',
        'Deployment/hypha-ca',
        'Service/hypha-ca',
      ]),
    );
    const dev = kustomize('manifests/overlays/dev');
    const devCa = dev.find((o) => o.kind === 'Deployment' && o.metadata.name === 'hypha-ca') as Record<
      string,
      Yaml
    >;
    expect(devCa.spec.replicas).toBe(1);
    expect(devCa.spec.template.spec.containers[0].image).toBe('hypha:dev');
    expect(find('DaemonSet', 'hypha-agent').spec.template.spec.containers[0].image).toBe(
      'ghcr.io/hypha-mesh/hypha:0.1.0',
    );
    const waypoint = kustomize('manifests/waypoint');
    expect(waypoint.map((o) => o.kind).sort()).toEqual(
      ['ClusterRoleBinding', 'Deployment', 'Gateway', 'RoleBinding', 'Service', 'ServiceAccount'].sort(),
    );
  });

  it('every object validates against the Kubernetes OpenAPI schemas', async () => {
    const objects = [...base, ...kustomize('manifests/waypoint')];
    const problems: string[] = [];
    for (const o of objects) {
      const Model = await modelFor(o.apiVersion, o.kind);
      if (!Model) {
        problems.push(`${o.apiVersion} ${o.kind}: no schema to validate against`);
        continue;
      }
      try {
        new Model(o).validate();
      } catch (err) {
        problems.push(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`);
      }
    }
    expect(problems).toEqual([]);
    // The validator is not vacuous: a malformed DaemonSet is refused.
    const Ds = (await modelFor('apps/v1', 'DaemonSet'))!;
    const broken = structuredClone(find('DaemonSet', 'hypha-agent'));
    broken.spec.template.spec.containers[0].readinessProbe.periodSeconds = 'five';
    expect(() => new Ds(broken).validate()).toThrow(/periodSeconds/);
  });

  it('the agent DaemonSet: host network, NET_ADMIN only, projected hypha-ca token, probes on 15021, every node, zero-drop upgrades', () => {
    const ds = find('DaemonSet', 'hypha-agent');
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    expect(pod.hostNetwork).toBe(true);
    expect(pod.serviceAccountName).toBe('hypha-agent');
    expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
    expect(c.securityContext.privileged).toBe(false);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/healthz/ready', port: 15021 });
    expect(c.livenessProbe.tcpSocket.port ?? c.livenessProbe.httpGet.port).toBe(15021);
    expect(c.resources.requests.cpu).toBeDefined();
    expect(c.resources.requests.memory).toBeDefined();
    expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
    // Upgrades overlap old and new agent on a node (socket hand-off), never leave a node without one.
    expect(ds.spec.updateStrategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxUnavailable: 0, maxSurge: 1 },
    });
    const handoff = pod.volumes.find((v: Yaml) => v.hostPath?.path === '/var/run/hypha-agent');
    expect(handoff?.hostPath.type).toBe('DirectoryOrCreate');
    expect(c.volumeMounts).toContainEqual({ name: handoff.name, mountPath: '/var/run/hypha-agent' });
    const args: string[] = c.args;
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect(flag('--handoff-dir')).toBe('/var/run/hypha-agent');
    // The grace period covers waiting for the successor and draining.
    const seconds = (d: string | undefined) => Number(String(d).replace(/s$/, ''));
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(
      seconds(flag('--handoff-wait')) + seconds(flag('--drain-timeout')),
    );
    const token = pod.volumes.find((v: Yaml) => v.projected)?.projected.sources[0].serviceAccountToken;
    expect(token).toMatchObject({ audience: 'hypha-ca', path: 'hypha-ca-token' });
    const mount = c.volumeMounts.find(
      (m: Yaml) => m.name === pod.volumes.find((v: Yaml) => v.projected).name,
    );
    const tokenPath = `${mount.mountPath}/${token.path}`;
    expect(c.env).toContainEqual({ name: 'HYPHA_CA_TOKEN_FILE', value: tokenPath });
    // A declared containerPort is a hostPort under hostNetwork: the surge pod could not be scheduled.
    expect(c.ports).toBeUndefined();
  });

  it('RBAC is least privilege: agents read, only the CA reviews tokens or touches Secrets, nobody gets wildcards', () => {
    const roles = base.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role') as Array<
      Record<string, Yaml>
    >;
    for (const role of roles) {
      for (const rule of role.rules) {
        expect(rule.verbs, `${role.metadata.name}`).not.toContain('*');
        expect(rule.resources, `${role.metadata.name}`).not.toContain('*');
        expect(rule.apiGroups, `${role.metadata.name}`).not.toContain('*');
      }
    }
    const agent = find('ClusterRole', 'hypha-agent');
    const writes = agent.rules.filter((r: Yaml) =>
      r.verbs.some((v: string) => !['get', 'list', 'watch'].includes(v)),
    );
    expect(writes).toEqual([{ apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] }]);
    const readable = agent.rules.flatMap((r: Yaml) => r.resources);
    for (const kind of [
      'namespaces',
      'pods',
      'services',
      'endpointslices',
      'gateways',
      'httproutes',
      'grpcroutes',
      'authorizationpolicies',
      'requestauthentications',
      'peerauthentications',
      'trafficpolicies',
      'serviceentries',
      'meshconfigs',
    ]) {
      expect(readable).toContain(kind);
    }
    const grants = (resource: string) =>
      roles
        .filter((r) => r.rules.some((rule: Yaml) => rule.resources.includes(resource)))
        .map((r) => `${r.kind}/${r.metadata.name}`);
    expect(grants('tokenreviews')).toEqual(['ClusterRole/hypha-ca']);
    expect(grants('secrets')).toEqual(['Role/hypha-ca']);
    // Status writes for waypoints are namespaced (bound by a RoleBinding in the waypoint template).
    expect(grants('httproutes/status')).toEqual(['ClusterRole/hypha-waypoint-status']);
    const wp = kustomize('manifests/waypoint') as Array<Record<string, Yaml>>;
    const statusBinding = wp.find((o) => o.roleRef?.name === 'hypha-waypoint-status');
    expect(statusBinding?.kind).toBe('RoleBinding');
  });

  it('PeerAuthentication: the CRD accepts the examples and refuses what Hypha refuses', () => {
    const pas = examples('peer-authentications.yaml');
    expect(pas.length).toBe(3);
    for (const pa of pas) {
      expect(paCrd.validate(pa), pa.metadata.name).toEqual([]);
      expect(translateObject(pa, { source: 'example' }).status).toBe('ok');
    }
    const bad = (spec: Record<string, unknown>) => ({
      apiVersion: 'security.hypha.dev/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'bad', namespace: 'shop' },
      spec,
    });
    for (const [spec, expected] of [
      [{ mtls: { mode: 'strict' } }, /mode/],
      [{ portLevelMtls: { http: { mode: 'PERMISSIVE' } } }, /port numbers from 1 to 65535/],
      [{ portLevelMtls: { 70000: { mode: 'PERMISSIVE' } } }, /port numbers from 1 to 65535/],
      [{ portLevelMtls: { 8080: {} } }, /mode/],
      [{ mTLS: { mode: 'STRICT' } }, /mTLS/],
    ] as const) {
      expect(messages(paCrd.validate(bad(spec))), JSON.stringify(spec)).toMatch(expected);
      expect(translateObject(bad(spec), { source: 'example' }).status).toBe('invalid');
    }
  });

  it('ServiceEntry and MeshConfig: the CRDs accept the examples and refuse what Hypha refuses', () => {
    const all = examples('service-entries.yaml');
    const entries = all.filter((o) => o.kind === 'ServiceEntry');
    const meshes = all.filter((o) => o.kind === 'MeshConfig');
    expect(entries.length).toBe(4);
    expect(meshes.length).toBe(1);
    for (const se of entries) {
      expect(seCrd.validate(se), se.metadata.name).toEqual([]);
      const t = translateObject(se, { source: 'example' });
      expect(t.status, `${se.metadata.name}: ${JSON.stringify(t)}`).toBe('ok');
    }
    for (const mc of meshes) {
      expect(mcCrd.validate(mc)).toEqual([]);
      const t = translateObject(mc, { source: 'example' });
      expect(t).toMatchObject({
        status: 'ok',
        object: { outboundTrafficPolicy: 'REGISTRY_ONLY', problems: [] },
      });
    }
    const bad = (spec: Record<string, unknown>) => ({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'bad', namespace: 'shop' },
      spec: { hosts: ['a.example.test'], ports: [{ number: 80 }], ...spec },
    });
    for (const [spec, expected] of [
      [{ resolution: 'STATIC' }, /resolution STATIC needs endpoints/],
      [{ endpoints: [{ address: '192.0.2.1' }] }, /endpoints must be empty with resolution NONE/],
      [{ hosts: ['*.a.example.test'], resolution: 'DNS' }, /a wildcard host cannot be resolved by DNS/],
      [{ ports: [{ number: 80 }, { number: 80, name: 'x' }] }, /each port number may be listed once/],
      [{ hosts: ['Upper.example.test'] }, /hosts/],
      [{ hosts: [] }, /hosts/],
      [{ ports: [{ number: 80, protocol: 'http' }] }, /protocol/],
      [{ resolution: 'dns' }, /resolution/],
      [{ resolutoin: 'DNS' }, /resolutoin/],
    ] as const) {
      expect(messages(seCrd.validate(bad(spec))), JSON.stringify(spec)).toMatch(expected);
      expect(translateObject(bad(spec), { source: 'example' }).status, JSON.stringify(spec)).toBe('invalid');
    }
    const mesh = (name: string, spec: unknown) => ({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'MeshConfig',
      metadata: { name, namespace: 'hypha-system' },
      spec,
    });
    expect(
      messages(mcCrd.validate(mesh('default', { outboundTrafficPolicy: { mode: 'ALLOW-ANY' } }))),
    ).toMatch(/mode/);
    expect(messages(mcCrd.validate(mesh('mesh', {})))).toMatch(/named "default"/);
  });

  it('the CRDs accept every documented example, and Hypha reads each of them', () => {
    const aps = examples('authorization-policies.yaml');
    const tps = examples('traffic-policies.yaml');
    expect(aps.length).toBeGreaterThanOrEqual(4);
    expect(tps.length).toBeGreaterThanOrEqual(3);
    for (const ap of aps) {
      expect(apCrd.validate(ap), ap.metadata.name).toEqual([]);
      const translated = translateObject(ap, { source: 'example' });
      expect(translated.status, `${ap.metadata.name}: ${JSON.stringify(translated)}`).toBe('ok');
    }
    const l7 = aps.find((a) => a.metadata.name === 'orders-read-only')!;
    expect(() => compileAuthorizationPolicy(l7, { name: 'waypoint', namespace: 'shop' })).not.toThrow();
    for (const tp of tps) {
      expect(tpCrd.validate(tp), tp.metadata.name).toEqual([]);
      expect(translateObject(tp, { source: 'example' }).status).toBe('ok');
      const compiled = compileTrafficPolicy(tp);
      expect(compiled.services.length).toBe(1);
      // Whichever spelling an example uses, the waypoint must act on it, not drop it.
      const spec = (tp as unknown as { spec: Record<string, unknown> }).spec;
      if (spec.retry !== undefined || spec.retries !== undefined) {
        expect(compiled.settings.retry, tp.metadata.name).toBeDefined();
      }
    }
  });

  const apSpec = (spec: Record<string, unknown>) => ({
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'bad', namespace: 'shop' },
    spec,
  });
  const tpSpec = (spec: Record<string, unknown>) => ({
    apiVersion: 'traffic.hypha.dev/v1alpha1',
    kind: 'TrafficPolicy',
    metadata: { name: 'bad', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', name: 'reviews' }], ...spec },
  });
  const messages = (causes: Array<{ field: string; message: string }>) =>
    causes.map((c) => `${c.field}: ${c.message}`).join('\n');

  it.each([
    ['an unknown action', apSpec({ action: 'DENNY', rules: [{}] }), /spec\.action: Unsupported value/],
    [
      'selector together with targetRefs',
      apSpec({ selector: { matchLabels: { app: 'web' } }, targetRefs: [{ kind: 'Service', name: 'web' }] }),
      /mutually exclusive/,
    ],
    [
      'a misspelt field',
      apSpec({ rules: [{ form: [{ source: { namespaces: ['a'] } }] }] }),
      /spec\.rules\[0\]\.form: unknown field/,
    ],
    [
      'a port that is not a number',
      apSpec({ rules: [{ to: [{ operation: { ports: ['http'] } }] }] }),
      /ports must be numbers from 1 to 65535/,
    ],
    [
      'a port out of range',
      apSpec({ rules: [{ to: [{ operation: { ports: [70000] } }] }] }),
      /ports must be numbers/,
    ],
    ['a DENY without rules', apSpec({ action: 'DENY' }), /DENY policy needs at least one rule/],
    [
      'a when without values',
      apSpec({ rules: [{ when: [{ key: 'source.ip' }] }] }),
      /needs values or notValues/,
    ],
    [
      'a targetRef to a Deployment',
      apSpec({ targetRefs: [{ kind: 'Deployment', name: 'web' }] }),
      /targetRefs\[0\]\.kind: Unsupported value/,
    ],
    [
      'a Gateway ref in the core group',
      apSpec({ targetRefs: [{ kind: 'Gateway', group: '', name: 'w' }] }),
      /group must be/,
    ],
    ['an empty source', apSpec({ rules: [{ from: [{ source: {} }] }] }), /source/],
  ])('AuthorizationPolicy: refuses %s', (_what, object, expected) => {
    const causes = apCrd.validate(object);
    expect(messages(causes)).toMatch(expected);
  });

  it.each([
    [
      'a percentage over 100',
      tpSpec({ fault: { abort: { httpStatus: 503, percentage: 150 } } }),
      /percentage/,
    ],
    [
      'a negative percentage',
      tpSpec({ fault: { delay: { fixedDelay: '1s', percentage: -1 } } }),
      /percentage/,
    ],
    ['an abort without a status', tpSpec({ fault: { abort: { percentage: 5 } } }), /needs httpStatus/],
    [
      'both simple and consistentHash',
      tpSpec({ loadBalancer: { simple: 'RANDOM', consistentHash: { httpHeaderName: 'x' } } }),
      /exactly one of loadBalancer.simple/,
    ],
    [
      'an unknown balancing algorithm',
      tpSpec({ loadBalancer: { simple: 'FASTEST' } }),
      /simple: Unsupported value/,
    ],
    ['a malformed duration', tpSpec({ outlierDetection: { interval: '10 seconds' } }), /interval/],
    [
      'maxEjectionPercent over 100',
      tpSpec({ outlierDetection: { maxEjectionPercent: 101 } }),
      /maxEjectionPercent/,
    ],
    ['zero max connections', tpSpec({ connectionPool: { maxConnections: 0 } }), /maxConnections/],
    ['an empty policy', tpSpec({}), /at least one of/],
    [
      'no target',
      { ...tpSpec({ retries: { attempts: 1 } }), spec: { retries: { attempts: 1 } } },
      /exactly one of targetRefs and targetRef/,
    ],
    [
      'a target that is not a Service',
      tpSpec({ targetRefs: [{ kind: 'Pod', name: 'x' }], retries: { attempts: 1 } }),
      /kind: Unsupported value/,
    ],
    [
      'an unknown retryOn',
      tpSpec({ retries: { attempts: 2, retryOn: ['sometimes'] } }),
      /retryOn\[0\]: Unsupported value/,
    ],
  ])('TrafficPolicy: refuses %s', (_what, object, expected) => {
    expect(messages(tpCrd.validate(object))).toMatch(expected);
  });

  it('a stand-in API server with these CRDs refuses a bad policy with a message naming the field', async () => {
    const server = await createKubeApiServer({ validate: crdObjectValidator(crds) });
    try {
      const kc = new KubeConfig();
      kc.loadFromFile(server.kubeconfigPath);
      await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: 'shop' } } });
      const custom = kc.makeApiClient(CustomObjectsApi);
      const target = {
        group: 'security.hypha.dev',
        version: 'v1',
        namespace: 'shop',
        plural: 'authorizationpolicies',
      };
      const refused = await custom
        .createNamespacedCustomObject({ ...target, body: apSpec({ action: 'DENNY', rules: [{}] }) })
        .then(
          () => undefined,
          (err: { code?: number; body?: string }) => err,
        );
      expect(refused?.code).toBe(422);
      const status = JSON.parse(String(refused?.body)) as { reason: string; message: string };
      expect(status.reason).toBe('Invalid');
      expect(status.message).toContain(
        'AuthorizationPolicy.security.hypha.dev "bad" is invalid: spec.action',
      );
      const good = examples('authorization-policies.yaml').find(
        (a) => a.metadata.name === 'checkout-from-frontend',
      )!;
      await custom.createNamespacedCustomObject({ ...target, body: good });
      expect(
        server.find('security.hypha.dev/v1', 'AuthorizationPolicy', 'checkout-from-frontend', 'shop'),
      ).toBeDefined();
    } finally {
      await server.close();
    }
  });
  it('the ingress gateway: template renders and validates, and the example Gateway and routes are read and attached', async () => {
    const gw = kustomize('manifests/gateway');
    expect(gw.map((o) => o.kind).sort()).toEqual(
      ['ClusterRoleBinding', 'Deployment', 'Role', 'RoleBinding', 'Service', 'ServiceAccount'].sort(),
    );
    for (const o of gw) {
      const Model = await modelFor(o.apiVersion, o.kind);
      expect(Model, `${o.kind} schema`).toBeDefined();
      new Model!(o).validate();
    }
    expect(find('GatewayClass', 'hypha').spec.controllerName).toBe('hypha.dev/gateway');
    // Secrets are read only through the template's namespaced Role, never cluster-wide.
    const role = gw.find((o) => o.kind === 'Role') as Record<string, Yaml>;
    expect(role.rules.find((r: Yaml) => r.resources.includes('secrets')).verbs).toEqual([
      'get',
      'list',
      'watch',
    ]);
    expect(find('ClusterRole', 'hypha-gateway').rules.flatMap((r: Yaml) => r.resources)).not.toContain(
      'secrets',
    );

    const { createConfigState } = await import('@hypha/shared/config');
    const { buildGatewayPlan } = await import('@hypha/waypoint/gateway/input');
    const state = createConfigState({});
    const objects = examples('gateway.yaml').map((o) => {
      const r = translateObject(o, { source: 'manifests/examples/gateway.yaml' });
      if (r.status !== 'ok') throw new Error(`${o.kind} ${o.metadata.name}: ${JSON.stringify(r)}`);
      return r.object;
    });
    state.applySnapshot(objects);
    const plan = buildGatewayPlan(state, { namespace: 'demo', name: 'ingress' })!;
    expect(plan.compiled.listeners.map((l) => l.name)).toEqual([
      'http',
      'https-a',
      'https-b',
      'https-c',
      'tls-p',
      'tcp',
    ]);
    expect(Object.fromEntries(plan.attachedRoutes)).toEqual({
      http: 1,
      'https-a': 1,
      'https-b': 1,
      'https-c': 1,
      'tls-p': 1,
      tcp: 1,
    });
  });
});
