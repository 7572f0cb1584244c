// RBAC in the stand-in API server: the semantics of the real authorizer (verbs, groups,
// subresources, resourceNames, RoleBinding scoping, group subjects) and a 403 that client-node and
// kubectl surface exactly as a real cluster's.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  createKubeApiServer,
  type KubeApiServer,
  type KubeObject,
  type ResourceAttributes,
  ruleAllows,
  serviceAccountUser,
  storePolicySource,
  unusedGrants,
} from '@hypha/test';
import { CoreV1Api, CustomObjectsApi, KubeConfig, Watch } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const servers: KubeApiServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

const RBAC = 'rbac.authorization.k8s.io/v1';
const role = (kind: 'Role' | 'ClusterRole', name: string, rules: unknown[], namespace?: string) =>
  ({ apiVersion: RBAC, kind, metadata: { name, ...(namespace ? { namespace } : {}) }, rules }) as KubeObject;
const binding = (
  kind: 'RoleBinding' | 'ClusterRoleBinding',
  name: string,
  roleRef: { kind: 'Role' | 'ClusterRole'; name: string },
  subjects: unknown[],
  namespace?: string,
) =>
  ({
    apiVersion: RBAC,
    kind,
    metadata: { name, ...(namespace ? { namespace } : {}) },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', ...roleRef },
    subjects,
  }) as KubeObject;
const sa = (name: string, namespace: string) => ({ kind: 'ServiceAccount', name, namespace });

/** A server with RBAC on, namespaces shop and other, and a client for shop/reader. */
async function setup(objects: KubeObject[], who = { namespace: 'shop', serviceAccount: 'reader' }) {
  const server = await createKubeApiServer({ rbac: true });
  servers.push(server);
  for (const ns of ['shop', 'other'])
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  server.put({
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: who.serviceAccount, namespace: who.namespace },
  });
  for (const o of objects) server.put(o);
  const kc = new KubeConfig();
  kc.loadFromFile(await server.writeServiceAccountKubeconfig(who));
  const admin = new KubeConfig();
  admin.loadFromFile(server.kubeconfigPath);
  return { server, kc, core: kc.makeApiClient(CoreV1Api), adminCore: admin.makeApiClient(CoreV1Api) };
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { code: number }).code;
  }
}

const attrs = (a: Partial<ResourceAttributes>): ResourceAttributes => ({
  verb: 'get',
  group: '',
  resource: 'pods',
  ...a,
});

describe('RBAC rule matching', () => {
  it('matches verbs, groups and resources, with * wildcards', () => {
    const rule = { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] };
    expect(ruleAllows(rule, attrs({}))).toBe(true);
    expect(ruleAllows(rule, attrs({ verb: 'list' }))).toBe(true);
    for (const verb of ['watch', 'create', 'update', 'patch', 'delete', 'deletecollection'] as const)
      expect(ruleAllows(rule, attrs({ verb })), verb).toBe(false);
    expect(ruleAllows(rule, attrs({ group: 'apps' }))).toBe(false);
    expect(ruleAllows(rule, attrs({ resource: 'services' }))).toBe(false);
    expect(ruleAllows({ apiGroups: ['*'], resources: ['*'], verbs: ['*'] }, attrs({ verb: 'delete' }))).toBe(
      true,
    );
  });

  it('matches a subresource only as resource/subresource or */subresource', () => {
    const main = { apiGroups: [''], resources: ['pods'], verbs: ['*'] };
    expect(ruleAllows(main, attrs({ verb: 'patch', subresource: 'status' }))).toBe(false);
    const sub = { apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] };
    expect(ruleAllows(sub, attrs({ verb: 'patch', subresource: 'status' }))).toBe(true);
    expect(ruleAllows(sub, attrs({ verb: 'patch' }))).toBe(false);
    const any = { apiGroups: [''], resources: ['*/status'], verbs: ['patch'] };
    expect(ruleAllows(any, attrs({ verb: 'patch', resource: 'services', subresource: 'status' }))).toBe(true);
  });

  it('applies resourceNames only to requests that name an object', () => {
    const rule = { apiGroups: [''], resources: ['configmaps'], resourceNames: ['a'], verbs: ['*'] };
    const cm = (a: Partial<ResourceAttributes>) => attrs({ resource: 'configmaps', ...a });
    expect(ruleAllows(rule, cm({ name: 'a' }))).toBe(true);
    expect(ruleAllows(rule, cm({ name: 'b' }))).toBe(false);
    // create and an unfiltered list carry no name: a named rule never grants them.
    expect(ruleAllows(rule, cm({ verb: 'create' }))).toBe(false);
    expect(ruleAllows(rule, cm({ verb: 'list' }))).toBe(false);
    expect(ruleAllows(rule, cm({ verb: 'deletecollection' }))).toBe(false);
  });
});

describe('RBAC in the stand-in API server', () => {
  it('answers a denied list with the real 403 Status, and client-node surfaces it', async () => {
    const { core, server } = await setup([]);
    let caught: { code?: number; body?: string } | undefined;
    try {
      await core.listPodForAllNamespaces();
    } catch (err) {
      caught = err as typeof caught;
    }
    expect(caught?.code).toBe(403);
    expect(JSON.parse(caught?.body ?? '{}')).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message:
        'pods is forbidden: User "system:serviceaccount:shop:reader" cannot list resource "pods" in API group "" at the cluster scope',
      reason: 'Forbidden',
      details: { kind: 'pods' },
      code: 403,
    });
    const last = server.requests.at(-1);
    expect(last).toMatchObject({
      path: '/api/v1/pods',
      status: 403,
      user: 'system:serviceaccount:shop:reader',
      authorization: { allowed: false, attributes: { verb: 'list', resource: 'pods' } },
    });
  });

  it('names the object, group and namespace in a namespaced denial', async () => {
    const { kc } = await setup([]);
    const custom = kc.makeApiClient(CustomObjectsApi);
    let body: { message?: string; details?: unknown } = {};
    try {
      await custom.patchNamespacedCustomObjectStatus({
        group: 'gateway.networking.k8s.io',
        version: 'v1',
        namespace: 'shop',
        plural: 'httproutes',
        name: 'checkout',
        body: { status: {} },
      });
    } catch (err) {
      body = JSON.parse((err as { body: string }).body);
    }
    expect(body.message).toBe(
      'httproutes.gateway.networking.k8s.io "checkout" is forbidden: User "system:serviceaccount:shop:reader" cannot patch resource "httproutes/status" in API group "gateway.networking.k8s.io" in the namespace "shop"',
    );
    expect(body.details).toEqual({
      name: 'checkout',
      group: 'gateway.networking.k8s.io',
      kind: 'httproutes',
    });
  });

  it('a RoleBinding to a ClusterRole grants only in its namespace; a ClusterRoleBinding grants everywhere', async () => {
    const { core, server } = await setup([
      role('ClusterRole', 'pod-reader', [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }]),
      binding(
        'RoleBinding',
        'read-pods',
        { kind: 'ClusterRole', name: 'pod-reader' },
        [sa('reader', 'shop')],
        'shop',
      ),
    ]);
    expect(await statusOf(core.listNamespacedPod({ namespace: 'shop' }))).toBe(200);
    expect(await statusOf(core.listNamespacedPod({ namespace: 'other' }))).toBe(403);
    expect(await statusOf(core.listPodForAllNamespaces())).toBe(403);
    // Not granted: other verbs and other resources in the same namespace.
    expect(await statusOf(core.listNamespacedService({ namespace: 'shop' }))).toBe(403);
    expect(
      await statusOf(
        core.createNamespacedPod({
          namespace: 'shop',
          body: { metadata: { name: 'x' }, spec: { containers: [{ name: 'a', image: 'a' }] } },
        }),
      ),
    ).toBe(403);

    server.put(
      binding('ClusterRoleBinding', 'read-all', { kind: 'ClusterRole', name: 'pod-reader' }, [
        sa('reader', 'shop'),
      ]),
    );
    expect(await statusOf(core.listPodForAllNamespaces())).toBe(200);
    expect(await statusOf(core.listNamespacedPod({ namespace: 'other' }))).toBe(200);
    // Bindings are read per request: removing one takes effect at once.
    server.remove(RBAC, 'ClusterRoleBinding', 'read-all');
    expect(await statusOf(core.listNamespacedPod({ namespace: 'other' }))).toBe(403);
  });

  it('a Role binds only in its own namespace, and a binding to a missing role grants nothing', async () => {
    const { core } = await setup([
      role('Role', 'cm', [{ apiGroups: [''], resources: ['configmaps'], verbs: ['list'] }], 'shop'),
      binding('RoleBinding', 'cm', { kind: 'Role', name: 'cm' }, [sa('reader', 'shop')], 'shop'),
      binding('RoleBinding', 'cm', { kind: 'Role', name: 'cm' }, [sa('reader', 'shop')], 'other'),
    ]);
    expect(await statusOf(core.listNamespacedConfigMap({ namespace: 'shop' }))).toBe(200);
    expect(await statusOf(core.listNamespacedConfigMap({ namespace: 'other' }))).toBe(403);
  });

  it('resourceNames limit get/update to named objects; list needs a metadata.name field selector', async () => {
    const { core, adminCore } = await setup([
      role(
        'Role',
        'one-cm',
        [
          {
            apiGroups: [''],
            resources: ['configmaps'],
            resourceNames: ['mine'],
            verbs: ['get', 'list', 'watch', 'update'],
          },
          { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
        ],
        'shop',
      ),
      binding('RoleBinding', 'one-cm', { kind: 'Role', name: 'one-cm' }, [sa('reader', 'shop')], 'shop'),
    ]);
    await adminCore.createNamespacedConfigMap({ namespace: 'shop', body: { metadata: { name: 'theirs' } } });
    expect(
      await statusOf(
        core.createNamespacedConfigMap({ namespace: 'shop', body: { metadata: { name: 'mine' } } }),
      ),
    ).toBe(200);
    expect(await statusOf(core.readNamespacedConfigMap({ namespace: 'shop', name: 'mine' }))).toBe(200);
    expect(await statusOf(core.readNamespacedConfigMap({ namespace: 'shop', name: 'theirs' }))).toBe(403);
    expect(
      await statusOf(
        core.replaceNamespacedConfigMap({
          namespace: 'shop',
          name: 'mine',
          body: { metadata: { name: 'mine' }, data: { a: 'b' } },
        }),
      ),
    ).toBe(200);
    expect(await statusOf(core.deleteNamespacedConfigMap({ namespace: 'shop', name: 'mine' }))).toBe(403);
    expect(await statusOf(core.listNamespacedConfigMap({ namespace: 'shop' }))).toBe(403);
    const listed = await core.listNamespacedConfigMap({
      namespace: 'shop',
      fieldSelector: 'metadata.name=mine',
    });
    expect(listed.items.map((c) => c.metadata?.name)).toEqual(['mine']);
  });

  it('grants to Group subjects (every service account; one namespace) and ServiceAccount subjects without namespace', async () => {
    const { core } = await setup([
      role('ClusterRole', 'ns-reader', [{ apiGroups: [''], resources: ['namespaces'], verbs: ['list'] }]),
      binding('ClusterRoleBinding', 'all-sa', { kind: 'ClusterRole', name: 'ns-reader' }, [
        { kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: 'system:serviceaccounts' },
      ]),
      role('ClusterRole', 'svc-reader', [{ apiGroups: [''], resources: ['services'], verbs: ['list'] }]),
      binding(
        'RoleBinding',
        'shop-sas',
        { kind: 'ClusterRole', name: 'svc-reader' },
        [{ kind: 'Group', name: 'system:serviceaccounts:other' }],
        'shop',
      ),
      role('ClusterRole', 'sa-reader', [
        { apiGroups: [''], resources: ['serviceaccounts'], verbs: ['list'] },
      ]),
      binding(
        'RoleBinding',
        'local-sa',
        { kind: 'ClusterRole', name: 'sa-reader' },
        [{ kind: 'ServiceAccount', name: 'reader' }],
        'shop',
      ),
    ]);
    expect(await statusOf(core.listNamespace())).toBe(200);
    // The group of another namespace's service accounts does not include shop/reader.
    expect(await statusOf(core.listNamespacedService({ namespace: 'shop' }))).toBe(403);
    expect(await statusOf(core.listNamespacedServiceAccount({ namespace: 'shop' }))).toBe(200);
  });

  it('guards watches, TokenReview and TokenRequest like any resource; the admin and discovery stay open', async () => {
    const { server, kc, core, adminCore } = await setup([
      role('ClusterRole', 'watcher', [{ apiGroups: [''], resources: ['pods'], verbs: ['list'] }]),
      binding('ClusterRoleBinding', 'watcher', { kind: 'ClusterRole', name: 'watcher' }, [
        sa('reader', 'shop'),
      ]),
    ]);
    // list without watch: a watch is refused with a 403 before any event.
    expect(await statusOf(core.listPodForAllNamespaces())).toBe(200);
    const watchErr = await new Promise<unknown>((resolve) => {
      new Watch(kc).watch('/api/v1/pods', {}, () => {}, resolve).then(() => undefined, resolve);
    });
    expect(String(watchErr)).toMatch(/403|Forbidden/);
    expect(server.requests.find((r) => r.watch)?.authorization?.attributes.verb).toBe('watch');

    const review = await run('curl', [
      '-sk',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-H',
      `Authorization: Bearer ${(kc.getCurrentUser() as { token: string }).token}`,
      '-H',
      'Content-Type: application/json',
      '-d',
      '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"x"}}',
      `${server.url}/apis/authentication.k8s.io/v1/tokenreviews`,
    ]);
    expect(review.stdout).toBe('403');
    expect(
      await statusOf(
        core.createNamespacedServiceAccountToken({
          namespace: 'shop',
          name: 'reader',
          body: { spec: { audiences: ['x'] } },
        }),
      ),
    ).toBe(403);
    expect(server.requests.at(-1)?.authorization?.attributes).toMatchObject({
      verb: 'create',
      resource: 'serviceaccounts',
      subresource: 'token',
      name: 'reader',
    });
    // Discovery is open to any authenticated user; the admin token is never checked.
    const discovery = kc.makeApiClient(CoreV1Api);
    expect(await statusOf(discovery.getAPIResources())).toBe(200);
    expect(await statusOf(adminCore.listSecretForAllNamespaces())).toBe(200);
  });

  it('lists the grants no request needed, scoped as the bindings scope them', async () => {
    const { core, server } = await setup([
      role('ClusterRole', 'cm', [
        { apiGroups: [''], resources: ['configmaps'], verbs: ['list', 'delete'] },
        { apiGroups: [''], resources: ['configmaps'], resourceNames: ['one'], verbs: ['get'] },
      ]),
      binding('RoleBinding', 'cm', { kind: 'ClusterRole', name: 'cm' }, [sa('reader', 'shop')], 'shop'),
    ]);
    await core.listNamespacedConfigMap({ namespace: 'shop' });
    // Denied requests use nothing: the same verb in another namespace leaves `list` unused there only.
    expect(await statusOf(core.readNamespacedConfigMap({ namespace: 'other', name: 'one' }))).toBe(403);
    expect(
      unusedGrants(storePolicySource(server.store), serviceAccountUser('shop', 'reader'), server.requests),
    ).toEqual([
      'delete configmaps in shop (ClusterRole cm via RoleBinding shop/cm)',
      'get configmaps/one in shop (ClusterRole cm via RoleBinding shop/cm)',
    ]);
  });

  it('kubectl reports a denial as a real cluster does', async () => {
    const { server } = await setup([]);
    const path = await server.writeServiceAccountKubeconfig({ namespace: 'shop', serviceAccount: 'reader' });
    const out = await run('kubectl', ['--kubeconfig', path, 'get', 'secrets', '-n', 'shop']).then(
      () => '',
      (e: { stderr: string }) => e.stderr,
    );
    expect(out).toContain(
      'secrets is forbidden: User "system:serviceaccount:shop:reader" cannot list resource "secrets" in API group "" in the namespace "shop"',
    );
  });

  it('is off by default: any authenticated caller may do anything', async () => {
    const server = await createKubeApiServer();
    servers.push(server);
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    server.put({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: 'shop' } });
    const kc = new KubeConfig();
    kc.loadFromFile(
      await server.writeServiceAccountKubeconfig({ namespace: 'shop', serviceAccount: 'nobody' }),
    );
    expect(await statusOf(kc.makeApiClient(CoreV1Api).listSecretForAllNamespaces())).toBe(200);
    expect(server.requests.at(-1)?.authorization).toBeUndefined();
    expect(server.requests.at(-1)?.user).toBe('system:serviceaccount:shop:nobody');
  });
});
