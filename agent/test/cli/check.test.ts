// `hypha check` against the stand-in API server: missing CRDs and missing agents are reported by
// name with exit 1; a healthy install passes; a NetworkPolicy blocking HBONE is flagged by name.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority } from '@hypha/shared/identity';
import { loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blocksHbone, formatChecks, runChecks } from '../../src/cli/commands/check.js';
import { applyManifests, renderManifests } from '../../src/cli/commands/install.js';

const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const status = (results: { name: string; status: string }[], name: string) =>
  results.find((r) => r.name === name)?.status;

describe('hypha check', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer();
    for (const n of ['node-1', 'node-2']) api.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: n } });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('on an empty cluster: missing CRDs and no agents, exit 1, plain table', async () => {
    const r = await run(['check', '--kubeconfig', api.kubeconfigPath]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^CHECK\s+STATUS\s+DETAIL$/m);
    expect(r.stdout).toMatch(/^kubernetes-api\s+ok\s+https:\/\/127\.0\.0\.1:\d+ \(v1\.32/m);
    expect(r.stdout).toMatch(
      /^crds\s+fail\s+missing CRD authorizationpolicies\.security\.hypha\.dev, requestauthentications\.security\.hypha\.dev, peerauthentications\.security\.hypha\.dev, trafficpolicies\.traffic\.hypha\.dev, serviceentries\.networking\.hypha\.dev, meshconfigs\.networking\.hypha\.dev: run "hypha install"/m,
    );
    expect(r.stdout).toMatch(/^agents\s+fail\s+DaemonSet hypha-system\/hypha-agent not found/m);
    expect(r.stdout).toMatch(/check\(s\) failed/);
    expect(r.stdout.includes(String.fromCharCode(27))).toBe(false); // no colour codes
  });

  it('pre-flight: API, nftables on this node, Gateway API', async () => {
    const kc = loadKubeConfig(api.kubeconfigPath);
    const ok = await runChecks(kc, { pre: true });
    expect(status(ok, 'kubernetes-api')).toBe('ok');
    expect(status(ok, 'nftables')).toBe('ok');
    expect(status(ok, 'gateway-api')).toBe('ok');
    const noNft = await runChecks(kc, { pre: true, nftCommand: 'nft-does-not-exist' });
    expect(noNft.find((r) => r.name === 'nftables')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/install nftables/),
    });
  });

  it('after install: agents missing on one node are named; all ready passes; a blocking NetworkPolicy is flagged', async () => {
    const kc = loadKubeConfig(api.kubeconfigPath);
    const { objects } = await renderManifests();
    const applied = await applyManifests(
      kc,
      objects.filter((o) => o.kind !== 'PodDisruptionBudget'),
      { crdTimeoutMs: 2000 },
    );
    expect(applied.filter((r) => r.action === 'failed')).toEqual([]);
    const agentPod = (node: string) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `hypha-agent-${node}`,
        namespace: 'hypha-system',
        labels: { 'app.kubernetes.io/name': 'hypha-agent' },
      },
      spec: { nodeName: node, containers: [{ name: 'agent', image: 'hypha' }] },
      status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
    });
    api.put(agentPod('node-1'));
    const root = await CertificateAuthority.init();
    api.put({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'hypha-ca-root-cert', namespace: 'hypha-system' },
      data: { 'root-cert.pem': root.trustBundlePem },
    });
    const dep = api.find('apps/v1', 'Deployment', 'hypha-ca', 'hypha-system')!;
    api.put({ ...dep, status: { availableReplicas: 2 } });

    let results = await runChecks(kc);
    expect(results.find((r) => r.name === 'agents')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/no ready agent on 1 of 2 node\(s\): node-2/),
    });
    expect(status(results, 'crds')).toBe('ok');
    expect(status(results, 'ca')).toBe('ok');
    expect(status(results, 'certificates')).toBe('ok');

    api.put(agentPod('node-2'));
    results = await runChecks(kc);
    expect(
      results.filter((r) => r.status !== 'ok'),
      formatChecks(results),
    ).toEqual([]);
    expect(formatChecks(results)).toMatch(/All checks passed/);

    // An upgrade: a second agent on node-2 is fine while the hand-off can take; far past the pod's
    // grace period (hand-off wait + drain) it is reported.
    api.put({
      ...agentPod('node-2'),
      metadata: { ...agentPod('node-2').metadata, name: 'hypha-agent-node-2-new' },
    });
    expect(results.find((r) => r.name === 'agent-upgrades')?.detail).toBe('one agent per node');
    results = await runChecks(kc);
    expect(results.find((r) => r.name === 'agent-upgrades')).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/^hand-off in progress on node-2/),
    });
    results = await runChecks(kc, { now: new Date(Date.now() + 10 * 60_000) });
    expect(results.find((r) => r.name === 'agent-upgrades')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(
        /overlapped longer than the hand-off and drain deadline \(190 s\) on node-2 \(hypha-agent-node-2, hypha-agent-node-2-new: 6\d\d s\)/,
      ),
    });
    api.remove('v1', 'Pod', 'hypha-agent-node-2-new', 'hypha-system');

    api.put({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    });
    api.put({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'only-http', namespace: 'shop' },
      spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ ports: [{ port: 8080 }] }] },
    });
    results = await runChecks(kc);
    expect(results.find((r) => r.name === 'network-policies')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/shop\/only-http/),
    });

    // Egress: the outbound traffic policy in force, and ServiceEntries the agents would skip.
    expect(results.find((r) => r.name === 'outbound-traffic-policy')).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(
        /^no MeshConfig hypha-system\/default: each agent's --outbound-policy decides/,
      ),
    });
    api.put({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'MeshConfig',
      metadata: { name: 'default', namespace: 'hypha-system' },
      spec: { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } },
    });
    api.put({
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'bad-static', namespace: 'shop' },
      spec: { hosts: ['db.example.test'], ports: [{ number: 5432 }], resolution: 'STATIC' },
    });
    results = await runChecks(kc);
    expect(results.find((r) => r.name === 'outbound-traffic-policy')?.detail).toBe(
      'REGISTRY_ONLY (MeshConfig hypha-system/default)',
    );
    expect(results.find((r) => r.name === 'service-entries')).toMatchObject({
      status: 'warn',
      detail:
        'agents skip this: ServiceEntry shop/bad-static: field spec.endpoints: missing: resolution STATIC sends traffic to these addresses',
    });
  });

  it('knows which NetworkPolicies let HBONE through', () => {
    const np = (ingress: unknown, policyTypes?: string[]) =>
      ({ spec: { podSelector: {}, ingress, ...(policyTypes ? { policyTypes } : {}) } }) as never;
    expect(blocksHbone(np([]))).toBe(true); // deny all ingress
    expect(blocksHbone(np([{ ports: [{ port: 15008 }] }]))).toBe(false);
    expect(blocksHbone(np([{ ports: [{ port: 15000, endPort: 15010 }] }]))).toBe(false);
    expect(blocksHbone(np([{ from: [{ podSelector: {} }] }]))).toBe(false); // no ports: all ports
    expect(blocksHbone(np([{ ports: [{ port: 15008, protocol: 'UDP' }] }]))).toBe(true);
    expect(blocksHbone(np(undefined, ['Egress']))).toBe(false);
  });
});
