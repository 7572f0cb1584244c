// The CA in Kubernetes mode against the stand-in API server: TokenReview authentication, node
// authorization from a Pods informer, the root kept in a Secret (created once under a race), the
// cacerts plug-in, and the trust bundle ConfigMap.
import { CaClient, CaClientError, CertificateAuthority, parseSpiffeId } from '@hypha/shared/identity';
import { loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer, type KubeObject } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubeCa, type KubeCa } from '../../src/ca/kube.js';
import { fetchKubeCaRoot, ROOT_SECRET } from '../../src/ca/kube-root.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const API = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api');
const WAYPOINT = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/waypoint');

function pod(name: string, namespace: string, sa: string, node: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace },
    spec: { nodeName: node, serviceAccountName: sa, containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }] },
  };
}

function seed(api: KubeApiServer): void {
  for (const ns of ['hypha-system', 'shop'])
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  for (const n of ['node-1', 'node-2']) api.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: n } });
  for (const [ns, sa] of [
    ['hypha-system', 'hypha-agent'],
    ['shop', 'web'],
    ['shop', 'api'],
    ['shop', 'waypoint'],
  ] as const) {
    api.put({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace: ns } });
  }
  api.put(pod('agent-1', 'hypha-system', 'hypha-agent', 'node-1'));
  api.put(pod('agent-2', 'hypha-system', 'hypha-agent', 'node-2'));
  api.put(pod('web-1', 'shop', 'web', 'node-1'));
  api.put(pod('api-1', 'shop', 'api', 'node-2'));
  api.put(pod('waypoint-1', 'shop', 'waypoint', 'node-2'));
}

describe('CA with Kubernetes TokenReview and node authorization', () => {
  let api: KubeApiServer;
  let kca: KubeCa;
  let url: string;
  const clients: CaClient[] = [];
  const client = (token: string) => {
    const c = new CaClient({ url, token, caTrustBundlePem: kca.ca.trustBundlePem, timeoutMs: 5000 });
    clients.push(c);
    return c;
  };
  const agentToken = (podName: string, audiences = ['hypha-ca']) =>
    api.issueToken({ namespace: 'hypha-system', serviceAccount: 'hypha-agent', audiences, pod: podName });
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e as CaClientError,
    );

  beforeAll(async () => {
    api = await createKubeApiServer();
    seed(api);
    kca = await createKubeCa({ kubeconfig: api.kubeconfigPath, host: '127.0.0.1', port: 0 });
    const addr = await kca.server.start();
    url = `https://127.0.0.1:${addr.port}`;
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await kca?.close(500);
    await api?.close();
  });

  it('created the root Secret once and published the trust bundle ConfigMap', () => {
    expect(kca.rootSource).toBe('created');
    const secret = api.find('v1', 'Secret', ROOT_SECRET, 'hypha-system') as unknown as {
      data: Record<string, string>;
    };
    expect(Buffer.from(secret.data['root-cert.pem']!, 'base64').toString()).toBe(kca.ca.trustBundlePem);
    expect(secret.data['ca-key.pem']).toBeDefined();
    const cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'hypha-system') as unknown as {
      data: Record<string, string>;
    };
    expect(cm.data['root-cert.pem']).toBe(kca.ca.trustBundlePem);
  });

  it('publishes the trust bundle into every namespace that joins the mesh, and only those', async () => {
    api.put({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'mesh-ns', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    });
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'not-mesh' } });
    const deadline = Date.now() + 5000;
    let cm: { data: Record<string, string> } | undefined;
    while (Date.now() < deadline) {
      cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'mesh-ns') as unknown as typeof cm;
      if (cm) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(cm?.data['root-cert.pem']).toBe(kca.ca.trustBundlePem);
    expect(api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'not-mesh')).toBeUndefined();
  });

  it('issues to an agent (token bound to its pod) an identity of a pod on its node', async () => {
    const cert = await client(agentToken('agent-1')).fetchWorkloadCertificate(WEB);
    expect(cert.id.equals(WEB)).toBe(true);
    expect(cert.trustBundlePem).toBe(kca.ca.trustBundlePem);
  });

  it('refuses (403) an identity with no pod on the agent node', async () => {
    const err = await failure(client(agentToken('agent-1')).fetchWorkloadCertificate(API));
    expect(err).toBeInstanceOf(CaClientError);
    expect(err?.code).toBe('CA_FORBIDDEN');
    expect(err?.message).toMatch(/node "node-1" runs no pod with service account shop\/api/);
    // The agent on node-2 may.
    const ok = await client(agentToken('agent-2')).fetchWorkloadCertificate(API);
    expect(ok.id.equals(API)).toBe(true);
  });

  it('refuses (401) a token for the wrong audience and an unknown token', async () => {
    const wrongAudience = agentToken('agent-1', ['https://kubernetes.default.svc.cluster.local']);
    expect((await failure(client(wrongAudience).fetchWorkloadCertificate(WEB)))?.code).toBe(
      'CA_UNAUTHENTICATED',
    );
    expect((await failure(client('eyJhbGciOi.not-a-token.xx').fetchWorkloadCertificate(WEB)))?.code).toBe(
      'CA_UNAUTHENTICATED',
    );
  });

  it('refuses (401) a token whose pod was deleted', async () => {
    api.put(pod('agent-3', 'hypha-system', 'hypha-agent', 'node-1'));
    const token = agentToken('agent-3');
    expect((await client(token).fetchWorkloadCertificate(WEB)).id.equals(WEB)).toBe(true);
    api.remove('v1', 'Pod', 'agent-3', 'hypha-system');
    expect((await failure(client(token).fetchWorkloadCertificate(WEB)))?.code).toBe('CA_UNAUTHENTICATED');
  });

  it('lets a pod obtain its own identity with its own bound token, and nothing else', async () => {
    const token = api.issueToken({
      namespace: 'shop',
      serviceAccount: 'waypoint',
      audiences: ['hypha-ca'],
      pod: 'waypoint-1',
    });
    expect((await client(token).fetchWorkloadCertificate(WAYPOINT)).id.equals(WAYPOINT)).toBe(true);
    // api-1 runs on the same node, but a waypoint is not a node agent.
    const err = await failure(client(token).fetchWorkloadCertificate(API));
    expect(err?.code).toBe('CA_FORBIDDEN');
    expect(err?.message).toMatch(/only its own identity/);
    // A token not bound to a pod names no node: refused.
    const unbound = api.issueToken({
      namespace: 'shop',
      serviceAccount: 'waypoint',
      audiences: ['hypha-ca'],
    });
    expect((await failure(client(unbound).fetchWorkloadCertificate(WAYPOINT)))?.code).toBe(
      'CA_UNAUTHENTICATED',
    );
  });

  it('follows pods created and deleted through the API', async () => {
    const kc = loadKubeConfig(api.kubeconfigPath);
    const { fetchKube } = await import('@hypha/shared/kube');
    const token = agentToken('agent-1');
    const c = client(token);
    expect((await failure(c.fetchWorkloadCertificate(API)))?.code).toBe('CA_FORBIDDEN');
    await fetchKube(kc, '/api/v1/namespaces/shop/pods', {
      method: 'POST',
      body: pod('api-on-1', 'shop', 'api', 'node-1'),
    });
    const deadline = Date.now() + 5000;
    let got: unknown;
    while (Date.now() < deadline) {
      got = await c.fetchWorkloadCertificate(API).catch((e: unknown) => e);
      if (!(got instanceof Error)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(got).not.toBeInstanceOf(Error);
    await fetchKube(kc, '/api/v1/namespaces/shop/pods/api-on-1', { method: 'DELETE' });
    let after: CaClientError | undefined;
    while (Date.now() < deadline + 5000) {
      after = await failure(c.fetchWorkloadCertificate(API));
      if (after) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after?.code).toBe('CA_FORBIDDEN');
  });
});

describe('CA root in a Secret', () => {
  it('two CA replicas starting together end up with one root and one trust bundle', async () => {
    const api = await createKubeApiServer();
    const started: KubeCa[] = [];
    try {
      api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'hypha-system' } });
      const replica = () =>
        createKubeCa({ kubeconfig: api.kubeconfigPath, host: '127.0.0.1', port: 0 }).then((k) => {
          started.push(k);
          return k;
        });
      const [a, b] = await Promise.all([replica(), replica()]);
      expect(a.ca.trustBundlePem).toBe(b.ca.trustBundlePem);
      expect([a.rootSource, b.rootSource].sort()).toEqual(['created', 'existing-secret']);
      const creates = api.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/secrets'));
      expect(creates.map((r) => r.status).sort()).toEqual([201, 409]);
      const cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'hypha-system') as unknown as {
        data: Record<string, string>;
      };
      expect(cm.data['root-cert.pem']).toBe(a.ca.trustBundlePem);
      // Both sign certificates that verify against the one root.
      const fromB = await b.ca.issue(WEB);
      expect(fromB.trustBundlePem).toBe(a.ca.trustBundlePem);
      // A later start reads the same root.
      const later = await fetchKubeCaRoot({ kubeconfig: loadKubeConfig(api.kubeconfigPath) });
      expect(later.source).toBe('existing-secret');
      expect(later.ca.trustBundlePem).toBe(a.ca.trustBundlePem);
    } finally {
      for (const k of started) await k.close(100);
      await api.close();
    }
  });

  it('uses a plugged-in cacerts Secret (Istio layout) instead of generating one', async () => {
    const api = await createKubeApiServer();
    try {
      api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'hypha-system' } });
      const root = await CertificateAuthority.init({
        trustDomain: 'cluster.local',
        commonName: 'Plugged Root',
      });
      const inter = await root.createIntermediate({ commonName: 'Plugged Intermediate' });
      const { mkdtemp, readFile, rm } = await import('node:fs/promises');
      const { join } = await import('node:path');
      const { tmpdir } = await import('node:os');
      const dir = await mkdtemp(join(tmpdir(), 'hypha-cacerts-'));
      await inter.save(dir);
      const data: Record<string, string> = {};
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem'])
        data[f] = (await readFile(join(dir, f))).toString('base64');
      await rm(dir, { recursive: true, force: true });
      api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'cacerts', namespace: 'hypha-system' },
        data,
      });
      const got = await fetchKubeCaRoot({ kubeconfig: loadKubeConfig(api.kubeconfigPath) });
      expect(got.source).toBe('plugin-secret');
      expect(got.ca.trustBundlePem).toBe(root.trustBundlePem);
      expect(api.find('v1', 'Secret', ROOT_SECRET, 'hypha-system')).toBeUndefined();
      // A broken plug-in is an error that names the Secret, never a silently generated root.
      api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'cacerts', namespace: 'hypha-system' },
        data: { 'ca-cert.pem': data['ca-cert.pem']! },
      });
      await expect(fetchKubeCaRoot({ kubeconfig: loadKubeConfig(api.kubeconfigPath) })).rejects.toThrow(
        /Secret hypha-system\/cacerts has no key ca-key.pem/,
      );
    } finally {
      await api.close();
    }
  });
});
