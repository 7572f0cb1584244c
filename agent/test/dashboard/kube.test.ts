// `hypha dashboard --kubernetes`: agent and waypoint pods found through the (stand-in) API server,
// each one's readiness read through the API server's pod proxy. The "pods" here are HTTP servers on
// loopback standing in for port 15021 (the pods' IP is 127.0.0.1, the port in the proxy path).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubeHealthSource, type KubeHealthSource } from '../../src/dashboard/kube.js';
import type { buildHealth } from '../../src/dashboard/model.js';
import { type Dashboard, startDashboard } from '../../src/dashboard/server.js';

let api: KubeApiServer;
let readyServer: Server;
let notReadyServer: Server;
let kube: KubeHealthSource;
let dash: Dashboard;

const listen = async (s: Server) => {
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

beforeAll(async () => {
  readyServer = createServer((req, res) => {
    res.writeHead(req.url === '/healthz/ready' ? 200 : 404).end('ready\n');
  });
  notReadyServer = createServer((_req, res) => {
    res.writeHead(503).end('not ready:\n- no certificate yet for demo/echo-v2\n');
  });
  await listen(readyServer);
  await listen(notReadyServer);
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
  kube = await createKubeHealthSource(loadKubeConfig(api.kubeconfigPath), 100_000, {
    readinessPort: (p) =>
      p === 'hypha-agent-b'
        ? (notReadyServer.address() as AddressInfo).port
        : (readyServer.address() as AddressInfo).port,
  });
  dash = await startDashboard({
    address: '127.0.0.1',
    port: 0,
    prometheus: undefined,
    admins: [],
    config: undefined,
    kube,
  });
});

afterAll(async () => {
  await dash?.close();
  await api?.close().catch(() => {});
  readyServer?.close();
  notReadyServer?.close();
});

describe('hypha dashboard --kubernetes', () => {
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

  it('the health page shows each node from the cluster, ready or not, without any admin endpoint', async () => {
    const body = (await (await fetch(`${dash.url}api/health`)).json()) as ReturnType<typeof buildHealth> & {
      kubernetes: { ok: boolean };
    };
    expect(body.kubernetes).toEqual({ ok: true, error: null });
    expect(body.nodes.map((n) => `${n.node} ${n.ready} ${n.reasons.join('; ')}`)).toEqual([
      'node-a true ',
      'node-b false hypha-system/hypha-agent-b: no certificate yet for demo/echo-v2',
      'node-c false hypha-system/hypha-agent-c: pod hypha-agent-c has no IP yet (Pending)',
    ]);
    expect(body.waypoints).toEqual([expect.objectContaining({ name: 'demo/waypoint', ready: true })]);
  });

  it('an API server that does not answer is said, and the last answer stays', async () => {
    await api.close();
    await kube.refresh();
    const { pods, error } = kube.snapshot();
    expect(error).toMatch(/^the Kubernetes API did not answer: /);
    expect(pods).toHaveLength(4);
  });
});
