// Real agents driven by the Kubernetes API (issue 7): the stand-in API server, the Kubernetes-mode
// CA (TokenReview, Pods informer, root Secret, trust bundle ConfigMap), a two-node namespace cluster
// and `hypha agent --config kubernetes:<kubeconfig>` on each node. Every change under test goes
// through the API, as kubectl would make it.
import { type ClusterPod, eventually as pollUntil } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHypha } from '../../agent/test/run-hypha.js';
import { KubeMesh } from './kube-mesh.js';

const PORT = 9100;
let mesh: KubeMesh;
let client: ClusterPod;
let server: ClusterPod;

const eventually = <T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000) =>
  pollUntil(fn, ok, timeoutMs);

/** One TCP round trip between pods: true when the echo came back. */
const roundTrip = (from: ClusterPod, to: ClusterPod): Promise<boolean> =>
  mesh.cluster.tcpRoundTrip(from.netns, to.ip, PORT);

const label = (value: string | null) =>
  mesh.request('/api/v1/namespaces/shop', {
    method: 'PATCH',
    contentType: 'application/merge-patch+json',
    body: { metadata: { labels: { 'hypha.dev/dataplane-mode': value } } },
  });

const denyPolicy = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-client', namespace: 'shop' },
  spec: {
    selector: { matchLabels: { app: 'server' } },
    action: 'DENY',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] }],
  },
};

beforeAll(async () => {
  mesh = await KubeMesh.create({ nodes: ['node-1', 'node-2'] });
  await mesh.request('/api/v1/namespaces', {
    method: 'POST',
    body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
  });
  client = await mesh.addPod('node-1', 'client', 'shop');
  server = await mesh.addPod('node-2', 'server', 'shop');
  await mesh.cluster.startApp(server, 'tcp-echo', ['--port', String(PORT)]);
  await mesh.startAgents();
}, 120_000);

afterAll(async () => {
  await mesh?.stop();
});

describe('agents on the Kubernetes API', () => {
  it('labelling a namespace captures its pods and traffic runs over mTLS; removing the label stops capture', async () => {
    expect(await mesh.findCaptureSet('node-1')).toEqual([]);
    await label('ambient');
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-1'),
        (s) => s.includes(client.ip),
      ),
    ).toContain(client.ip);
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-2'),
        (s) => s.includes(server.ip),
      ),
    ).toContain(server.ip);
    // Certificates came from the Kubernetes-mode CA (agent token → TokenReview → pod on its node).
    await mesh.agents
      .get('node-2')!
      .waitFor(
        (e) => e.msg === 'certificate ready' && String(e.identity).endsWith('/ns/shop/sa/server'),
        15_000,
      );
    await mesh.agents
      .get('node-1')!
      .waitFor(
        (e) => e.msg === 'certificate ready' && String(e.identity).endsWith('/ns/shop/sa/client'),
        15_000,
      );
    expect(await roundTrip(client, server)).toBe(true);
    const inbound = await mesh.agents
      .get('node-2')!
      .waitFor((e) => e.type === 'access' && e.direction === 'inbound' && e.dst_workload === 'server', 5000);
    expect(inbound).toMatchObject({
      mtls: true,
      src_identity: 'spiffe://cluster.local/ns/shop/sa/client',
      dst_identity: 'spiffe://cluster.local/ns/shop/sa/server',
    });

    await label(null);
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-1'),
        (s) => s.length === 0,
      ),
    ).toEqual([]);
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-2'),
        (s) => s.length === 0,
      ),
    ).toEqual([]);
    await label('ambient');
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-1'),
        (s) => s.includes(client.ip),
      ),
    ).toContain(client.ip);
  });

  it('a pod created through the API is captured and gets a certificate; deleting it releases both', async () => {
    const late = await mesh.addPod('node-1', 'late', 'shop');
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-1'),
        (s) => s.includes(late.ip),
      ),
    ).toContain(late.ip);
    await mesh.agents
      .get('node-1')!
      .waitFor(
        (e) => e.msg === 'certificate ready' && String(e.identity).endsWith('/ns/shop/sa/late'),
        15_000,
      );
    await mesh.deletePod(late);
    expect(
      await eventually(
        () => mesh.findCaptureSet('node-1'),
        (s) => !s.includes(late.ip),
      ),
    ).not.toContain(late.ip);
    await mesh.agents
      .get('node-1')!
      .waitFor(
        (e) => /certificate dropped/.test(String(e.msg)) && String(e.identity).endsWith('/ns/shop/sa/late'),
        10_000,
      );
  });

  it('an AuthorizationPolicy created through the API is enforced, and the agents follow the API through a dropped watch and a 410', async () => {
    await eventually(
      () => roundTrip(client, server),
      (ok) => ok,
    );
    await mesh.request('/apis/security.hypha.dev/v1/namespaces/shop/authorizationpolicies', {
      method: 'POST',
      body: denyPolicy,
    });
    expect(
      await eventually(
        () => roundTrip(client, server),
        (ok) => !ok,
      ),
    ).toBe(false);
    await mesh.agents
      .get('node-2')!
      .waitFor(
        (e) => e.type === 'access' && e.response_flags === 'DENY' && e.policy === 'shop/deny-client',
        5000,
      );

    // Watches drop mid-stream (a load balancer restart): the agents reconnect and keep enforcing.
    mesh.api.dropWatches();
    expect(await roundTrip(client, server)).toBe(false);

    // Deterministic 410: park reconnects, change the cluster, compact the history past the agents'
    // resourceVersion, release. The agents must relist and notice the policy is gone.
    const release = mesh.api.holdWatches();
    mesh.api.dropWatches();
    await mesh.request('/apis/security.hypha.dev/v1/namespaces/shop/authorizationpolicies/deny-client', {
      method: 'DELETE',
    });
    mesh.api.compactHistory();
    release();
    for (const node of ['node-1', 'node-2']) {
      await mesh.agents.get(node)!.waitFor((e) => /watch expired/.test(String(e.msg)), 15_000);
    }
    expect(
      await eventually(
        () => roundTrip(client, server),
        (ok) => ok,
      ),
    ).toBe(true);

    // And still follows new changes after the relist.
    await mesh.request('/apis/security.hypha.dev/v1/namespaces/shop/authorizationpolicies', {
      method: 'POST',
      body: denyPolicy,
    });
    expect(
      await eventually(
        () => roundTrip(client, server),
        (ok) => !ok,
      ),
    ).toBe(false);
    expect(mesh.agents.get('node-1')!.process.exitCode).toBeNull();
    expect(mesh.agents.get('node-2')!.process.exitCode).toBeNull();
  }, 90_000);
});

describe('leaving the mesh', () => {
  const tables = async (node: string) =>
    (await mesh.cluster.exec(mesh.cluster.node(node).netns, 'nft', ['list', 'tables'])).stdout;
  const fwmarkRules = async (node: string) =>
    (await mesh.cluster.exec(mesh.cluster.node(node).netns, 'ip', ['-4', 'rule', 'show'])).stdout
      .split('\n')
      .filter((l) => l.includes('fwmark 0x111')).length;
  const stop = async (node: string) => {
    const agent = mesh.agents.get(node)!;
    const exited = new Promise<number | null>((r) => agent.process.once('exit', (c) => r(c)));
    agent.process.kill('SIGTERM');
    expect(await exited).toBe(0);
    return agent;
  };

  it('SIGTERM while the agent DaemonSet stays (a restart or upgrade) keeps capture in place', async () => {
    const agent = await stop('node-2');
    expect(
      agent.events.some(
        (e) => e.msg === 'the agent DaemonSet stays (restart or upgrade): capture rules stay',
      ),
    ).toBe(true);
    expect(await tables('node-2')).toContain('table inet hypha');
    await mesh.startAgent('node-2');
  }, 60_000);

  it('hypha uninstall deletes the DaemonSet, waits while each agent removes its node capture, and leaves nothing on the nodes', async () => {
    const uninstall = runHypha(
      ['uninstall', '--kubeconfig', mesh.api.kubeconfigPath, '--agent-timeout', '60s'],
      {
        timeoutMs: 90_000,
      },
    );
    // Playing kubelet and the garbage collector: the DaemonSet is going, so its pods are stopped.
    await eventually(
      async () => mesh.api.find('apps/v1', 'DaemonSet', 'hypha-agent', 'hypha-system'),
      (ds) => ds === undefined,
    );
    for (const node of ['node-1', 'node-2']) {
      const agent = await stop(node);
      expect(
        agent.events.some((e) => e.msg === 'the agent DaemonSet is gone: this node leaves the mesh'),
      ).toBe(true);
      await mesh.request(`/api/v1/namespaces/hypha-system/pods/hypha-agent-${node}`, { method: 'DELETE' });
    }
    const r = await uninstall;
    expect(r.stdout).toContain('DaemonSet/hypha-agent');
    expect(r.stdout).not.toContain('hypha agent cleanup');
    expect(r.code).toBe(0);
    for (const node of ['node-1', 'node-2']) {
      expect(await tables(node)).not.toContain('hypha');
      expect(await fwmarkRules(node)).toBe(0);
    }
  }, 120_000);
});
