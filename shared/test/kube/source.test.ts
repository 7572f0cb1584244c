// The Kubernetes source against the stand-in API server: what an operator would notice is whether
// the mesh's view of the cluster matches the cluster, after watches break, expire or lag.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Logger } from '@hypha/shared';
import { createKubeSource, type KubeSource } from '@hypha/shared/kube';
import { createKubeApiServer, DEFAULT_API_AUDIENCE, type KubeApiServer, type KubeObject } from '@hypha/test';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

const servers: KubeApiServer[] = [];
const sources: KubeSource[] = [];

afterEach(async () => {
  for (const s of sources.splice(0)) await s.close();
  for (const s of servers.splice(0)) await s.close();
});

async function startServer(options: Parameters<typeof createKubeApiServer>[0] = {}): Promise<KubeApiServer> {
  const server = await createKubeApiServer({ bookmarkIntervalMs: 100, ...options });
  servers.push(server);
  return server;
}

function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream) as unknown as Logger, lines };
}

function source(
  server: KubeApiServer,
  extra: Partial<Parameters<typeof createKubeSource>[0]> = {},
): KubeSource {
  const s = createKubeSource({
    kubeconfig: server.kubeconfigPath,
    backoff: { initialMs: 20, maxMs: 200 },
    ...extra,
  });
  sources.push(s);
  return s;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function namespace(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

function pod(
  ns: string,
  name: string,
  ip: string,
  node = 'node-a',
  labels: Record<string, string> = { app: name },
): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels, managedFields: [{ manager: 'kubectl', operation: 'Update' }] },
    spec: {
      nodeName: node,
      serviceAccountName: name,
      containers: [
        {
          name: 'app',
          image: 'example/app:1',
          env: [{ name: 'SECRET', value: 'x'.repeat(1000) }],
          ports: [{ name: 'http', containerPort: 8080 }],
        },
      ],
    },
    status: {
      phase: 'Running',
      podIP: ip,
      podIPs: [{ ip }],
      conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z' }],
    },
  };
}

function service(ns: string, name: string, vip: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: {
      clusterIP: vip,
      clusterIPs: [vip],
      selector: { app: name },
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
    },
  };
}

function slice(ns: string, svc: string, ips: string[]): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-abc`, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node-a' })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

function denyPolicy(ns: string, name: string, action = 'DENY'): KubeObject {
  return {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: ns },
    spec: {
      selector: { matchLabels: { app: 'web' } },
      action,
      rules: [{ from: [{ source: { namespaces: ['evil'] } }] }],
    },
  };
}

function seed(server: KubeApiServer): void {
  server.put(namespace('shop', { 'hypha.dev/dataplane-mode': 'ambient' }));
  server.put(namespace('plain'));
  server.put(pod('shop', 'web', '10.1.0.10'));
  server.put(pod('shop', 'api', '10.1.0.11', 'node-b'));
  server.put(pod('plain', 'legacy', '10.1.0.20'));
  server.put(service('shop', 'web', '10.96.0.10'));
  server.put(slice('shop', 'web', ['10.1.0.10']));
  server.put(denyPolicy('shop', 'deny-evil'));
}

function listsOf(server: KubeApiServer, path: string): number {
  return server.requests.filter((r) => r.method === 'GET' && !r.watch && r.path === path).length;
}

describe('Kubernetes source', () => {
  it('syncs the whole cluster in one commit before it reports ready', async () => {
    const server = await startServer();
    seed(server);
    const src = source(server);
    expect(src.isReady).toBe(false);
    await src.start();
    expect(src.isReady).toBe(true);
    const { state } = src;
    const web = state.findWorkloadByIp('10.1.0.10');
    expect(web?.name).toBe('web');
    expect(web?.inMesh).toBe(true);
    expect(web?.node).toBe('node-a');
    expect(web?.identity.toString()).toBe('spiffe://cluster.local/ns/shop/sa/web');
    expect(state.findWorkloadByIp('10.1.0.20')?.inMesh).toBe(false);
    expect(state.findWorkloadsOnNode('node-b').map((w) => w.name)).toEqual(['api']);
    expect(state.findServiceByVip('10.96.0.10', 80)?.endpoints.map((e) => e.ip)).toEqual(['10.1.0.10']);
    expect(state.findPoliciesFor(web!).map((p) => p.name)).toContain('deny-evil');
    // The whole first sync is one commit: no reader sees pods before their namespace's label.
    expect(state.version).toBe(1);
    const stats = src.stats();
    expect(stats.every((s) => s.synced && s.lists === 1)).toBe(true);
    expect(stats.find((s) => s.kind === 'Pod')?.objects).toBe(3);
  });

  it('is not ready while one kind cannot be listed, and commits nothing until it can', async () => {
    const server = await startServer();
    seed(server);
    server.injectFailure({
      method: 'GET',
      path: '/authorizationpolicies',
      watch: false,
      status: 503,
      times: 3,
    });
    const { logger, lines } = capturingLogger();
    const src = source(server, { logger });
    void src.start();
    await waitFor(
      'the failing list to be retried',
      () => listsOf(server, '/apis/security.hypha.dev/v1/authorizationpolicies') >= 2,
    );
    expect(src.isReady).toBe(false);
    expect(src.state.version).toBe(0);
    await src.ready;
    expect(src.state.findWorkloadByIp('10.1.0.10')).toBeDefined();
    expect(src.stats().find((s) => s.kind === 'AuthorizationPolicy')?.errors).toBe(3);
    expect(
      lines.some(
        (l) =>
          String(l.msg).includes('AuthorizationPolicy list/watch failed') && String(l.msg).includes('503'),
      ),
    ).toBe(true);
  });

  it('follows adds, changes and deletes, including opt-in by namespace label without touching pods', async () => {
    const server = await startServer();
    seed(server);
    const src = source(server);
    await src.start();
    const { state } = src;

    server.put(pod('shop', 'cart', '10.1.0.12'));
    await waitFor('new pod', () => state.findWorkloadByIp('10.1.0.12')?.inMesh === true);

    server.put(namespace('plain', { 'hypha.dev/dataplane-mode': 'ambient' }));
    await waitFor('opt-in by label', () => state.findWorkloadByIp('10.1.0.20')?.inMesh === true);

    server.put(pod('shop', 'web', '10.1.0.10', 'node-a', { app: 'web', 'hypha.dev/dataplane-mode': 'none' }));
    await waitFor('pod opt-out', () => state.findWorkloadByIp('10.1.0.10')?.inMesh === false);

    server.remove('v1', 'Pod', 'api', 'shop');
    await waitFor('deleted pod', () => state.findWorkloadByIp('10.1.0.11') === undefined);
    server.remove('security.hypha.dev/v1', 'AuthorizationPolicy', 'deny-evil', 'shop');
    await waitFor('deleted policy', () => [...state.authorizationPolicies()].length === 0);
  });

  it('follows waypoints, routes and traffic policies; a Gateway leaving the waypoint class is forgotten', async () => {
    const server = await startServer();
    seed(server);
    const gateway = (className: string): KubeObject => ({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'shop', labels: { 'hypha.dev/waypoint-for': 'service' } },
      spec: { gatewayClassName: className, listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    });
    server.put(gateway('hypha-waypoint'));
    const src = source(server);
    await src.start();
    const { state } = src;
    expect(state.findWaypoint('shop', 'waypoint')?.name).toBe('waypoint');

    server.put({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'web', namespace: 'shop' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'web' }],
        rules: [{ backendRefs: [{ name: 'web', port: 80 }] }],
      },
    });
    server.put({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GRPCRoute',
      metadata: { name: 'api', namespace: 'shop' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'api' }] },
    });
    server.put({
      apiVersion: 'traffic.hypha.dev/v1alpha1',
      kind: 'TrafficPolicy',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { targetRefs: [{ kind: 'Service', name: 'web' }], loadBalancer: { simple: 'LEAST_REQUEST' } },
    });
    await waitFor(
      'routes and traffic policy',
      () =>
        state.findHttpRoutes('shop').length === 1 &&
        state.findGrpcRoutes('shop').length === 1 &&
        state.findTrafficPolicies('shop').length === 1,
    );

    server.put(gateway('some-other-gateway'));
    await waitFor(
      'the re-classed Gateway to be dropped',
      () => state.findWaypoint('shop', 'waypoint') === undefined,
    );
    server.remove('gateway.networking.k8s.io/v1', 'HTTPRoute', 'web', 'shop');
    await waitFor('route deleted', () => state.findHttpRoutes('shop').length === 0);
  });

  it('follows ServiceEntries and the MeshConfig (issue 16): hosts, allocated VIPs, the outbound policy', async () => {
    const server = await startServer();
    seed(server);
    server.put({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'external-api', namespace: 'shop' },
      spec: { hosts: ['api.external.test'], ports: [{ number: 80, name: 'http' }], resolution: 'DNS' },
    });
    const src = source(server);
    await src.start();
    const { state } = src;
    const vip = state.findServiceEntryByHost('api.external.test')?.addresses[0];
    expect(vip).toMatch(/^240\.240\./);
    expect(state.findServiceEntryByAddress(vip!, 80)?.entry.name).toBe('external-api');
    expect(state.findMeshConfig()).toBeUndefined();
    server.put(namespace('hypha-system'));
    server.put({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'MeshConfig',
      metadata: { name: 'default', namespace: 'hypha-system' },
      spec: { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } },
    });
    await waitFor('the MeshConfig', () => state.findMeshConfig()?.outboundTrafficPolicy === 'REGISTRY_ONLY');
    server.remove('networking.hypha.dev/v1', 'ServiceEntry', 'external-api', 'shop');
    await waitFor(
      'the ServiceEntry removed',
      () => state.findServiceEntryByHost('api.external.test') === undefined,
    );
  });

  it('resumes a watch dropped mid-stream from its resourceVersion, without relisting', async () => {
    const server = await startServer();
    seed(server);
    const src = source(server);
    await src.start();
    await server.waitForWatches(9);
    server.dropWatches();
    server.put(pod('shop', 'late', '10.1.0.13'));
    await waitFor('pod created after the drop', () => src.state.findWorkloadByIp('10.1.0.13') !== undefined);
    await server.waitForWatches(9);
    expect(listsOf(server, '/api/v1/pods')).toBe(1);
    const resumed = server.requests.filter((r) => r.watch && r.path === '/api/v1/pods');
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    expect(
      resumed.every((r) => r.query.resourceVersion !== '' && r.query.allowWatchBookmarks === 'true'),
    ).toBe(true);
  });

  it('relists after 410 Gone and reconciles: nothing lost, no ghosts', async () => {
    const server = await startServer();
    seed(server);
    const src = source(server);
    await src.start();
    const { state } = src;
    await server.waitForWatches(9);

    const release = server.holdWatches();
    server.dropWatches();
    // While every agent watch is down: a delete, an add and a change, then etcd compacts.
    server.remove('v1', 'Pod', 'api', 'shop');
    server.put(pod('shop', 'cart', '10.1.0.12'));
    server.put(namespace('plain', { 'hypha.dev/dataplane-mode': 'ambient' }));
    server.remove('security.hypha.dev/v1', 'AuthorizationPolicy', 'deny-evil', 'shop');
    server.compactHistory();
    release();

    await waitFor(
      'reconciled state',
      () =>
        state.findWorkloadByIp('10.1.0.12') !== undefined &&
        state.findWorkloadByIp('10.1.0.11') === undefined,
    );
    await waitFor('namespace change', () => state.findWorkloadByIp('10.1.0.20')?.inMesh === true);
    await waitFor('policy removed', () => [...state.authorizationPolicies()].length === 0);
    const pods = src.stats().find((s) => s.kind === 'Pod');
    expect(pods?.expired).toBeGreaterThanOrEqual(1);
    expect(pods?.lists).toBe(2);
    expect([...state.workloads()].map((w) => w.name).sort()).toEqual(['cart', 'legacy', 'web']);

    // And the relisted informer keeps watching.
    server.put(pod('shop', 'after', '10.1.0.14'));
    await waitFor('pod after the relist', () => state.findWorkloadByIp('10.1.0.14') !== undefined);
  });

  it('applies a relist read in many pages to the state as one update', async () => {
    const server = await startServer();
    seed(server);
    for (let i = 0; i < 8; i++) server.put(pod('shop', `p${i}`, `10.1.1.${i + 1}`));
    const src = source(server, { pageSize: 2 });
    await src.start();
    const { state } = src;
    await server.waitForWatches(9);
    // What every state version showed: p0 (deleted in the gap), q1 and q2 (added in the gap).
    const views = new Set<string>();
    state.onChange(() => {
      const has = (ip: string) => (state.findWorkloadByIp(ip) !== undefined ? '1' : '0');
      views.add(`p0=${has('10.1.1.1')} q1=${has('10.1.1.21')} q2=${has('10.1.1.22')}`);
    });

    const release = server.holdWatches();
    server.dropWatches();
    server.remove('v1', 'Pod', 'p0', 'shop');
    server.put(pod('shop', 'q1', '10.1.1.21'));
    server.put(pod('shop', 'q2', '10.1.1.22'));
    server.compactHistory();
    const listsBefore = server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length;
    release();

    await waitFor('relisted pods', () => src.stats().find((s) => s.kind === 'Pod')?.lists === 2);
    await waitFor('reconciled', () => state.findWorkloadByIp('10.1.1.22') !== undefined);
    const pages = server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length - listsBefore;
    expect(pages).toBeGreaterThanOrEqual(5);
    // Never half a relist: no version with q1 or q2 and p0 still there, or one without the other.
    expect([...views]).toEqual(['p0=0 q1=1 q2=1']);
  });

  it('keeps quiet watches current with bookmarks, so compaction does not force a relist', async () => {
    const withBookmarks = await startServer({ bookmarkIntervalMs: 50 });
    const without = await startServer({ bookmarkIntervalMs: 0 });
    for (const server of [withBookmarks, without]) {
      seed(server);
      const src = source(server, { kinds: [{ kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods' }] });
      await src.start();
      await server.waitForWatches(1);
      // Traffic on a kind this informer does not watch moves the cluster's resourceVersion on.
      for (let i = 0; i < 5; i++) server.put({ ...service('shop', `svc-${i}`, `10.96.1.${i}`) });
    }
    const bookmarked = sources[0]!;
    await waitFor('a bookmark past the service changes', () => {
      const s = bookmarked.stats()[0]!;
      return s.bookmarks > 0 && Number(s.resourceVersion) >= withBookmarks.store.resourceVersion;
    });
    for (const server of [withBookmarks, without]) {
      server.compactHistory();
      server.dropWatches();
      server.put(pod('shop', 'late', '10.1.0.13'));
    }
    for (const src of sources)
      await waitFor('pod after compaction', () => src.state.findWorkloadByIp('10.1.0.13') !== undefined);
    expect(bookmarked.stats()[0]).toMatchObject({ expired: 0, lists: 1 });
    // Without bookmarks the same sequence costs a full relist.
    expect(sources[1]!.stats()[0]).toMatchObject({ expired: 1, lists: 2 });
  });

  it('skips an invalid object with a log line and an Event naming the field, keeping the last good version', async () => {
    const server = await startServer();
    seed(server);
    const { logger, lines } = capturingLogger();
    const src = source(server, { logger, reportEvents: true, nodeName: 'node-a' });
    await src.start();
    const { state } = src;

    server.put(denyPolicy('shop', 'typo', 'DENNY'));
    await waitFor(
      'an Event for the bad policy',
      () => server.store.list(server.store.findType('', 'v1', 'events')!, 'shop').length > 0,
    );
    const event = server.store.list(server.store.findType('', 'v1', 'events')!, 'shop')[0]!;
    expect(event).toMatchObject({
      type: 'Warning',
      reason: 'InvalidConfiguration',
      involvedObject: { kind: 'AuthorizationPolicy', name: 'typo', namespace: 'shop' },
    });
    expect(String(event.message)).toContain('spec.action');
    expect(String(event.message)).toContain('object skipped');
    const logged = lines.find((l) => l.level === 50 && String(l.msg).includes('typo'));
    expect(String(logged?.msg)).toContain('spec.action');
    expect([...state.authorizationPolicies()].map((p) => p.name)).toEqual(['deny-evil']);

    // A valid edit of the existing policy, then a broken one: the valid version stays in force.
    server.put(denyPolicy('shop', 'deny-evil', 'AUDIT'));
    await waitFor('policy edit', () => [...state.authorizationPolicies()].some((p) => p.action === 'AUDIT'));
    server.put(denyPolicy('shop', 'deny-evil', 'BLOCK'));
    await waitFor(
      'second Event',
      () => server.store.list(server.store.findType('', 'v1', 'events')!, 'shop').length === 2,
    );
    expect([...state.authorizationPolicies()].map((p) => [p.name, p.action])).toEqual([
      ['deny-evil', 'AUDIT'],
    ]);
    const second = server.store
      .list(server.store.findType('', 'v1', 'events')!, 'shop')
      .find((e) => (e.involvedObject as { name?: string }).name === 'deny-evil')!;
    expect(String(second.message)).toContain('the previous version stays in force');
    expect(src.errors.map((e) => e.objectName).sort()).toEqual(['deny-evil', 'typo']);
  });

  it('reads large collections page by page', async () => {
    const server = await startServer();
    server.put(namespace('shop', { 'hypha.dev/dataplane-mode': 'ambient' }));
    for (let i = 0; i < 7; i++) server.put(pod('shop', `p${i}`, `10.2.0.${i + 1}`));
    const src = source(server, { pageSize: 3 });
    await src.start();
    expect([...src.state.workloads()]).toHaveLength(7);
    const pages = server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch);
    expect(pages).toHaveLength(3);
    expect(pages[1]?.query.continue).toBeTruthy();
  });

  it('runs in a pod: in-cluster service host, mounted CA and ServiceAccount token', async () => {
    const server = await startServer();
    seed(server);
    const root = await mkdtemp(join(tmpdir(), 'hypha-incluster-'));
    const saDir = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
    await mkdir(saDir, { recursive: true });
    const token = server.issueToken({
      namespace: 'hypha-system',
      serviceAccount: 'hypha-agent',
      audiences: [DEFAULT_API_AUDIENCE],
    });
    await writeFile(join(saDir, 'token'), token);
    await writeFile(join(saDir, 'ca.crt'), server.caPem ?? '');
    await writeFile(join(saDir, 'namespace'), 'hypha-system');
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
    process.env.KUBERNETES_SERVICE_PORT = new URL(server.url).port;
    try {
      const src = source(server, { kubeconfig: { inCluster: true, pathPrefix: root } });
      await src.start();
      expect(src.state.findWorkloadByIp('10.1.0.10')?.name).toBe('web');
      const auth = server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch);
      expect(auth.every((r) => r.status === 200)).toBe(true);
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await rm(root, { recursive: true, force: true });
    }
  });

  it('keeps retrying with backoff while the API refuses its credentials', async () => {
    const server = await startServer();
    seed(server);
    const dir = await mkdtemp(join(tmpdir(), 'hypha-kubeconfig-'));
    const config = JSON.parse(await readFile(server.kubeconfigPath, 'utf8')) as {
      users: Array<{ user: { token: string } }>;
    };
    config.users[0]!.user.token = 'revoked';
    await writeFile(join(dir, 'kubeconfig'), JSON.stringify(config));
    const { logger, lines } = capturingLogger();
    const src = source(server, {
      kubeconfig: join(dir, 'kubeconfig'),
      logger,
      kinds: [{ kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods' }],
    });
    void src.start();
    await waitFor('three refused lists', () => server.requests.filter((r) => r.status === 401).length >= 3);
    expect(src.isReady).toBe(false);
    const failure = lines.find((l) => String(l.msg).includes('401'));
    expect(String(failure?.msg)).toContain('credentials');
    const delays = lines.filter((l) => typeof l.retryInMs === 'number').map((l) => Number(l.retryInMs));
    expect(Math.max(...delays)).toBeGreaterThan(Math.min(...delays));
    await rm(dir, { recursive: true, force: true });
  });

  it('says which kubeconfig failed to load', () => {
    expect(() => createKubeSource({ kubeconfig: '/nonexistent/kubeconfig' })).toThrow(
      /\/nonexistent\/kubeconfig/,
    );
  });
});
