// Workload-addressed traffic through a waypoint: a pod labelled hypha.dev/use-waypoint, bound to a
// Gateway with waypoint-for=workload. The client dials the pod IP; its agent sends the stream to
// the waypoint (authority podIP:port), which applies the Gateway's L7 policy, counts the request
// and forwards to exactly that pod, whose agent sees the waypoint's identity.

import type { ClusterPod } from '@hypha/test';
import { LocalMesh, type WaypointProcess } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getScript, until } from './waypoint-fixture.js';

let mesh: LocalMesh;
let client: ClusterPod;
let ratings: ClusterPod;
let waypoint: WaypointProcess;

type Reply = { status?: number; body?: { pod?: string } | string; error?: string };
const get = async (url: string): Promise<Reply> => {
  const r = await mesh.cluster.exec(client.netns, process.execPath, ['-e', getScript(url)]);
  return JSON.parse(r.stdout) as Reply;
};

const denyAdmin = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-admin', namespace: 'demo' },
  spec: {
    targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
  },
};

/** Lines of `name` in a Prometheus exposition that carry every one of `labels`. */
function series(text: string, name: string, labels: Record<string, string>): string[] {
  return text
    .split('\n')
    .filter(
      (l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)),
    );
}

beforeAll(async () => {
  mesh = await LocalMesh.create({ nodes: ['node-a', 'node-b'] });
  client = await mesh.addPod('node-a', 'client', 'demo');
  ratings = await mesh.addPod('node-b', 'ratings', 'demo');
  const pod = (p: ClusterPod, labels: Record<string, string>, sa: string) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: 'demo', labels },
    spec: {
      nodeName: p.node,
      serviceAccountName: sa,
      containers: [{ name: 'app', image: 'x', ports: [{ name: 'http', containerPort: 8080 }] }],
    },
    status: { podIP: p.ip, conditions: [{ type: 'Ready', status: 'True' }] },
  });
  await mesh.writeConfig([
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'demo', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    },
    pod(client, { app: 'client' }, 'client'),
    pod(ratings, { app: 'ratings', 'hypha.dev/use-waypoint': 'waypoint' }, 'ratings'),
  ]);
  await mesh.cluster.startApp(ratings, 'http-echo', [
    '--port',
    '8080',
    '--pod',
    'ratings',
    '--namespace',
    'demo',
  ]);
  await mesh.startAgents();
  // On the client's node: the waypoint → pod leg crosses nodes over HBONE.
  waypoint = await mesh.startWaypoint({
    node: 'node-a',
    namespace: 'demo',
    name: 'waypoint',
    for: 'workload',
  });
  const withWaypoint = await import('node:fs/promises').then((fs) => fs.readFile(mesh.configPath, 'utf8'));
  const { stringify } = await import('yaml');
  await mesh.writeConfig(`${withWaypoint}\n---\n${stringify(denyAdmin)}`);
  await until(async () => (await get(`http://${ratings.ip}:8080/admin/x`)).status === 403, 15_000);
}, 120_000);

afterAll(async () => {
  await mesh?.stop();
});

describe('waypoint for workload-addressed traffic', () => {
  it('serves the pod IP through the waypoint: 200 from that pod, 403 for a denied path', async () => {
    const ok = await get(`http://${ratings.ip}:8080/stars`);
    expect(ok.status, JSON.stringify(ok)).toBe(200);
    expect((ok.body as { pod: string }).pod).toBe('ratings');
    const denied = await get(`http://${ratings.ip}:8080/admin/keys`);
    expect(denied).toEqual({ status: 403, body: 'RBAC: access denied' });

    const metrics = await mesh.fetchInNode('node-a', `http://${waypoint.pod.ip}:15020/metrics`);
    const labels = {
      reporter: 'waypoint',
      destination_workload: 'ratings',
      destination_workload_namespace: 'demo',
    };
    const okLines = series(metrics, 'istio_requests_total', { ...labels, response_code: '200' });
    const deniedLines = series(metrics, 'istio_requests_total', { ...labels, response_code: '403' });
    expect(okLines.length, metrics).toBeGreaterThan(0);
    expect(deniedLines.length, metrics).toBeGreaterThan(0);
    expect(okLines.some((l) => / [1-9]\d*$/.test(l))).toBe(true);
  });

  it("the pod's agent admits the waypoint's identity", async () => {
    expect((await get(`http://${ratings.ip}:8080/again`)).status).toBe(200);
    const waypointId = `spiffe://${mesh.trustDomain}/ns/demo/sa/waypoint`;
    const text = await mesh.fetchInNode('node-b', 'http://127.0.0.1:15020/metrics');
    const inbound = series(text, 'istio_tcp_connections_opened_total', {
      reporter: 'destination',
      destination_workload: 'ratings',
    });
    expect(inbound.length, text).toBeGreaterThan(0);
    // Every inbound connection to the bound pod came from the waypoint, none from the client.
    expect(
      inbound.every((l) => l.includes(`source_principal="${waypointId}"`)),
      inbound.join('\n'),
    ).toBe(true);
  });
});
