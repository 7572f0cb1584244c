// Shared set-up of the waypoint end-to-end tests: a two-node mesh with a client (node-a), echo-v1
// (node-a), echo-v2 (node-b), Service demo/echo bound to waypoint demo/waypoint (its pod on node-b),
// and Services echo-v1/echo-v2 selecting one version each (route backends).

import type { ClusterPod } from '@hypha/test';
import { LocalMesh, type WaypointProcess } from '@hypha/test';

export interface WaypointScenario {
  mesh: LocalMesh;
  pods: { client: ClusterPod; echoV1: ClusterPod; echoV2: ClusterPod };
  vips: { echo: string; v1: string; v2: string };
  waypoint: WaypointProcess;
  base: Record<string, unknown>[];
  /** Rewrites the config: base objects, the waypoint's, plus `extra` (routes, policies). */
  setExtra(extra: Record<string, unknown>[]): Promise<void>;
  /** Runs a Node script in the client pod; returns its stdout. */
  runInClient(script: string): Promise<string>;
  /** The pods of `options.extraPods`, by name. */
  extraPods: Record<string, ClusterPod>;
}

/** A mesh pod in namespace demo that no Service binds to the waypoint (for plain L4 traffic). */
export interface ExtraPod {
  node: 'node-a' | 'node-b';
  name: string;
  labels: Record<string, string>;
  serviceAccount: string;
}

export async function startWaypointScenario(
  options: { extraPods?: readonly ExtraPod[]; agentArgs?: readonly string[] } = {},
): Promise<WaypointScenario> {
  const mesh = await LocalMesh.create({
    nodes: ['node-a', 'node-b'],
    ...(options.agentArgs ? { agentArgs: options.agentArgs } : {}),
  });
  try {
    const pods = {
      client: await mesh.addPod('node-a', 'client', 'demo'),
      echoV1: await mesh.addPod('node-a', 'echo-v1', 'demo'),
      echoV2: await mesh.addPod('node-b', 'echo-v2', 'demo'),
    };
    const extraPods: Record<string, ClusterPod> = {};
    for (const p of options.extraPods ?? []) extraPods[p.name] = await mesh.addPod(p.node, p.name, 'demo');
    const vips = {
      echo: mesh.cluster.allocateServiceIp(),
      v1: mesh.cluster.allocateServiceIp(),
      v2: mesh.cluster.allocateServiceIp(),
    };
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
    const svc = (name: string, vip: string, selector: Record<string, string>, labels = {}) => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'demo', labels },
      spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
    });
    const base: Record<string, unknown>[] = [
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'demo', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
      },
      pod(pods.client, { app: 'client' }, 'client'),
      pod(pods.echoV1, { app: 'echo', version: 'v1' }, 'echo'),
      pod(pods.echoV2, { app: 'echo', version: 'v2' }, 'echo'),
      svc('echo', vips.echo, { app: 'echo' }, { 'hypha.dev/use-waypoint': 'waypoint' }),
      svc('echo-v1', vips.v1, { app: 'echo', version: 'v1' }),
      svc('echo-v2', vips.v2, { app: 'echo', version: 'v2' }),
      ...(options.extraPods ?? []).map((p) => pod(extraPods[p.name]!, p.labels, p.serviceAccount)),
    ];
    await mesh.writeConfig(base);
    await Promise.all([
      mesh.cluster.startApp(pods.echoV1, 'http-echo', [
        '--port',
        '8080',
        '--pod',
        'echo-v1',
        '--namespace',
        'demo',
      ]),
      mesh.cluster.startApp(pods.echoV2, 'http-echo', [
        '--port',
        '8080',
        '--pod',
        'echo-v2',
        '--namespace',
        'demo',
      ]),
    ]);
    await mesh.startAgents();
    const waypoint = await mesh.startWaypoint({ node: 'node-b', namespace: 'demo', name: 'waypoint' });
    // The config now also holds the waypoint's Gateway and pod: keep them on every rewrite.
    const withWaypoint = await import('node:fs/promises').then((fs) => fs.readFile(mesh.configPath, 'utf8'));
    const setExtra = async (extra: Record<string, unknown>[]) => {
      const { stringify } = await import('yaml');
      await mesh.writeConfig(`${withWaypoint}\n---\n${extra.map((o) => stringify(o)).join('---\n')}`);
    };
    const runInClient = async (script: string) => {
      const r = await mesh.cluster.exec(pods.client.netns, process.execPath, ['-e', script]);
      return r.stdout;
    };
    return { mesh, pods, vips, waypoint, base, setExtra, runInClient, extraPods };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

/** One HTTP GET from the client pod; resolves with status and the echo body (or the text). */
export function getScript(url: string, headers: Record<string, string> = {}): string {
  return `fetch(${JSON.stringify(url)},{headers:${JSON.stringify(headers)}}).then(async r=>{const t=await r.text();let b;try{b=JSON.parse(t)}catch{b=t}process.stdout.write(JSON.stringify({status:r.status,body:b}))}).catch(e=>{process.stdout.write(JSON.stringify({error:String(e.cause?.code??e.message)}))})`;
}

/** Waits until `f` returns true (bounded). */
export async function until(f: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
