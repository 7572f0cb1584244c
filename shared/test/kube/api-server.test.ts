// The stand-in API server must be honest enough that client-node and kubectl cannot tell it from
// a real one for the verbs Hypha uses. Each test drives it through those real clients.
import { execFile } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createKubeApiServer, DEFAULT_API_AUDIENCE, type KubeApiServer } from '@hypha/test';
import {
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const servers: KubeApiServer[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function setup(options: Parameters<typeof createKubeApiServer>[0] = {}) {
  const server = await createKubeApiServer(options);
  servers.push(server);
  const kc = new KubeConfig();
  kc.loadFromFile(server.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'shop' } } });
  return { server, kc, core };
}

const podBody = (name: string, node = 'node-a', labels: Record<string, string> = { app: name }) => ({
  metadata: { name, labels },
  spec: { nodeName: node, serviceAccountName: 'web', containers: [{ name: 'app', image: 'example/app:1' }] },
});

async function apiError(
  p: Promise<unknown>,
): Promise<{ code: number; status: { reason: string; message: string } }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code: number; body: string };
    return { code: e.code, status: JSON.parse(e.body) };
  }
  throw new Error('expected the API call to fail');
}

interface WatchLine {
  type: string;
  object: { metadata?: { name?: string; resourceVersion?: string }; code?: number; reason?: string };
}

/** Collects watch events until `count` arrived or the stream ended. */
async function collect(
  kc: KubeConfig,
  path: string,
  query: Record<string, string>,
  count: number,
): Promise<WatchLine[]> {
  const events: WatchLine[] = [];
  return new Promise((resolve, reject) => {
    let controller: AbortController | undefined;
    const timer = setTimeout(() => {
      controller?.abort();
      reject(
        new Error(
          `only ${events.length} of ${count} watch events: ${JSON.stringify(events.map((e) => e.type))}`,
        ),
      );
    }, 5000);
    const finish = () => {
      clearTimeout(timer);
      controller?.abort();
      resolve(events);
    };
    new Watch(kc)
      .watch(
        path,
        query,
        (type, object) => {
          events.push({ type, object });
          if (events.length >= count) finish();
        },
        () => finish(),
      )
      .then((c) => {
        controller = c;
      }, reject);
  });
}

describe('stand-in Kubernetes API server', () => {
  it('serves create, get, list with resourceVersion, and refuses what a real server refuses', async () => {
    const { core, server } = await setup();
    const created = await core.createNamespacedPod({ namespace: 'shop', body: podBody('web') });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.status?.phase).toBe('Pending');
    const list = await core.listPodForAllNamespaces();
    expect(list.metadata?.resourceVersion).toBe(String(server.store.resourceVersion));
    expect(list.items.map((p) => p.metadata?.name)).toEqual(['web']);

    const dup = await apiError(core.createNamespacedPod({ namespace: 'shop', body: podBody('web') }));
    expect(dup).toMatchObject({
      code: 409,
      status: { reason: 'AlreadyExists', message: 'pods "web" already exists' },
    });
    const noNs = await apiError(core.createNamespacedPod({ namespace: 'ghost', body: podBody('web') }));
    expect(noNs).toMatchObject({ code: 404, status: { message: 'namespaces "ghost" not found' } });
    const missing = await apiError(core.readNamespacedPod({ namespace: 'shop', name: 'nope' }));
    expect(missing).toMatchObject({ code: 404, status: { reason: 'NotFound' } });
  });

  it('filters lists by label and field selectors, and rejects field selectors the real server does not index', async () => {
    const { core } = await setup();
    await core.createNamespacedPod({
      namespace: 'shop',
      body: podBody('a', 'node-a', { app: 'web', tier: 'front' }),
    });
    await core.createNamespacedPod({ namespace: 'shop', body: podBody('b', 'node-b', { app: 'web' }) });
    await core.createNamespacedPod({ namespace: 'shop', body: podBody('c', 'node-a', { app: 'db' }) });
    const names = async (q: { labelSelector?: string; fieldSelector?: string }) =>
      (await core.listPodForAllNamespaces(q)).items.map((p) => p.metadata?.name).sort();
    expect(await names({ fieldSelector: 'spec.nodeName=node-a' })).toEqual(['a', 'c']);
    expect(await names({ labelSelector: 'app=web,tier' })).toEqual(['a']);
    expect(await names({ labelSelector: 'app in (web, db),!tier' })).toEqual(['b', 'c']);
    expect(await names({ labelSelector: 'app!=web', fieldSelector: 'spec.nodeName=node-a' })).toEqual(['c']);
    const bad = await apiError(core.listPodForAllNamespaces({ fieldSelector: 'spec.containers=x' }));
    expect(bad).toMatchObject({
      code: 400,
      status: { message: 'field label not supported: spec.containers' },
    });
  });

  it('update needs the current resourceVersion (409 otherwise); the status subresource is separate from spec', async () => {
    const { core } = await setup();
    const pod = await core.createNamespacedPod({ namespace: 'shop', body: podBody('web') });
    const stale = { ...pod, metadata: { ...pod.metadata, resourceVersion: '1' } };
    const conflict = await apiError(
      core.replaceNamespacedPod({ namespace: 'shop', name: 'web', body: stale }),
    );
    expect(conflict.code).toBe(409);
    expect(conflict.status.message).toContain('the object has been modified');

    // A status write through the main resource is ignored; through /status it lands.
    const withStatus = { ...pod, status: { phase: 'Running', podIP: '10.1.0.5' } };
    const afterMain = await core.replaceNamespacedPod({ namespace: 'shop', name: 'web', body: withStatus });
    expect(afterMain.status?.podIP).toBeUndefined();
    const patched = await core.patchNamespacedPodStatus(
      {
        namespace: 'shop',
        name: 'web',
        body: { status: { podIP: '10.1.0.5', conditions: [{ type: 'Ready', status: 'True' }] } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(patched.status?.podIP).toBe('10.1.0.5');
    // Strategic merge merges conditions by type instead of replacing the list.
    const merged = await core.patchNamespacedPodStatus(
      {
        namespace: 'shop',
        name: 'web',
        body: { status: { conditions: [{ type: 'PodScheduled', status: 'True' }] } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(merged.status?.conditions?.map((c) => c.type).sort()).toEqual(['PodScheduled', 'Ready']);
    // Labels by JSON patch; a patch carrying a stale resourceVersion conflicts.
    const labelled = await core.patchNamespacedPod(
      {
        namespace: 'shop',
        name: 'web',
        body: [{ op: 'add', path: '/metadata/labels/version', value: 'v2' }],
      },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    );
    expect(labelled.metadata?.labels).toEqual({ app: 'web', version: 'v2' });
    const stalePatch = await apiError(
      core.patchNamespacedPod(
        { namespace: 'shop', name: 'web', body: { metadata: { resourceVersion: '1', labels: { x: 'y' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    expect(stalePatch.code).toBe(409);
  });

  it('custom resources: generation follows spec, status via /status, strategic merge refused with 415', async () => {
    const { kc } = await setup();
    const custom = kc.makeApiClient(CustomObjectsApi);
    const target = {
      group: 'gateway.networking.k8s.io',
      version: 'v1',
      namespace: 'shop',
      plural: 'httproutes',
    };
    const route = {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'web' },
      spec: { parentRefs: [{ name: 'waypoint' }] },
    };
    const created = (await custom.createNamespacedCustomObject({ ...target, body: route })) as {
      metadata: { generation: number };
    };
    expect(created.metadata.generation).toBe(1);
    const status = {
      parents: [
        {
          parentRef: { name: 'waypoint' },
          controllerName: 'hypha.dev/waypoint',
          conditions: [{ type: 'Accepted', status: 'True' }],
        },
      ],
    };
    const withStatus = (await custom.patchNamespacedCustomObjectStatus(
      { ...target, name: 'web', body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as { metadata: { generation: number }; status: unknown };
    expect(withStatus.status).toEqual(status);
    expect(withStatus.metadata.generation).toBe(1);
    const edited = (await custom.patchNamespacedCustomObject(
      { ...target, name: 'web', body: { spec: { hostnames: ['web.shop'] }, status: { parents: [] } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as { metadata: { generation: number }; status: unknown };
    expect(edited.metadata.generation).toBe(2);
    expect(edited.status).toEqual(status);
    const smp = await apiError(
      custom.patchNamespacedCustomObject(
        { ...target, name: 'web', body: { spec: { hostnames: [] } } },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      ),
    );
    expect(smp.code).toBe(415);
  });

  it('watches from a resourceVersion, turns label changes into ADDED/DELETED for selector watches, and sends bookmarks', async () => {
    const { core, kc, server } = await setup({ bookmarkIntervalMs: 50 });
    const from = String(server.store.resourceVersion);
    await core.createNamespacedPod({ namespace: 'shop', body: podBody('web') });
    await core.patchNamespacedPod(
      { namespace: 'shop', name: 'web', body: { metadata: { labels: { app: 'other' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await core.deleteNamespacedPod({ namespace: 'shop', name: 'web' });
    const all = await collect(kc, '/api/v1/namespaces/shop/pods', { resourceVersion: from }, 3);
    expect(all.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    const selected = await collect(
      kc,
      '/api/v1/pods',
      { resourceVersion: from, labelSelector: 'app=web' },
      2,
    );
    // Leaving the selector is a DELETED for that watch; the real delete afterwards is not repeated.
    expect(selected.map((e) => e.type)).toEqual(['ADDED', 'DELETED']);
    const bookmarks = await collect(
      kc,
      '/api/v1/pods',
      { resourceVersion: from, allowWatchBookmarks: 'true' },
      4,
    );
    expect(bookmarks[3]?.type).toBe('BOOKMARK');
    expect(bookmarks[3]?.object.metadata?.resourceVersion).toBe(String(server.store.resourceVersion));
  });

  it('answers a watch from a compacted resourceVersion with the API server’s 410 Expired event', async () => {
    const { core, kc, server } = await setup();
    const from = String(server.store.resourceVersion);
    await core.createNamespacedPod({ namespace: 'shop', body: podBody('web') });
    server.compactHistory();
    const events = await collect(kc, '/api/v1/pods', { resourceVersion: from }, 1);
    expect(events[0]).toMatchObject({
      type: 'ERROR',
      object: { kind: 'Status', code: 410, reason: 'Expired' },
    });
    // A fresh list gives a version to resume from.
    const list = await core.listPodForAllNamespaces();
    await core.createNamespacedPod({ namespace: 'shop', body: podBody('api') });
    const resumed = await collect(
      kc,
      '/api/v1/pods',
      { resourceVersion: list.metadata?.resourceVersion ?? '' },
      1,
    );
    expect(resumed[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'api' } } });
  });

  it('TokenReview: audiences, pod and node claims, and refusal once the bound pod is gone', async () => {
    const { core, kc, server } = await setup();
    await core.createNamespacedServiceAccount({ namespace: 'shop', body: { metadata: { name: 'web' } } });
    const pod = await core.createNamespacedPod({ namespace: 'shop', body: podBody('web', 'node-7') });
    const token = server.issueToken({
      namespace: 'shop',
      serviceAccount: 'web',
      audiences: ['hypha-ca'],
      pod: 'web',
    });
    const auth = kc.makeApiClient(AuthenticationV1Api);
    const review = (t: string, audiences?: string[]) =>
      auth.createTokenReview({ body: { spec: { token: t, ...(audiences ? { audiences } : {}) } } });

    const ok = await review(token, ['hypha-ca']);
    expect(ok.status?.authenticated).toBe(true);
    expect(ok.status?.user?.username).toBe('system:serviceaccount:shop:web');
    expect(ok.status?.audiences).toEqual(['hypha-ca']);
    expect(ok.status?.user?.extra?.['authentication.kubernetes.io/node-name']).toEqual(['node-7']);
    expect(ok.status?.user?.extra?.['authentication.kubernetes.io/pod-name']).toEqual(['web']);
    expect(ok.status?.user?.extra?.['authentication.kubernetes.io/pod-uid']).toEqual([pod.metadata?.uid]);
    // The JWT payload carries the same claims, as a real projected token does.
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<
      string,
      unknown
    >;
    expect(claims['kubernetes.io']).toMatchObject({
      namespace: 'shop',
      pod: { name: 'web' },
      node: { name: 'node-7' },
    });

    const wrongAudience = await review(token);
    expect(wrongAudience.status?.authenticated).toBeFalsy();
    expect(wrongAudience.status?.error).toContain(
      'token audiences ["hypha-ca"] is invalid for the target audiences',
    );
    expect((await review('not-a-token', ['hypha-ca'])).status?.authenticated).toBeFalsy();

    await core.deleteNamespacedPod({ namespace: 'shop', name: 'web' });
    const gone = await review(token, ['hypha-ca']);
    expect(gone.status?.authenticated).toBeFalsy();
    expect(gone.status?.error).toContain('pods "web" not found');

    // TokenRequest through the API issues tokens the same review accepts.
    const requested = await core.createNamespacedServiceAccountToken({
      namespace: 'shop',
      name: 'web',
      body: { spec: { audiences: ['hypha-ca'], expirationSeconds: 600 } },
    });
    expect((await review(requested.status?.token ?? '', ['hypha-ca'])).status?.authenticated).toBe(true);
  });

  it('refuses requests without valid credentials, and fails on demand for failure tests', async () => {
    const { core, server } = await setup();
    const status = (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = httpsRequest(
          `${server.url}/api/v1/pods`,
          { ca: server.caPem, headers: { authorization: `Bearer ${token}` } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect(await status('wrong')).toBe(401);
    expect(await status(server.adminToken)).toBe(200);
    // A ServiceAccount token is an API credential only for the API server's audience.
    const sa = { namespace: 'shop', serviceAccount: 'web' };
    expect(await status(server.issueToken({ ...sa, audiences: ['hypha-ca'] }))).toBe(401);
    expect(await status(server.issueToken({ ...sa, audiences: [DEFAULT_API_AUDIENCE] }))).toBe(200);
    server.injectFailure({ method: 'GET', path: '/api/v1/pods', status: 503, times: 1 });
    const failed = await apiError(core.listPodForAllNamespaces());
    expect(failed).toMatchObject({ code: 503, status: { reason: 'ServiceUnavailable' } });
    expect((await core.listPodForAllNamespaces()).items).toEqual([]);
  });

  it('deleting an object with finalizers marks it, and removing the last finalizer deletes it', async () => {
    const { core } = await setup();
    await core.createNamespacedConfigMap({
      namespace: 'shop',
      body: { metadata: { name: 'held', finalizers: ['hypha.dev/cleanup'] } },
    });
    await core.deleteNamespacedConfigMap({ namespace: 'shop', name: 'held' });
    const marked = await core.readNamespacedConfigMap({ namespace: 'shop', name: 'held' });
    expect(marked.metadata?.deletionTimestamp).toBeDefined();
    await core.patchNamespacedConfigMap(
      { namespace: 'shop', name: 'held', body: { metadata: { finalizers: null } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect((await apiError(core.readNamespacedConfigMap({ namespace: 'shop', name: 'held' }))).code).toBe(
      404,
    );
  });

  it('kubectl works against it: get, label, apply, delete', async () => {
    const { server } = await setup();
    const kubectl = async (...args: string[]) =>
      (await run('kubectl', ['--kubeconfig', server.kubeconfigPath, ...args], { timeout: 20_000 })).stdout;
    await kubectl('label', 'ns', 'shop', 'hypha.dev/dataplane-mode=ambient');
    expect(server.find('v1', 'Namespace', 'shop')?.metadata.labels).toMatchObject({
      'hypha.dev/dataplane-mode': 'ambient',
    });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'hypha-system' } });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'payments' } });
    const examples = join(
      import.meta.dirname,
      '..',
      '..',
      '..',
      'manifests',
      'examples',
      'authorization-policies.yaml',
    );
    const applied = await kubectl('apply', '--validate=false', '-f', examples);
    expect(applied).toContain('authorizationpolicy.security.hypha.dev/checkout-from-frontend created');
    expect(await kubectl('get', 'ap', '-A', '-o', 'name')).toContain(
      'authorizationpolicy.security.hypha.dev/deny-foreign',
    );
    // A second apply is a no-op patch, as against a real server.
    expect(await kubectl('apply', '--validate=false', '-f', examples)).toContain(
      'checkout-from-frontend unchanged',
    );
    server.put({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { nodeName: 'n1' },
      status: { podIP: '10.1.0.9' },
    });
    expect(await kubectl('get', 'pods', '-n', 'shop', '-o', 'jsonpath={.items[0].status.podIP}')).toBe(
      '10.1.0.9',
    );
    await kubectl('delete', 'pod', '-n', 'shop', 'web');
    expect(server.find('v1', 'Pod', 'web', 'shop')).toBeUndefined();
  });
});
