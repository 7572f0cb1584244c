// `hypha waypoint apply`: the objects it renders (--print), the config file it edits (--file, read
// back by the file source), and create-or-update through the API (stand-in API server).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createFileSource } from '@hypha/shared/config';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
type Obj = {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
} & Record<
  string,
  // biome-ignore lint/suspicious/noExplicitAny: test access to nested YAML
  any
>;

function run(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: 30_000, env: { ...process.env, KUBECONFIG: '', ...env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
const parse = (text: string) => parseAllDocuments(text).map((d) => d.toJS() as Obj);

let dir: string;
let api: KubeApiServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-wp-apply-'));
  api = await createKubeApiServer({});
});
afterAll(async () => {
  await api?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('hypha waypoint apply', () => {
  it('--print renders Gateway, ServiceAccount, Deployment and Service for the name and namespace', async () => {
    const r = await run(['waypoint', 'apply', '-n', 'shop', '--name', 'gw', '--for', 'all', '--print']);
    expect(r.code, r.stderr).toBe(0);
    const objs = parse(r.stdout);
    expect(objs.map((o) => o.kind).sort()).toEqual([
      'ClusterRoleBinding',
      'Deployment',
      'Gateway',
      'RoleBinding',
      'Service',
      'ServiceAccount',
    ]);
    for (const o of objs.filter((x) => !x.kind.endsWith('Binding'))) {
      expect(o.metadata.name).toBe('gw');
      expect(o.metadata.namespace).toBe('shop');
    }
    // Without the bindings the waypoint's ServiceAccount could read nothing in a real cluster.
    const subject = [{ kind: 'ServiceAccount', name: 'gw', namespace: 'shop' }];
    expect(objs.find((o) => o.kind === 'ClusterRoleBinding')).toMatchObject({
      metadata: { name: 'hypha-waypoint-shop-gw' },
      roleRef: { kind: 'ClusterRole', name: 'hypha-waypoint' },
      subjects: subject,
    });
    expect(objs.find((o) => o.kind === 'RoleBinding')).toMatchObject({
      metadata: { name: 'hypha-waypoint-status-gw', namespace: 'shop' },
      roleRef: { kind: 'ClusterRole', name: 'hypha-waypoint-status' },
      subjects: subject,
    });
    const gw = objs.find((o) => o.kind === 'Gateway')!;
    expect(gw.spec.gatewayClassName).toBe('hypha-waypoint');
    expect(gw.spec.listeners).toEqual([{ name: 'mesh', port: 15008, protocol: 'HBONE' }]);
    expect(gw.metadata.labels?.['hypha.dev/waypoint-for']).toBe('all');
    const deploy = objs.find((o) => o.kind === 'Deployment')!;
    const pod = deploy.spec.template;
    expect(pod.spec.serviceAccountName).toBe('gw');
    expect(pod.metadata.labels['gateway.networking.k8s.io/gateway-name']).toBe('gw');
    expect(deploy.spec.selector.matchLabels['gateway.networking.k8s.io/gateway-name']).toBe('gw');
    const args = pod.spec.containers[0].args as string[];
    expect(args.slice(0, 5)).toEqual(['waypoint', '--name', 'gw', '--namespace', '$(POD_NAMESPACE)']);
    for (const flag of [
      '--config',
      '--ca-address',
      '--ca-token-file',
      '--ca-root-file',
      '--trust-domain',
      '--hbone-port',
      '--metrics-address',
      '--readiness-address',
      '--drain-timeout',
    ])
      expect(args).toContain(flag);
    const svc = objs.find((o) => o.kind === 'Service')!;
    expect(svc.spec.selector).toEqual({ 'gateway.networking.k8s.io/gateway-name': 'gw' });
  });

  it('refuses a missing namespace and a bad name with exit code 2', async () => {
    const noNs = await run(['waypoint', 'apply', '--print']);
    expect(noNs.code).toBe(2);
    expect(noNs.stderr).toMatch(/--namespace is required/);
    const bad = await run(['waypoint', 'apply', '-n', 'shop', '--name', 'Bad_Name', '--print']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a valid name/);
  });

  it('--file adds the objects to a config file once (a re-run replaces them) and the file source sees the waypoint', async () => {
    const file = join(dir, 'mesh.yaml');
    await writeFile(
      file,
      '# my mesh\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    hypha.dev/dataplane-mode: ambient\n',
    );
    for (let i = 0; i < 2; i++) {
      const r = await run(['waypoint', 'apply', '-n', 'shop', '--file', file]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(
        i === 0 ? /6 object\(s\) added, 0 replaced/ : /0 object\(s\) added, 6 replaced/,
      );
    }
    const text = await readFile(file, 'utf8');
    expect(text).toContain('# my mesh');
    expect(parse(text).map((o) => o.kind)).toEqual([
      'Namespace',
      'Gateway',
      'ServiceAccount',
      'Deployment',
      'Service',
      'ClusterRoleBinding',
      'RoleBinding',
    ]);
    const source = createFileSource({ path: file });
    await source.start();
    try {
      const wp = source.state.findWaypoint('shop', 'waypoint');
      expect(wp?.identity.toString()).toBe('spiffe://cluster.local/ns/shop/sa/waypoint');
      expect(wp?.for).toBe('service');
    } finally {
      await source.close();
    }
  });

  it('creates the objects through the API, and updates them on a re-run', async () => {
    const missing = await run(['waypoint', 'apply', '-n', 'shop', '--kubeconfig', api.kubeconfigPath]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/namespace shop does not exist; create it first/);
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    const first = await run(['waypoint', 'apply', '-n', 'shop', '--kubeconfig', api.kubeconfigPath]);
    expect(first.code, first.stderr + first.stdout).toBe(0);
    expect(first.stdout).toMatch(/Gateway\/waypoint \(shop\)\s+created/);
    expect(first.stdout).toMatch(/Deployment\/waypoint \(shop\)\s+created/);
    expect(api.find('gateway.networking.k8s.io/v1', 'Gateway', 'waypoint', 'shop')).toBeDefined();
    expect(api.find('apps/v1', 'Deployment', 'waypoint', 'shop')).toBeDefined();
    expect(api.find('v1', 'ServiceAccount', 'waypoint', 'shop')).toBeDefined();
    expect(
      api.find('rbac.authorization.k8s.io/v1', 'RoleBinding', 'hypha-waypoint-status-waypoint', 'shop'),
    ).toBeDefined();
    const again = await run(['waypoint', 'apply', '-n', 'shop', '--for', 'all'], {
      KUBECONFIG: api.kubeconfigPath,
    });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Gateway\/waypoint \(shop\)\s+configured/);
    const gw = api.find('gateway.networking.k8s.io/v1', 'Gateway', 'waypoint', 'shop') as unknown as Obj;
    expect(gw.metadata.labels?.['hypha.dev/waypoint-for']).toBe('all');
  });

  it('status lists the waypoint, its readiness and bindings, and flags a binding to a missing Gateway', async () => {
    // Runs after the API test above: waypoint exists in shop.
    api.put({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'reviews', namespace: 'shop', labels: { 'hypha.dev/use-waypoint': 'waypoint' } },
      spec: { ports: [{ port: 80 }] },
    });
    api.put({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'orders', namespace: 'shop', labels: { 'hypha.dev/use-waypoint': 'ghost' } },
      spec: { ports: [{ port: 80 }] },
    });
    const r = await run(['waypoint', 'status', '-n', 'shop', '--kubeconfig', api.kubeconfigPath]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^ghost\s+-\s+MISSING \(bound traffic fails closed\)\s+service\/orders$/m);
    expect(r.stdout).toMatch(/^waypoint\s+all\s+0\/1\s+service\/reviews$/m);
  });
});
