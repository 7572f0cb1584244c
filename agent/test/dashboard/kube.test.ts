// `hypha dashboard --kubernetes`: agent and waypoint pods found through the (stand-in) API server,
// each one's readiness read through the API server's pod proxy, and its localhost-only admin port
// (config, certificates, connections, tap) reached through the API server's port-forward
// subresource. The "pods" here are HTTP servers on loopback: the readiness stand-ins sit at the
// pod's IP (127.0.0.1) and the port in the proxy path; the admin stand-ins are reachable only as the
// stand-in API server's port-forward targets (nothing gives the dashboard their address).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer, type KubeObject } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubeHealthSource, type KubeHealthSource } from '../../src/dashboard/kube.js';
import type { buildHealth, buildWorkload } from '../../src/dashboard/model.js';
import { type Dashboard, startDashboard } from '../../src/dashboard/server.js';

const servers: Server[] = [];
const listen = async (s: Server) => {
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
};

function pod(name: string, namespace: string, node: string, labels: Record<string, string>, ip?: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: { nodeName: node, containers: [{ name: 'c', image: 'hypha' }] },
    status: ip === undefined ? { phase: 'Pending' } : { phase: 'Running', podIP: ip },
  };
}

const ECHO_ID = 'spiffe://cluster.local/ns/demo/sa/echo';
const NOT_AFTER = new Date(Date.now() + 12 * 3600_000).toISOString();

/** An agent's (or waypoint's) admin port: what the dashboard reads, and a tap with one event. */
function adminServer(dump: unknown, certs: unknown[], connections: unknown[]): Server {
  return createServer((req, res) => {
    const json = (v: unknown) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v));
    if (req.url === '/config_dump') return json(dump);
    if (req.url === '/certs') return json(certs);
    if (req.url === '/connections') return json(connections);
    if (req.url === '/tap') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(
        `${JSON.stringify({
          kind: 'request',
          time: new Date().toISOString(),
          reporter: 'agent node-a',
          source: {
            workload: 'client',
            namespace: 'demo',
            identity: 'spiffe://cluster.local/ns/demo/sa/client',
          },
          destination: { workload: 'echo', namespace: 'demo', identity: ECHO_ID },
          mtls: true,
          method: 'GET',
          path: '/through-port-forward',
          status: 200,
          flags: '-',
          durationMs: 3,
          bytesSent: 10,
          bytesReceived: 20,
        })}\n`,
      );
      return; // stays open, as a tap does
    }
    res.writeHead(404).end();
  });
}

describe('hypha dashboard --kubernetes', () => {
  let api: KubeApiServer;
  let kube: KubeHealthSource;
  let dash: Dashboard;

  beforeAll(async () => {
    const ready = await listen(
      createServer((req, res) => res.writeHead(req.url === '/healthz/ready' ? 200 : 404).end('ready\n')),
    );
    const notReady = await listen(
      createServer((_req, res) =>
        res.writeHead(503).end('not ready:\n- no certificate yet for demo/echo-v2\n'),
      ),
    );
    const agentA = await listen(
      adminServer(
        {
          node: 'node-a',
          version: 7,
          workloads: [
            {
              name: 'echo-5d8f7c9b4-x2k7q',
              namespace: 'demo',
              node: 'node-a',
              ips: ['10.0.0.9'],
              identity: ECHO_ID,
              labels: { app: 'echo', 'pod-template-hash': '5d8f7c9b4' },
              inMesh: true,
            },
          ],
        },
        [{ identity: ECHO_ID, state: 'valid', serial: '0a1b', notAfter: NOT_AFTER }],
        [{ id: 1 }, { id: 2 }, { id: 3 }],
      ),
    );
    const waypoint = await listen(adminServer({ gateway: { namespace: 'demo', name: 'waypoint' } }, [], []));
    api = await createKubeApiServer();
    for (const name of ['hypha-system', 'demo'])
      api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    const agent = { 'app.kubernetes.io/name': 'hypha-agent' };
    // Each pod's IP is loopback; the port asked through the proxy (15021 in a cluster) is the stand-in's.
    api.put(pod('hypha-agent-a', 'hypha-system', 'node-a', agent, '127.0.0.1'));
    api.put(pod('hypha-agent-b', 'hypha-system', 'node-b', agent, '127.0.0.1'));
    api.put(pod('hypha-agent-c', 'hypha-system', 'node-c', agent));
    api.put(
      pod(
        'waypoint-5f7',
        'demo',
        'node-a',
        { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
        '127.0.0.1',
      ),
    );
    api.put(pod('echo-v1', 'demo', 'node-a', { app: 'echo' }, '10.0.0.9'));
    // Port 15000 inside the pods: agent-a's and the waypoint's admin; agent-b's refuses.
    api.forwardPort('hypha-system', 'hypha-agent-a', 15000, { host: '127.0.0.1', port: agentA });
    api.forwardPort('demo', 'waypoint-5f7', 15000, { host: '127.0.0.1', port: waypoint });
    kube = await createKubeHealthSource(loadKubeConfig(api.kubeconfigPath), 100_000, {
      readinessPort: (p) => (p === 'hypha-agent-b' ? notReady : ready),
    });
    dash = await startDashboard({
      address: '127.0.0.1',
      port: 0,
      prometheus: undefined,
      admins: [],
      config: undefined,
      kube,
      pollMs: 200,
    });
  });

  afterAll(async () => {
    await dash?.close();
    await api?.close().catch(() => {});
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      s.close();
    }
  });

  type HealthBody = ReturnType<typeof buildHealth> & {
    kubernetes: { ok: boolean };
    admins: { label: string; ok: boolean; error: string | null }[];
  };
  const health = async () => (await (await fetch(`${dash.url}api/health`)).json()) as HealthBody;
  /** Polls the dashboard's health until `done` (the admin poller runs every 200 ms here). */
  async function healthUntil(done: (h: HealthBody) => boolean): Promise<HealthBody> {
    for (;;) {
      const h = await health();
      if (done(h)) return h;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it("finds every agent and waypoint pod and reads /healthz/ready through the API server's pod proxy", () => {
    const { pods, error } = kube.snapshot();
    expect(error).toBeUndefined();
    expect(pods.map((p) => `${p.kind} ${p.name} ${p.pod} ${p.ready}`).sort()).toEqual([
      'agent node-a hypha-system/hypha-agent-a true',
      'agent node-b hypha-system/hypha-agent-b false',
      'agent node-c hypha-system/hypha-agent-c false',
      'waypoint demo/waypoint demo/waypoint-5f7 true',
    ]);
    // What the agent itself says is missing, and why a pod without an IP cannot be asked.
    expect(pods.find((p) => p.name === 'node-b')!.reasons).toEqual(['no certificate yet for demo/echo-v2']);
    expect(pods.find((p) => p.name === 'node-c')!.reasons).toEqual([
      'pod hypha-agent-c has no IP yet (Pending)',
    ]);
    // The requests went through the API server's proxy subresource.
    expect(
      api.requests.some((r) =>
        /^\/api\/v1\/namespaces\/hypha-system\/pods\/hypha-agent-b:\d+\/proxy\/healthz\/ready$/.test(r.path),
      ),
    ).toBe(true);
  });

  it("shows the certificates, connections and tap of an agent reached only through the API server's port-forward", async () => {
    const h = await healthUntil((b) =>
      b.nodes.some((n) => n.node === 'node-a' && n.connections !== undefined),
    );
    expect(h.kubernetes).toEqual({ ok: true, error: null });
    expect(h.nodes.find((n) => n.node === 'node-a')).toMatchObject({
      ready: true,
      reasons: [],
      admin: 'hypha-system/hypha-agent-a (port-forward :15000)',
      configVersion: 7,
      connections: 3,
      certificates: 1,
    });
    const w = (await (await fetch(`${dash.url}api/workload?namespace=demo&name=echo`)).json()) as {
      workload: NonNullable<ReturnType<typeof buildWorkload>>;
    };
    expect(w.workload.certificates).toEqual([
      expect.objectContaining({
        identity: ECHO_ID,
        state: 'valid',
        notAfter: NOT_AFTER,
        holder: 'agent node-a',
      }),
    ]);
    // The tap stream came through a port-forward too.
    const tap = (await (await fetch(`${dash.url}api/tap`)).json()) as { events: { path?: string }[] };
    expect(tap.events.map((e) => e.path)).toContain('/through-port-forward');
    // Every admin request went through .../portforward?ports=15000; the connections are reused.
    const forwards = api.requests.filter(
      (r) => r.path === '/api/v1/namespaces/hypha-system/pods/hypha-agent-a/portforward',
    );
    expect(forwards.length).toBeGreaterThan(0);
    expect(forwards.every((r) => r.query.ports === '15000' && r.status === 101)).toBe(true);
    expect(forwards.length).toBeLessThanOrEqual(3);
  });

  it('shows a pod whose admin port cannot be reached with the reason, next to its readiness', async () => {
    const h = await healthUntil(
      (b) =>
        b.nodes.some((n) => n.node === 'node-b' && n.reasons.some((r) => r.includes('admin endpoint'))) &&
        b.waypoints.some((w) => w.ready),
    );
    expect(h.nodes.map((n) => `${n.node} ${n.ready}`)).toEqual([
      'node-a true',
      'node-b false',
      'node-c false',
    ]);
    const b = h.nodes.find((n) => n.node === 'node-b')!;
    expect(b.reasons[0]).toBe('hypha-system/hypha-agent-b: no certificate yet for demo/echo-v2');
    expect(b.reasons[1]).toMatch(
      /^its admin endpoint cannot be read: cannot reach it \(port-forward to hypha-system\/hypha-agent-b:15000: error forwarding port 15000 to pod hypha-agent-b.*connection refused\)$/,
    );
    expect(h.nodes.find((n) => n.node === 'node-c')!.reasons).toEqual([
      'hypha-system/hypha-agent-c: pod hypha-agent-c has no IP yet (Pending)',
    ]);
    expect(h.waypoints).toEqual([expect.objectContaining({ name: 'demo/waypoint', ready: true })]);
  });

  it('an API server that does not answer is said, and the last answer stays', async () => {
    await api.close();
    await kube.refresh();
    const { pods, error } = kube.snapshot();
    expect(error).toMatch(/^the Kubernetes API did not answer: /);
    expect(pods).toHaveLength(4);
  });
});

describe('hypha dashboard --kubernetes without create on pods/portforward', () => {
  const RBAC = 'rbac.authorization.k8s.io/v1';
  let api: KubeApiServer;
  let kube: KubeHealthSource;
  let dash: Dashboard;

  beforeAll(async () => {
    const ready = await listen(createServer((_req, res) => res.writeHead(200).end('ready\n')));
    api = await createKubeApiServer({ rbac: true });
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'hypha-system' } });
    api.put({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'viewer', namespace: 'hypha-system' },
    });
    // Enough to list pods and read readiness; port-forward with `get` only (what a role written for
    // API servers before 1.35 grants), not `create`.
    api.put({
      apiVersion: RBAC,
      kind: 'ClusterRole',
      metadata: { name: 'viewer' },
      rules: [
        { apiGroups: [''], resources: ['pods', 'pods/proxy'], verbs: ['get', 'list'] },
        { apiGroups: [''], resources: ['pods/portforward'], verbs: ['get'] },
      ],
    } as KubeObject);
    api.put({
      apiVersion: RBAC,
      kind: 'ClusterRoleBinding',
      metadata: { name: 'viewer' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'viewer' },
      subjects: [{ kind: 'ServiceAccount', name: 'viewer', namespace: 'hypha-system' }],
    } as KubeObject);
    api.put(
      pod(
        'hypha-agent-a',
        'hypha-system',
        'node-a',
        { 'app.kubernetes.io/name': 'hypha-agent' },
        '127.0.0.1',
      ),
    );
    const kc = loadKubeConfig(
      await api.writeServiceAccountKubeconfig({ namespace: 'hypha-system', serviceAccount: 'viewer' }),
    );
    kube = await createKubeHealthSource(kc, 100_000, { readinessPort: () => ready });
    dash = await startDashboard({
      address: '127.0.0.1',
      port: 0,
      prometheus: undefined,
      admins: [],
      config: undefined,
      kube,
      pollMs: 200,
    });
  });

  afterAll(async () => {
    await dash?.close();
    await api?.close().catch(() => {});
  });

  it('says which RBAC verb is missing (403 on pods/portforward) for each pod it cannot reach', async () => {
    let reasons: string[] = [];
    while (!reasons.some((r) => r.includes('403'))) {
      const h = (await (await fetch(`${dash.url}api/health`)).json()) as ReturnType<typeof buildHealth>;
      reasons = h.nodes.find((n) => n.node === 'node-a')?.reasons ?? [];
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toContain(
      'its admin endpoint cannot be read: cannot reach it (port-forward to hypha-system/hypha-agent-a:15000: 403 pods "hypha-agent-a" is forbidden: User "system:serviceaccount:hypha-system:viewer" cannot create resource "pods/portforward"',
    );
    expect(reasons[0]).toContain(
      'needs verbs "get" and "create" on "pods/portforward" in namespace hypha-system',
    );
  });
});
