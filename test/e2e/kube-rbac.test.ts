// Hypha's RBAC is exactly enough: the stand-in API server enforces RBAC (rbac: true) with the
// Roles and bindings of the rendered manifests (`hypha install --print`, the waypoint template),
// and each Kubernetes-mode component runs as its own ServiceAccount through its main path:
// - CA (hypha-system/hypha-ca): root Secret create, trust bundle ConfigMaps (own namespace and
//   mesh namespaces), Pods/Namespaces informers, revocations ConfigMap watch, TokenReview, pod lookups;
// - agent (hypha-system/hypha-agent): initial list + watch of every kind it reads, certificates for
//   its local pod from that CA;
// - waypoint (shop/waypoint): the same informers, and route status patches in its namespace.
// Not one request may be denied; then a few requests a least-privilege role must not get are refused.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSilentLogger } from '@hypha/shared';
import { createKubeSource, fetchKube, type KubeSource, loadKubeConfig } from '@hypha/shared/kube';
import {
  createKubeApiServer,
  describeDenials,
  type KubeApiServer,
  type KubeObject,
  loadRbacObjects,
  serviceAccountUser,
  storePolicySource,
  unusedGrants,
} from '@hypha/test';
import { createRouteStatusReporter, type RouteStatusReporter } from '@hypha/waypoint';
import { readWaypointTemplate, renderWaypointObjects } from '@hypha/waypoint/daemon/render';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, startAgent } from '../../agent/src/agent/app.js';
import { createKubeCa, type KubeCa } from '../../agent/src/ca/kube.js';
import { findManifestsDir, renderManifests } from '../../agent/src/cli/commands/install.js';

const SYSTEM = 'hypha-system';
const NODE = 'node-1';
const GW = '/apis/gateway.networking.k8s.io/v1/namespaces';

let api: KubeApiServer;
let dir: string;
let ca: KubeCa;
let agent: Agent;
let waypointSource: KubeSource;
let reporter: RouteStatusReporter;
const users = {
  agent: `system:serviceaccount:${SYSTEM}:hypha-agent`,
  ca: `system:serviceaccount:${SYSTEM}:hypha-ca`,
  waypoint: 'system:serviceaccount:shop:waypoint',
};

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** What `hypha waypoint apply -n <namespace> --name <name>` writes, as rendered from the template. */
async function waypointObjects(namespace: string, name: string): Promise<KubeObject[]> {
  const template = await readWaypointTemplate(join(findManifestsDir(), 'waypoint', 'waypoint.yaml'));
  return renderWaypointObjects({ namespace, name, for: 'service', template }) as unknown as KubeObject[];
}

const pod = (name: string, namespace: string, sa: string, ip: string): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels: { app: name } },
  spec: { nodeName: NODE, serviceAccountName: sa, containers: [{ name: 'app', image: 'app' }] },
  status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
});

function seedWorkloads(): void {
  api.put({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
  });
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other' } });
  api.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } });
  for (const sa of ['web', 'waypoint'])
    api.put({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace: 'shop' } });
  api.put({
    ...pod(`hypha-agent-${NODE}`, SYSTEM, 'hypha-agent', '192.168.0.1'),
    spec: {
      nodeName: NODE,
      hostNetwork: true,
      serviceAccountName: 'hypha-agent',
      containers: [{ name: 'agent', image: 'hypha' }],
    },
  });
  api.put(pod('web-1', 'shop', 'web', '10.1.0.10'));
  api.put({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.10', selector: { app: 'web-1' }, ports: [{ name: 'http', port: 80 }] },
  });
  api.put({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.1.0.10'], conditions: { ready: true } }],
    ports: [{ name: 'http', port: 80 }],
  });
  api.put({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'waypoint', namespace: 'shop' },
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  });
  api.put({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'checkout', namespace: 'shop' },
    spec: { parentRefs: [{ name: 'waypoint' }], rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] },
  });
  api.put({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name: 'grpc', namespace: 'shop' },
    spec: { parentRefs: [{ name: 'waypoint' }], rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] },
  });
  api.put({
    apiVersion: 'traffic.hypha.dev/v1alpha1',
    kind: 'TrafficPolicy',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', name: 'web' }], timeout: '5s' },
  });
  api.put({
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-other', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'web-1' } },
      action: 'DENY',
      rules: [{ from: [{ source: { namespaces: ['other'] } }] }],
    },
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-kube-rbac-'));
  api = await createKubeApiServer({ rbac: true, bookmarkIntervalMs: 200 });
  const { objects } = await renderManifests();
  const loaded = loadRbacObjects(api, objects as unknown as KubeObject[]);
  expect(loaded.filter((o) => o.kind === 'ClusterRoleBinding').length).toBeGreaterThanOrEqual(2);
  seedWorkloads();
  loadRbacObjects(api, await waypointObjects('shop', 'waypoint'));

  // CA first, as in a fresh cluster: it creates the root and publishes the trust bundle.
  const caKubeconfig = await api.writeServiceAccountKubeconfig({
    namespace: SYSTEM,
    serviceAccount: 'hypha-ca',
  });
  ca = await createKubeCa({ kubeconfig: caKubeconfig, host: '127.0.0.1', port: 0 });
  const caPort = (await ca.server.start()).port;

  const agentKubeconfig = await api.writeServiceAccountKubeconfig({
    namespace: SYSTEM,
    serviceAccount: 'hypha-agent',
    pod: `hypha-agent-${NODE}`,
  });
  const caToken = join(dir, 'ca-token');
  await writeFile(
    caToken,
    api.issueToken({
      namespace: SYSTEM,
      serviceAccount: 'hypha-agent',
      audiences: ['hypha-ca'],
      pod: `hypha-agent-${NODE}`,
    }),
  );
  const rootFile = join(dir, 'root-cert.pem');
  await writeFile(rootFile, ca.ca.trustBundlePem);
  agent = await startAgent(
    {
      nodeName: NODE,
      source: { kind: 'kubernetes', kubeconfig: agentKubeconfig },
      trustDomain: 'cluster.local',
      ca: { address: `https://127.0.0.1:${caPort}`, tokenFile: caToken, rootFile },
      capture: 'none',
      outboundPolicy: 'passthrough',
      ports: { outbound: 0, inboundPlaintext: 0, hbone: 0 },
      adminAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      readinessAddress: '127.0.0.1:0',
      drainMs: 100,
    },
    createSilentLogger(),
  );

  const waypointKubeconfig = await api.writeServiceAccountKubeconfig({
    namespace: 'shop',
    serviceAccount: 'waypoint',
  });
  waypointSource = createKubeSource({
    kubeconfig: waypointKubeconfig,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  await waypointSource.start();
  reporter = createRouteStatusReporter({
    kubeconfig: waypointKubeconfig,
    state: waypointSource.state,
    waypoint: { namespace: 'shop', name: 'waypoint' },
    debounceMs: 20,
    backoff: { initialMs: 20, maxMs: 200 },
  });
}, 30_000);

afterAll(async () => {
  await reporter?.close();
  await waypointSource?.close();
  await agent?.shutdown('test end');
  await ca?.close(100);
  await api?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const denials = (user?: string) =>
  describeDenials(api.requests.filter((r) => user === undefined || r.user === user));

describe('manifests RBAC against an RBAC-enforcing API server', () => {
  it('CA, agent and waypoint run their main paths as their own ServiceAccounts without one 403', async () => {
    // CA: root Secret created (not found → create), trust bundle in its namespace and in the mesh namespace.
    expect(ca.rootSource).toBe('created');
    expect(api.find('v1', 'Secret', 'hypha-ca-root', SYSTEM)).toBeDefined();
    expect(api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', SYSTEM)).toBeDefined();
    await waitFor('trust bundle in shop', () => api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'shop'));

    // Agent: synced every kind and got the certificate of its local pod (TokenReview + pod lookup by the CA).
    await agent.ready;
    const reviews = api.requests.filter((r) => r.path === '/apis/authentication.k8s.io/v1/tokenreviews');
    expect(reviews.length).toBeGreaterThanOrEqual(1);
    expect(reviews.every((r) => r.user === users.ca && r.authorization?.allowed === true)).toBe(true);
    const agentWatches = new Set(
      api.requests.filter((r) => r.user === users.agent && r.watch).map((r) => r.path),
    );
    expect([...agentWatches].sort()).toEqual(
      [
        '/api/v1/namespaces',
        '/api/v1/pods',
        '/api/v1/services',
        '/apis/discovery.k8s.io/v1/endpointslices',
        '/apis/gateway.networking.k8s.io/v1/gateways',
        '/apis/gateway.networking.k8s.io/v1/grpcroutes',
        '/apis/gateway.networking.k8s.io/v1/httproutes',
        '/apis/security.hypha.dev/v1/authorizationpolicies',
        '/apis/security.hypha.dev/v1/requestauthentications',
        '/apis/security.hypha.dev/v1/peerauthentications',
        '/apis/traffic.hypha.dev/v1alpha1/trafficpolicies',
        '/apis/networking.hypha.dev/v1/serviceentries',
        '/apis/networking.hypha.dev/v1/meshconfigs',
      ].sort(),
    );
    // Waypoint: route status written on the route in its namespace.
    const route = await waitFor('route status', () => {
      const r = api.find('gateway.networking.k8s.io/v1', 'HTTPRoute', 'checkout', 'shop') as
        | { status?: { parents?: { controllerName: string }[] } }
        | undefined;
      return r?.status?.parents?.some((p) => p.controllerName === 'hypha.dev/waypoint') ? r : undefined;
    });
    expect(route).toBeDefined();
    expect(
      api.requests.some(
        (r) =>
          r.user === users.waypoint &&
          r.method === 'PATCH' &&
          r.path === `${GW}/shop/httproutes/checkout/status` &&
          r.status === 200,
      ),
    ).toBe(true);

    // A watch that drops is resumed, and the policy change after it still reaches the agent under RBAC.
    // A stale trust bundle left in a namespace that joins later is rewritten (get + update).
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'late' } });
    api.put({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'hypha-ca-root-cert', namespace: 'late' },
      data: { 'root-cert.pem': 'stale' },
    });
    api.dropWatches();
    api.put({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'late', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    });
    await waitFor('trust bundle rewritten in a namespace that joined later', () => {
      const cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'late') as {
        data?: Record<string, string>;
      };
      return cm.data?.['root-cert.pem'] === ca.ca.trustBundlePem ? cm : undefined;
    });

    for (const user of Object.values(users)) expect(api.requests.some((r) => r.user === user)).toBe(true);
    const denied = denials();
    expect(denied, `denied requests:\n${denied.join('\n')}`).toEqual([]);
    // Every request of the three service accounts went through the authorizer.
    const serviceAccountRequests = api.requests.filter(
      (r) => r.user?.startsWith('system:serviceaccount:') && r.authorization,
    );
    expect(serviceAccountRequests.length).toBeGreaterThan(20);

    // And no more than enough: every write permission the roles hold was used by these flows,
    // except Events (only for the opt-in `reportEvents`, which no daemon enables yet).
    const source = storePolicySource(api.store);
    const unusedWrites = (namespace: string, name: string) =>
      unusedGrants(source, serviceAccountUser(namespace, name), api.requests).filter(
        (g) => !/^(get|list|watch) /.test(g),
      );
    const what = (g: string) => g.split(' (')[0];
    expect(unusedWrites(SYSTEM, 'hypha-agent').map(what)).toEqual(['create events', 'patch events']);
    expect(unusedWrites('shop', 'waypoint').map(what)).toEqual(['create events', 'patch events']);
    expect(unusedWrites(SYSTEM, 'hypha-ca')).toEqual([]);
  });

  it('refuses what the roles do not need: Secrets to the agent, other Secrets to the CA, other namespaces to the waypoint', async () => {
    const as = async (namespace: string, serviceAccount: string) =>
      loadKubeConfig(await api.writeServiceAccountKubeconfig({ namespace, serviceAccount }));
    const status = (p: Promise<unknown>) =>
      p.then(
        () => 200,
        (e: { status?: number; message?: string }) => e.status ?? e.message,
      );
    const from = api.requests.length;
    const agentKc = await as(SYSTEM, 'hypha-agent');
    const caKc = await as(SYSTEM, 'hypha-ca');
    const waypointKc = await as('shop', 'waypoint');
    api.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'db-password', namespace: SYSTEM },
      data: {},
    });

    expect(await status(fetchKube(agentKc, `/api/v1/namespaces/${SYSTEM}/secrets/hypha-ca-root`))).toBe(403);
    expect(await status(fetchKube(agentKc, '/api/v1/secrets'))).toBe(403);
    expect(await status(fetchKube(agentKc, `/api/v1/namespaces/shop/pods/web-1`, { method: 'DELETE' }))).toBe(
      403,
    );
    expect(await status(fetchKube(caKc, `/api/v1/namespaces/${SYSTEM}/secrets/db-password`))).toBe(403);
    expect(
      await status(
        fetchKube(caKc, '/api/v1/namespaces/shop/secrets', {
          method: 'POST',
          body: { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'x' } },
        }),
      ),
    ).toBe(403);
    expect(
      await status(
        fetchKube(waypointKc, `${GW}/other/httproutes/x/status`, {
          method: 'PATCH',
          contentType: 'application/merge-patch+json',
          body: { status: {} },
        }),
      ),
    ).toBe(403);
    expect(
      await status(
        fetchKube(waypointKc, `/apis/authentication.k8s.io/v1/tokenreviews`, {
          method: 'POST',
          body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'x' } },
        }),
      ),
    ).toBe(403);
    const refused = describeDenials(api.requests.slice(from));
    expect(refused).toHaveLength(7);
    expect(refused[0]).toBe(
      `GET /api/v1/namespaces/${SYSTEM}/secrets/hypha-ca-root: User "${users.agent}" cannot get resource "secrets" in API group "" in the namespace "${SYSTEM}"`,
    );
  });
});
