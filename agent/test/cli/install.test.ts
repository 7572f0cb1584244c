// `hypha install`: rendering equals kustomize's, and applying/uninstalling through the API against
// the stand-in API server creates and removes the objects.
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_RESOURCES } from '../../../test/src/kube-api/index.js';
import {
  applyManifests,
  deleteManifests,
  type ManifestObject,
  renderManifests,
} from '../../src/cli/commands/install.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));
const key = (o: ManifestObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

function kustomize(dir: string): ManifestObject[] {
  const out = execFileSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as ManifestObject);
}

function byKey(objects: readonly ManifestObject[]): Map<string, ManifestObject> {
  return new Map(objects.map((o) => [key(o), o]));
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('hypha install: rendering', () => {
  it.each([
    ['manifests/base', undefined],
    ['manifests/overlays/dev', 'dev'],
  ])('the built-in renderer produces the same objects as kubectl kustomize %s', async (dir, overlay) => {
    const expected = byKey(kustomize(dir));
    const { objects, renderer } = await renderManifests({ kubectl: false, ...(overlay ? { overlay } : {}) });
    expect(renderer).toBe('built-in');
    const got = byKey(objects);
    expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [k, o] of expected) expect(isDeepStrictEqual(got.get(k), o), k).toBe(true);
  });

  it('`hypha install --print` prints the objects of `kubectl kustomize manifests/base`', async () => {
    const r = await run(['install', '--print']);
    expect(r.code, r.stderr).toBe(0);
    const printed = parseAllDocuments(r.stdout).map((d) => d.toJS() as ManifestObject);
    expect(byKey(printed)).toEqual(byKey(kustomize('manifests/base')));
  });

  it('refuses an unknown overlay with a clear message', async () => {
    await expect(renderManifests({ overlay: 'nope' })).rejects.toThrow(
      /no kustomization.yaml in .*overlays\/nope/,
    );
  });
});

describe('hypha install: applying to a cluster', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    // The stand-in serves what a cluster with the Gateway API has, plus PodDisruptionBudgets.
    api = await createKubeApiServer({
      resources: [
        ...DEFAULT_RESOURCES,
        {
          group: 'policy',
          version: 'v1',
          kind: 'PodDisruptionBudget',
          plural: 'poddisruptionbudgets',
          namespaced: true,
          status: true,
          custom: false,
          fieldSelectors: [],
        },
      ],
    });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('creates every rendered object (CRDs first), converges on a re-run, and uninstall removes them but the CRDs', async () => {
    const { objects } = await renderManifests();
    const kc = loadKubeConfig(api.kubeconfigPath);
    const first = await applyManifests(kc, objects, { crdTimeoutMs: 2000 });
    expect(first.filter((r) => r.action === 'failed')).toEqual([]);
    expect(first.every((r) => r.action === 'created')).toBe(true);
    expect(first[0]?.object).toBe('Namespace/hypha-system');
    expect(first[1]?.object).toMatch(/^CustomResourceDefinition\//);
    const ds = api.find('apps/v1', 'DaemonSet', 'hypha-agent', 'hypha-system') as unknown as {
      spec: { template: { spec: { containers: { image: string; args: string[] }[] } } };
    };
    expect(ds.spec.template.spec.containers[0]?.image).toBe('ghcr.io/hypha-mesh/hypha:0.1.0');
    const ca = api.find('apps/v1', 'Deployment', 'hypha-ca', 'hypha-system') as unknown as {
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    };
    expect(ca.spec.template.spec.containers[0]?.args).toEqual([
      'ca',
      'serve',
      '--config',
      'kubernetes',
      '--dir',
      '/etc/cacerts',
    ]);
    expect(
      api.find(
        'apiextensions.k8s.io/v1',
        'CustomResourceDefinition',
        'authorizationpolicies.security.hypha.dev',
      ),
    ).toBeDefined();

    const second = await applyManifests(kc, objects, { crdTimeoutMs: 2000 });
    expect(second.every((r) => r.action === 'configured')).toBe(true);

    const removed = await deleteManifests(kc, objects);
    expect(removed.filter((r) => r.action === 'failed')).toEqual([]);
    expect(api.find('apps/v1', 'DaemonSet', 'hypha-agent', 'hypha-system')).toBeUndefined();
    expect(api.find('rbac.authorization.k8s.io/v1', 'ClusterRole', 'hypha-agent')).toBeUndefined();
    expect(
      api.find(
        'apiextensions.k8s.io/v1',
        'CustomResourceDefinition',
        'authorizationpolicies.security.hypha.dev',
      ),
    ).toBeDefined();
  });

  it('`hypha install --kubeconfig` applies through the CLI and reports each object', async () => {
    const r = await run(['install', '--kubeconfig', api.kubeconfigPath]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/DaemonSet\/hypha-agent \(hypha-system\)\s+(created|configured)/);
    expect(r.stdout).toMatch(/hypha check/);
  });
});
