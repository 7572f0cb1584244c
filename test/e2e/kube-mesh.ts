import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net, { type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '@hypha/shared';
import { AGENT_NODE_FLAGS } from '@hypha/shared/hbone';
import { fetchKube, type KubeRequestOptions, loadKubeConfig } from '@hypha/shared/kube';
import { createKubeCa, type KubeCa } from '../../agent/src/ca/kube.js';
import {
  type ClusterPod,
  createKubeApiServer,
  DEFAULT_API_AUDIENCE,
  type KubeApiServer,
  type KubeApiServerOptions,
  TestCluster,
} from '../src/index.js';
import { type AgentProcess, type LogEvent, trackProcess } from '../src/mesh/local-mesh.js';

const HYPHA_BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const SYSTEM_NS = 'hypha-system';

export interface KubeMeshOptions {
  nodes: readonly string[];
  logger?: Logger;
  agentLogLevel?: string;
  api?: KubeApiServerOptions;
}

export class KubeMesh {
  readonly cluster: TestCluster;
  readonly api: KubeApiServer;
  readonly ca: KubeCa;
  readonly dir: string;
  readonly agents = new Map<string, AgentProcess>();
  readonly #opts: KubeMeshOptions;
  readonly #forwarders: Server[] = [];
  readonly #kc: ReturnType<typeof loadKubeConfig>;
  #caPort = 0;
  #stopped = false;

  private constructor(
    opts: KubeMeshOptions,
    cluster: TestCluster,
    api: KubeApiServer,
    ca: KubeCa,
    dir: string,
  ) {
    this.#opts = opts;
    this.cluster = cluster;
    this.api = api;
    this.ca = ca;
    this.dir = dir;
    this.#kc = loadKubeConfig(api.kubeconfigPath);
  }

  static async create(opts: KubeMeshOptions): Promise<KubeMesh> {
    const api = await createKubeApiServer(opts.api ?? {});
    let cluster: TestCluster | undefined;
    let ca: KubeCa | undefined;
    try {
      api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: SYSTEM_NS } });
      api.put({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name: 'hypha-agent', namespace: SYSTEM_NS },
      });
      for (const n of opts.nodes) api.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: n } });
      // The agents' DaemonSet, as `hypha install` creates it: an agent told to stop reads it to tell
      // an upgrade (it stays) from an uninstall (it is gone or being deleted).
      api.put({
        apiVersion: 'apps/v1',
        kind: 'DaemonSet',
        metadata: { name: 'hypha-agent', namespace: SYSTEM_NS, uid: 'ds-hypha-agent' },
        spec: {
          selector: { matchLabels: { 'app.kubernetes.io/name': 'hypha-agent' } },
          template: {
            metadata: { labels: { 'app.kubernetes.io/name': 'hypha-agent' } },
            spec: { containers: [{ name: 'agent', image: 'hypha' }] },
          },
        },
      });
      cluster = await TestCluster.create({
        nodes: opts.nodes,
        ...(opts.logger ? { logger: opts.logger } : {}),
      });
      ca = await createKubeCa({
        kubeconfig: api.kubeconfigPath,
        host: '127.0.0.1',
        port: 0,
        ...(opts.logger ? { logger: opts.logger } : {}),
      });
      const dir = await mkdtemp(join(tmpdir(), 'hypha-kube-mesh-'));
      const mesh = new KubeMesh(opts, cluster, api, ca, dir);
      mesh.#caPort = (await ca.server.start()).port;
      const apiPort = Number(new URL(api.url).port);
      for (const n of opts.nodes) {
        const netns = cluster.node(n).netns;
        await mesh.#forward(netns, apiPort);
        await mesh.#forward(netns, mesh.#caPort);
      }
      // What the kubelet would mount from ConfigMap hypha-ca-root-cert.
      const cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', SYSTEM_NS) as unknown as {
        data: Record<string, string>;
      };
      await writeFile(mesh.rootCertPath, cm.data['root-cert.pem'] ?? '');
      return mesh;
    } catch (err) {
      await ca?.close(100);
      await cluster?.destroy();
      await api.close();
      throw err;
    }
  }

  get rootCertPath(): string {
    return join(this.dir, 'root-cert.pem');
  }

  /** An API request with the admin credentials (what `kubectl` would do). */
  request(path: string, options: KubeRequestOptions = {}): Promise<unknown> {
    return fetchKube(this.#kc, path, options);
  }

  /** Creates a pod's network namespace and its Pod object (through the API, with its IP as status). */
  async addPod(
    node: string,
    name: string,
    namespace: string,
    opts: { serviceAccount?: string; labels?: Record<string, string> } = {},
  ): Promise<ClusterPod> {
    const pod = await this.cluster.addPod({ node, name, namespace });
    await this.request(`/api/v1/namespaces/${namespace}/pods`, {
      method: 'POST',
      body: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, labels: opts.labels ?? { app: name } },
        spec: {
          nodeName: node,
          serviceAccountName: opts.serviceAccount ?? name,
          containers: [{ name: 'app', image: 'app' }],
        },
      },
    });
    // Status is the kubelet's to write: through the status subresource, as it does.
    const current = (await this.request(`/api/v1/namespaces/${namespace}/pods/${name}`)) as Record<
      string,
      unknown
    >;
    await this.request(`/api/v1/namespaces/${namespace}/pods/${name}/status`, {
      method: 'PUT',
      body: {
        ...current,
        status: {
          phase: 'Running',
          podIP: pod.ip,
          podIPs: [{ ip: pod.ip }],
          conditions: [{ type: 'Ready', status: 'True' }],
        },
      },
    });
    return pod;
  }

  async deletePod(pod: ClusterPod): Promise<void> {
    await this.request(`/api/v1/namespaces/${pod.namespace}/pods/${pod.name}`, { method: 'DELETE' });
    await this.cluster.removePod(pod);
  }

  /** Starts one agent per node and waits until each reports ready. */
  async startAgents(timeoutMs = 30_000): Promise<void> {
    await Promise.all(this.#opts.nodes.map((n) => this.startAgent(n, timeoutMs)));
  }

  async startAgent(node: string, timeoutMs = 30_000): Promise<AgentProcess> {
    const podName = `hypha-agent-${node}`;
    if (!this.api.find('v1', 'Pod', podName, SYSTEM_NS)) {
      this.api.put({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: podName,
          namespace: SYSTEM_NS,
          labels: { 'app.kubernetes.io/name': 'hypha-agent' },
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'DaemonSet',
              name: 'hypha-agent',
              uid: 'ds-hypha-agent',
              controller: true,
            },
          ],
        },
        spec: {
          nodeName: node,
          hostNetwork: true,
          serviceAccountName: 'hypha-agent',
          containers: [{ name: 'agent', image: 'hypha' }],
        },
        status: { phase: 'Running' },
      });
    }
    const token = (audiences: string[]) =>
      this.api.issueToken({ namespace: SYSTEM_NS, serviceAccount: 'hypha-agent', audiences, pod: podName });
    const caToken = join(this.dir, `ca-token-${node}`);
    await writeFile(caToken, token(['hypha-ca']));
    const kubeconfig = JSON.parse(await readFile(this.api.kubeconfigPath, 'utf8')) as {
      users: { user: { token: string } }[];
    };
    kubeconfig.users[0]!.user.token = token([DEFAULT_API_AUDIENCE]);
    const kubeconfigPath = join(this.dir, `kubeconfig-${node}`);
    await writeFile(kubeconfigPath, JSON.stringify(kubeconfig), { mode: 0o600 });
    const child = this.cluster.spawnNode(
      this.cluster.node(node).netns,
      HYPHA_BIN,
      [
        '--log-level',
        this.#opts.agentLogLevel ?? 'info',
        'agent',
        '--node',
        node,
        '--config',
        `kubernetes:${kubeconfigPath}`,
        '--ca-address',
        `https://127.0.0.1:${this.#caPort}`,
        '--ca-token-file',
        caToken,
        '--ca-root-file',
        this.rootCertPath,
        '--drain-timeout',
        '1s',
        '--handoff-dir',
        join(this.dir, `handoff-${node}`),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        nodeArgs: AGENT_NODE_FLAGS,
        // The downward API's values in the DaemonSet.
        env: { ...process.env, POD_NAME: podName, POD_NAMESPACE: SYSTEM_NS },
      },
    );
    const agent: AgentProcess = { node, ...trackProcess(child, `agent ${node}`) };
    this.agents.set(node, agent);
    await agent.waitFor((e) => e.msg === 'ready', timeoutMs);
    return agent;
  }

  /** Members of the node's capture set (nftables, inside the node namespace). */
  async findCaptureSet(node: string): Promise<string[]> {
    const r = await this.cluster.exec(this.cluster.node(node).netns, 'nft', [
      '-j',
      'list',
      'set',
      'inet',
      'hypha',
      'mesh_pods',
    ]);
    const parsed = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
    const elems = parsed.nftables.find((x) => x.set)?.set?.elem ?? [];
    return elems.map((e) => (typeof e === 'string' ? e : JSON.stringify(e)));
  }

  accessLogs(): LogEvent[] {
    return [...this.agents.values()].flatMap((a) => a.events.filter((e) => e.type === 'access'));
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const f of this.#forwarders) f.close();
    await this.cluster.destroy();
    await this.ca.close(200);
    await this.api.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  async #forward(netns: string, port: number): Promise<void> {
    const server = await this.cluster.listenIn(netns, { host: '127.0.0.1', port });
    server.on('connection', (inner: net.Socket) => {
      const outer = net.connect(port, '127.0.0.1');
      inner.pipe(outer).pipe(inner);
      const close = () => {
        inner.destroy();
        outer.destroy();
      };
      inner.on('error', close);
      outer.on('error', close);
      inner.on('close', close);
      outer.on('close', close);
    });
    this.#forwarders.push(server);
  }
}
