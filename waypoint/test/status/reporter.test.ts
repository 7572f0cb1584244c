// The route status reporter against the stand-in API server: what a user sees with
// `kubectl get httproute -o yaml` after creating a route, breaking its backend and moving it away.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createKubeSource, fetchKube, type KubeSource, loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import {
  createRouteStatusReporter,
  type RouteCondition,
  type RouteParentStatus,
  type RouteStatusReporter,
} from '../../src/index.js';

const run = promisify(execFile);
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const GW_API = '/apis/gateway.networking.k8s.io/v1/namespaces';

interface LiveRoute {
  metadata: { generation: number; resourceVersion: string };
  status?: { parents?: RouteParentStatus[] };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for: ${what}${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function cond(p: RouteParentStatus | undefined, type: string): RouteCondition | undefined {
  return p?.conditions.find((c) => c.type === type);
}

it('writes Accepted/ResolvedRefs to the route, flips them when a backend breaks, and keeps others’ entries', async () => {
  const server: KubeApiServer = await createKubeApiServer({ bookmarkIntervalMs: 100 });
  cleanups.push(() => server.close());
  const kc = loadKubeConfig(server.kubeconfigPath);
  const api = (path: string, method = 'GET', body?: unknown, contentType?: string) =>
    fetchKube(kc, path, {
      method,
      ...(body !== undefined ? { body } : {}),
      ...(contentType ? { contentType } : {}),
    });

  await api('/api/v1/namespaces', 'POST', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'shop' },
  });
  await api(`${GW_API}/shop/gateways`, 'POST', {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'shop-waypoint', namespace: 'shop' },
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  });
  await api('/api/v1/namespaces/shop/services', 'POST', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'echo', namespace: 'shop', labels: { 'hypha.dev/use-waypoint': 'shop-waypoint' } },
    spec: { clusterIP: '10.96.0.20', selector: { app: 'echo' }, ports: [{ name: 'http', port: 80 }] },
  });
  const routePath = `${GW_API}/shop/httproutes/checkout`;
  await api(`${GW_API}/shop/httproutes`, 'POST', {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'checkout', namespace: 'shop' },
    spec: {
      parentRefs: [{ name: 'edge', namespace: 'infra' }, { name: 'shop-waypoint' }],
      rules: [{ backendRefs: [{ name: 'echo', port: 80 }] }],
    },
  });
  // Another controller already reported on its own parent.
  const foreign: RouteParentStatus = {
    parentRef: { name: 'edge', namespace: 'infra' },
    controllerName: 'example.com/edge-controller',
    conditions: [
      {
        type: 'Accepted',
        status: 'True',
        reason: 'Accepted',
        message: 'fine',
        observedGeneration: 1,
        lastTransitionTime: '2025-05-05T05:05:05Z',
      },
    ],
  };
  await api(
    `${routePath}/status`,
    'PATCH',
    { status: { parents: [foreign] } },
    'application/merge-patch+json',
  );

  const source: KubeSource = createKubeSource({
    kubeconfig: server.kubeconfigPath,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  cleanups.push(() => source.close());
  await source.start();

  // The first status write fails with a 500 and then a 409: the reporter retries both.
  server.injectFailure({ method: 'PATCH', path: '/httproutes/checkout/status', status: 500, times: 1 });
  server.injectFailure({ method: 'PATCH', path: '/httproutes/checkout/status', status: 409, times: 1 });
  const reporter: RouteStatusReporter = createRouteStatusReporter({
    kubeconfig: server.kubeconfigPath,
    state: source.state,
    waypoint: { namespace: 'shop', name: 'shop-waypoint' },
    debounceMs: 20,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  cleanups.push(() => reporter.close());

  const first = await waitFor('Accepted and ResolvedRefs True', async () => {
    const r = (await api(routePath)) as LiveRoute;
    const ours = r.status?.parents?.find((p) => p.controllerName === 'hypha.dev/waypoint');
    return cond(ours, 'ResolvedRefs')?.status === 'True' ? r : undefined;
  });
  expect(reporter.stats.conflicts).toBeGreaterThanOrEqual(1);
  expect(first.status?.parents).toHaveLength(2);
  expect(first.status?.parents?.[0]).toEqual(foreign);
  const ours1 = first.status?.parents?.[1];
  expect(ours1?.parentRef).toEqual({ name: 'shop-waypoint' });
  expect(cond(ours1, 'Accepted')).toMatchObject({
    status: 'True',
    reason: 'Accepted',
    observedGeneration: first.metadata.generation,
  });
  await reporter.whenIdle();
  const patchesSettled = reporter.stats.patches;

  // Unrelated churn in the state writes nothing: the live status already says the same.
  await api('/api/v1/namespaces/shop/services', 'POST', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'unrelated', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.21', ports: [{ port: 80 }] },
  });
  await waitFor('unrelated service seen', async () =>
    source.state.findServiceByName('shop', 'unrelated') ? true : undefined,
  );
  await new Promise((r) => setTimeout(r, 100));
  await reporter.whenIdle();
  expect(reporter.stats.patches).toBe(patchesSettled);

  // Transition times have one-second precision: let a second pass so a flip is visible.
  await new Promise((r) => setTimeout(r, 1100));
  await api(
    routePath,
    'PATCH',
    { spec: { rules: [{ backendRefs: [{ name: 'echo-v2', port: 80 }] }] } },
    'application/merge-patch+json',
  );
  const broken = await waitFor('ResolvedRefs False', async () => {
    const r = (await api(routePath)) as LiveRoute;
    const ours = r.status?.parents?.find((p) => p.controllerName === 'hypha.dev/waypoint');
    return cond(ours, 'ResolvedRefs')?.status === 'False' ? r : undefined;
  });
  expect(broken.metadata.generation).toBe(first.metadata.generation + 1);
  const ours2 = broken.status?.parents?.[1];
  expect(broken.status?.parents?.[0]).toEqual(foreign);
  expect(cond(ours2, 'ResolvedRefs')).toMatchObject({
    reason: 'BackendNotFound',
    observedGeneration: broken.metadata.generation,
  });
  expect(cond(ours2, 'ResolvedRefs')?.message).toContain('Service shop/echo-v2 not found');
  expect(cond(ours2, 'ResolvedRefs')?.lastTransitionTime).not.toBe(
    cond(ours1, 'ResolvedRefs')?.lastTransitionTime,
  );
  // Accepted held: same time, newer generation.
  expect(cond(ours2, 'Accepted')).toMatchObject({
    status: 'True',
    lastTransitionTime: cond(ours1, 'Accepted')?.lastTransitionTime,
    observedGeneration: broken.metadata.generation,
  });

  // What the user runs.
  const { stdout } = await run('kubectl', [
    '--kubeconfig',
    server.kubeconfigPath,
    'get',
    'httproute',
    'checkout',
    '-n',
    'shop',
    '-o',
    'yaml',
  ]);
  expect(stdout).toContain('reason: BackendNotFound');
  expect(stdout).toContain('controllerName: hypha.dev/waypoint');
  expect(stdout).toContain('controllerName: example.com/edge-controller');

  // The route moves away from the waypoint: our entry goes, the other controller's stays.
  await api(
    routePath,
    'PATCH',
    { spec: { parentRefs: [{ name: 'edge', namespace: 'infra' }] } },
    'application/merge-patch+json',
  );
  const detached = await waitFor('our entry removed', async () => {
    const r = (await api(routePath)) as LiveRoute;
    return r.status?.parents?.length === 1 ? r : undefined;
  });
  expect(detached.status?.parents).toEqual([foreign]);
}, 30_000);

it('warns once on a refused write (RBAC) instead of retrying, and writes after the route changes', async () => {
  const server: KubeApiServer = await createKubeApiServer({ bookmarkIntervalMs: 100 });
  cleanups.push(() => server.close());
  const kc = loadKubeConfig(server.kubeconfigPath);
  const post = (path: string, body: unknown) => fetchKube(kc, path, { method: 'POST', body });
  await post('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'blog' } });
  await post(`${GW_API}/blog/gateways`, {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'wp', namespace: 'blog' },
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  });
  await post(`${GW_API}/blog/httproutes`, {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'posts', namespace: 'blog' },
    spec: { parentRefs: [{ name: 'wp' }], rules: [{ backendRefs: [{ name: 'nowhere', port: 80 }] }] },
  });
  const source = createKubeSource({
    kubeconfig: server.kubeconfigPath,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  cleanups.push(() => source.close());
  await source.start();

  server.injectFailure({ method: 'PATCH', path: '/httproutes/posts/status', status: 403, times: 1 });
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const reporter = createRouteStatusReporter({
    kubeconfig: server.kubeconfigPath,
    state: source.state,
    waypoint: { namespace: 'blog', name: 'wp' },
    logger,
    debounceMs: 20,
    backoff: { initialMs: 20, maxMs: 100 },
  });
  cleanups.push(() => reporter.close());
  await waitFor('the refused write', async () => (reporter.stats.failures === 1 ? true : undefined));
  await new Promise((r) => setTimeout(r, 400)); // several retry periods
  const patches = () =>
    server.requests.filter((q) => q.method === 'PATCH' && q.path.endsWith('/httproutes/posts/status')).length;
  expect(patches()).toBe(1);
  expect(lines.join('\n')).toContain('grant the waypoint ServiceAccount get and patch on httproutes/status');

  // The user edits the route (e.g. after fixing RBAC): the status is written.
  await fetchKube(kc, `${GW_API}/blog/httproutes/posts`, {
    method: 'PATCH',
    contentType: 'application/merge-patch+json',
    body: { spec: { rules: [{ backendRefs: [{ name: 'still-nowhere', port: 80 }] }] } },
  });
  const live = await waitFor('status written', async () => {
    const r = (await fetchKube(kc, `${GW_API}/blog/httproutes/posts`)) as LiveRoute;
    return r.status?.parents?.length === 1 ? r : undefined;
  });
  expect(cond(live.status?.parents?.[0], 'ResolvedRefs')?.message).toContain(
    'Service blog/still-nowhere not found',
  );
}, 20_000);
