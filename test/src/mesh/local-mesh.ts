// A whole Hypha mesh on one Linux machine: a network-namespace cluster (from @hypha/test), a CA
// and one real `hypha agent` process per node, configured from a YAML file like a laptop install.
// `hypha demo` and the end-to-end tests both stand on this, so the demo shows what the tests prove.
//
//   node-a netns: hypha ca serve (on node-a's fabric address :15012), hypha agent --node node-a
//   node-b netns: hypha agent --node node-b
//   pods: one netns each, behind their node; apps started by the caller
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '@hypha/shared';
import { AGENT_NODE_FLAGS, CA_NODE_FLAGS, WAYPOINT_NODE_FLAGS } from '@hypha/shared/hbone';
import { CertificateAuthority } from '@hypha/shared/identity';
import { parseAllDocuments, stringify } from 'yaml';
import { type ClusterPod, type ExternalHost, type IpFamilies, TestCluster } from '../cluster/cluster.js';
import { createKubeApiServer, type KubeApiServer, type KubeObject } from '../kube-api/index.js';

export interface LocalMeshOptions {
  nodes: readonly string[];
  logger?: Logger;
  trustDomain?: string;
  /** Agent log level (its JSON lines are parsed; access logs are at info). */
  agentLogLevel?: string;
  /** Drain deadline for agents on stop. */
  drainTimeout?: string;
  /** Extra flags for every agent. */
  agentArgs?: readonly string[];
  /** Address families of the cluster: IPv4 only (default), dual-stack, IPv6 only. */
  ipFamilies?: IpFamilies;
  /**
   * Where agents and waypoints read config: the YAML file (default), or `kubernetes`: a stand-in
   * API server (test/src/kube-api) that every writeConfig mirrors (objects created, replaced,
   * deleted), read with `--config kubernetes:<kubeconfig>`. The CA reads its Pods from the file
   * in both modes.
   */
  configSource?: 'file' | 'kubernetes';
  /**
   * An outside world: external host `world` (TestCluster.addExternalHost, IPv4 clusters), made with
   * the cluster; the agents' DNS proxy forwards names outside the mesh to it (`--dns-upstream`), so
   * whatever resolver the caller runs there answers the outside world's names.
   */
  outsideWorld?: boolean;
}

/** A mesh process that exited while the mesh was up. */
export interface MeshProcessExit {
  /** `ca`, `agent node-a`, `waypoint ns/name`. */
  name: string;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One JSON log line of an agent (access logs have `type: "access"`). */
export type LogEvent = Record<string, unknown>;

export interface AgentProcess {
  readonly node: string;
  readonly process: ChildProcess;
  readonly events: LogEvent[];
  /** Resolves with the first log event (past or future) matching `predicate`. */
  waitFor(predicate: (e: LogEvent) => boolean, timeoutMs?: number): Promise<LogEvent>;
  /** Non-JSON output (crashes, Node warnings), last 8 KiB. */
  readonly stderrText: () => string;
}

export interface WaypointProcess extends AgentProcess {
  readonly namespace: string;
  readonly name: string;
  readonly pod: ClusterPod;
}

export interface StartWaypointOptions {
  node: string;
  namespace: string;
  /** Gateway name (and the waypoint pod's service account). */
  name: string;
  /** `hypha.dev/waypoint-for` of the Gateway. Default service. */
  for?: 'service' | 'workload' | 'all';
  timeoutMs?: number;
  /** Extra flags for `hypha waypoint`. */
  args?: readonly string[];
}

export interface StartGatewayOptions {
  node: string;
  namespace: string;
  /** Gateway name (and the gateway pod's service account). */
  name: string;
  /**
   * The Gateway (class `hypha`) and what goes with it (routes, kubernetes.io/tls Secrets), added to
   * the config with the gateway's pod.
   */
  objects: readonly unknown[];
  /** Replaces the config's header comment (writeConfig's `header`). */
  header?: string;
  timeoutMs?: number;
}

// The one `hypha` binary (agent/bin), found by path: the harness runs it, it does not import it.
const HYPHA_BIN = fileURLToPath(new URL('../../../agent/bin/hypha.js', import.meta.url));

export class LocalMesh {
  readonly cluster: TestCluster;
  readonly dir: string;
  readonly configPath: string;
  readonly trustDomain: string;
  readonly agents = new Map<string, AgentProcess>();
  readonly waypoints = new Map<string, WaypointProcess>();
  /** Ingress gateways (`hypha gateway`) by `namespace/name`. */
  readonly gateways = new Map<string, WaypointProcess>();
  readonly caAddress: string;
  /** The outside world (option `outsideWorld`): a host beyond the cluster, the agents' DNS upstream. */
  world: ExternalHost | undefined;
  /** The `hypha` CLI script the mesh's processes run. */
  readonly hyphaBin = HYPHA_BIN;
  readonly #opts: LocalMeshOptions;
  readonly #tokens = new Map<string, string>();
  #ca: ChildProcess | undefined;
  /** How each waypoint was started, so a restart runs it the same way. */
  readonly #waypointOptions = new Map<string, StartWaypointOptions>();
  #stopped = false;
  readonly #forwarders: Server[] = [];
  readonly #exitListeners = new Set<(exit: MeshProcessExit) => void>();
  /** The last config written as objects (startWaypoint adds its objects to it). */
  #objects: readonly unknown[] | undefined;
  #header = '';
  /** The stand-in API server (configSource `kubernetes`) and what writeConfig last put there. */
  #api: KubeApiServer | undefined;
  readonly #synced = new Map<string, string>();
  /** /etc/netns/<pod netns> directories writePodResolvConf made; stop() removes them. */
  readonly #netnsConfDirs: string[] = [];
  #createdEtcNetns = false;
  /** Namespaces with a forwarder to the API server on 127.0.0.1:<its port>. */
  readonly #apiForwarded = new Set<string>();

  private constructor(cluster: TestCluster, dir: string, opts: LocalMeshOptions) {
    this.cluster = cluster;
    this.dir = dir;
    this.configPath = join(dir, 'mesh.yaml');
    this.trustDomain = opts.trustDomain ?? 'cluster.local';
    this.#opts = opts;
    this.caAddress = `https://${hostPort(cluster.node(opts.nodes[0]!).ip, 15012)}`;
  }

  /** Builds the cluster and the CA; agents start with startAgents() once pods and config exist. */
  static async create(opts: LocalMeshOptions): Promise<LocalMesh> {
    const cluster = await TestCluster.create({
      nodes: opts.nodes,
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.ipFamilies ? { ipFamilies: opts.ipFamilies } : {}),
    });
    const dir = await mkdtemp(join(tmpdir(), 'hypha-mesh-'));
    const mesh = new LocalMesh(cluster, dir, opts);
    try {
      if (opts.configSource === 'kubernetes') mesh.#api = await createKubeApiServer({});
      if (opts.outsideWorld) mesh.world = await cluster.addExternalHost('world');
      await mesh.writeConfig([]);
      await mesh.#startCa();
    } catch (err) {
      await mesh.stop();
      throw err;
    }
    return mesh;
  }

  addPod(node: string, name: string, namespace: string): Promise<ClusterPod> {
    return this.cluster.addPod({ node, name, namespace });
  }

  /** The config last written as objects (with the waypoints' objects startWaypoint added), if so. */
  get configObjects(): readonly unknown[] | undefined {
    return this.#objects;
  }

  /**
   * Writes the mesh config (Kubernetes-shaped objects); running agents pick it up live. A `header`
   * (YAML comment lines, for whoever opens the file) stays when startWaypoint rewrites it.
   */
  async writeConfig(objects: readonly unknown[] | string, options: { header?: string } = {}): Promise<void> {
    this.#objects = typeof objects === 'string' ? undefined : objects;
    this.#header = typeof objects === 'string' ? '' : (options.header ?? '');
    const text =
      typeof objects === 'string' ? objects : this.#header + objects.map((o) => stringify(o)).join('---\n');
    // Write-then-rename so an agent never reads a half-written file.
    const tmp = `${this.configPath}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, text);
    const { rename } = await import('node:fs/promises');
    await rename(tmp, this.configPath);
    if (this.#api !== undefined) {
      const docs =
        typeof objects === 'string' ? parseAllDocuments(objects).map((d) => d.toJS() as unknown) : objects;
      this.#mirror(docs);
    }
  }

  /** The stand-in API server when the mesh runs with configSource `kubernetes`. */
  get api(): KubeApiServer | undefined {
    return this.#api;
  }

  /** The `--config` value of agents and waypoints started in `netns` (forwarding the API there). */
  async #configFlag(netns: string): Promise<string> {
    const api = this.#api;
    if (api === undefined) return `file:${this.configPath}`;
    if (!this.#apiForwarded.has(netns)) {
      this.#apiForwarded.add(netns);
      const port = Number(new URL(api.url).port);
      const server = await this.cluster.listenIn(netns, { host: '127.0.0.1', port });
      server.on('connection', (inner: Socket) => {
        const outer = netConnect(port, '127.0.0.1');
        inner.pipe(outer).pipe(inner);
        const close = () => {
          inner.destroy();
          outer.destroy();
        };
        for (const s of [inner, outer]) {
          s.on('error', close);
          s.on('close', close);
        }
      });
      this.#forwarders.push(server);
    }
    return `kubernetes:${api.kubeconfigPath}`;
  }

  /**
   * Makes the API server hold exactly `objects` (by apiVersion, kind, namespace, name), plus the
   * EndpointSlices Kubernetes' controller would make for each Service with a selector (the
   * Kubernetes source takes endpoints from slices only).
   */
  #mirror(objects: readonly unknown[]): void {
    const api = this.#api!;
    const next = new Map<string, KubeObject>();
    const all = objects.filter((o): o is KubeObject => o !== null && typeof o === 'object');
    for (const k of [...all, ...endpointSlicesFor(all)]) {
      next.set(JSON.stringify([k.apiVersion, k.kind, k.metadata?.namespace ?? '', k.metadata?.name]), k);
    }
    for (const [key, o] of next) {
      const text = JSON.stringify(o);
      if (this.#synced.get(key) === text) continue;
      api.put(structuredClone(o));
      this.#synced.set(key, text);
    }
    for (const key of [...this.#synced.keys()]) {
      if (next.has(key)) continue;
      const [apiVersion, kind, namespace, name] = JSON.parse(key) as string[];
      api.remove(apiVersion!, kind!, name!, namespace || undefined);
      this.#synced.delete(key);
    }
  }

  /** Writes the config and resolves once every running agent has applied this version. */
  async applyConfig(objects: readonly unknown[], timeoutMs = 10_000): Promise<void> {
    const agents = [...this.agents.values()];
    const applied = (e: LogEvent) => typeof e.msg === 'string' && e.msg.startsWith('config applied');
    const before = agents.map((a) => Math.max(0, ...a.events.filter(applied).map((e) => Number(e.version))));
    await this.writeConfig(objects);
    await Promise.all(
      agents.map((a, i) => a.waitFor((e) => applied(e) && Number(e.version) > (before[i] ?? 0), timeoutMs)),
    );
  }

  async #startCa(): Promise<void> {
    const caDir = join(this.dir, 'ca');
    const ca = await CertificateAuthority.init({ trustDomain: this.trustDomain });
    await ca.save(caDir);
    const tokens = this.#opts.nodes.map((node) => {
      const token = randomBytes(16).toString('hex');
      this.#tokens.set(node, token);
      return { token, node };
    });
    await writeFile(join(this.dir, 'tokens.yaml'), stringify({ tokens }));
    for (const [node, token] of this.#tokens) await writeFile(join(this.dir, `token-${node}`), token);
    await this.#spawnCa();
  }

  /** Kills the CA process (SIGKILL by default, as a crash would); the agents keep what they hold. */
  async killCa(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const ca = this.#ca;
    if (ca === undefined || ca.exitCode !== null || ca.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      ca.once('exit', () => resolve());
      ca.kill(signal);
    });
  }

  /** Starts the CA again from its directory (same root, same tokens), as a restarted pod would. */
  async restartCa(): Promise<void> {
    await this.killCa();
    await this.#spawnCa();
  }

  async #spawnCa(): Promise<void> {
    const caDir = join(this.dir, 'ca');
    const first = this.cluster.node(this.#opts.nodes[0]!);
    this.#ca = this.cluster.spawnNode(
      first.netns,
      HYPHA_BIN,
      [
        '--log-level',
        'info',
        'ca',
        'serve',
        '--dir',
        caDir,
        '--tokens',
        join(this.dir, 'tokens.yaml'),
        '--pods',
        this.configPath,
        '--listen',
        hostPort(first.ip, 15012),
        '--metrics-address',
        '127.0.0.1:15014',
        '--san',
        first.ip,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: CA_NODE_FLAGS },
    );
    this.#watchExit(this.#ca, 'ca');
    const proc = trackProcess(this.#ca, 'ca');
    await proc.waitFor((e) => typeof e.msg === 'string' && /listening/i.test(e.msg), 60_000);
  }

  /**
   * Calls `listener` whenever one of the mesh's processes (CA, agents, waypoints) exits before
   * stop(): the demo says which, and with what status. Returns a function that unsubscribes.
   */
  onProcessExit(listener: (exit: MeshProcessExit) => void): () => void {
    this.#exitListeners.add(listener);
    return () => this.#exitListeners.delete(listener);
  }

  #watchExit(child: ChildProcess, name: string): ChildProcess {
    child.once('exit', (code, signal) => {
      if (this.#stopped) return;
      for (const l of this.#exitListeners) l({ name, pid: child.pid ?? 0, code, signal });
    });
    return child;
  }

  get rootCertPath(): string {
    return join(this.dir, 'ca', 'root-cert.pem');
  }

  /** Starts one agent per node (or the named ones) and waits until each reports ready. */
  async startAgents(nodes: readonly string[] = this.#opts.nodes, timeoutMs = 30_000): Promise<void> {
    await Promise.all(nodes.map((n) => this.startAgent(n, timeoutMs)));
  }

  /** The node's agent hand-off directory (each node namespace shares this machine's filesystem). */
  handoffDir(node: string): string {
    return join(this.dir, `handoff-${node}`);
  }

  async startAgent(
    node: string,
    timeoutMs = 30_000,
    options: { args?: readonly string[]; waitFor?: (e: LogEvent) => boolean } = {},
  ): Promise<AgentProcess> {
    const n = this.cluster.node(node);
    const child = this.cluster.spawnNode(
      n.netns,
      HYPHA_BIN,
      [
        '--log-level',
        this.#opts.agentLogLevel ?? 'info',
        'agent',
        '--node',
        node,
        '--config',
        await this.#configFlag(n.netns),
        '--ca-address',
        this.caAddress,
        '--ca-token-file',
        join(this.dir, `token-${node}`),
        '--ca-root-file',
        this.rootCertPath,
        '--trust-domain',
        this.trustDomain,
        '--drain-timeout',
        this.#opts.drainTimeout ?? '1s',
        '--handoff-dir',
        this.handoffDir(node),
        ...(this.world !== undefined ? ['--dns-upstream', this.world.ip] : []),
        ...(this.#opts.agentArgs ?? []),
        ...(options.args ?? []),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        nodeArgs: AGENT_NODE_FLAGS,
        // One process per agent unless a test or bench asks for workers: the default (`auto`) follows
        // the CPU limit, which would make the suite's shape depend on the machine it runs on.
        env: { ...process.env, HYPHA_AGENT_WORKERS: process.env.HYPHA_AGENT_WORKERS ?? '1' },
      },
    );
    this.#watchExit(child, `agent ${node}`);
    const agent: AgentProcess = { node, ...trackProcess(child, `agent ${node}`) };
    this.agents.set(node, agent);
    await agent.waitFor(options.waitFor ?? ((e) => e.msg === 'ready'), timeoutMs);
    return agent;
  }

  /**
   * Upgrades a node's agent the zero-drop way: starts a new agent process with --takeover, which
   * takes the running one's sockets once ready. Resolves once the new one serves; the old one is
   * still draining then (`oldExited` resolves with its exit code when it is done).
   */
  async upgradeAgent(
    node: string,
    timeoutMs = 60_000,
    args: readonly string[] = [],
  ): Promise<{ old: AgentProcess; next: AgentProcess; oldExited: Promise<number | null> }> {
    const old = this.agents.get(node);
    if (old === undefined) throw new Error(`no agent runs on ${node}`);
    const oldExited = new Promise<number | null>((resolve) => {
      if (old.process.exitCode !== null || old.process.signalCode !== null) resolve(old.process.exitCode);
      else old.process.once('exit', (code) => resolve(code));
    });
    const next = await this.startAgent(node, timeoutMs, {
      args: ['--takeover', ...args],
      waitFor: (e) => typeof e.msg === 'string' && e.msg.startsWith('took over the listening sockets'),
    });
    return { old, next, oldExited };
  }

  /**
   * Adds a waypoint pod (its own network namespace on `node`) with its Gateway to the config, and
   * starts `hypha waypoint` inside that pod's namespace (not the node's: the waypoint is a pod the
   * agents do not capture). Resolves once it reports ready (config synced, certificate held).
   * The CA authorizes by node, so the waypoint presents its node's token, as the node's agent does.
   */
  async startWaypoint(opts: StartWaypointOptions): Promise<WaypointProcess> {
    const key = `${opts.namespace}/${opts.name}`;
    if (this.#objects === undefined)
      throw new Error('startWaypoint needs the config written as objects (writeConfig([...]))');
    const pod = await this.addPod(
      opts.node,
      `${opts.name}-${randomBytes(2).toString('hex')}`,
      opts.namespace,
    );
    await this.writeConfig([...this.#objects, ...waypointConfigObjects(opts, pod)], { header: this.#header });
    this.#waypointOptions.set(key, opts);
    return this.#spawnWaypoint(opts, pod);
  }

  /**
   * Kills a waypoint (SIGKILL by default, as a crash would) and starts it again in the same pod,
   * as the kubelet restarts a crashed container: same pod, same address. Resolves once it is ready.
   */
  async restartWaypoint(
    namespace: string,
    name: string,
    signal: NodeJS.Signals = 'SIGKILL',
  ): Promise<WaypointProcess> {
    const wp = this.waypoints.get(`${namespace}/${name}`);
    if (wp === undefined) throw new Error(`no waypoint ${namespace}/${name} runs`);
    const p = wp.process;
    if (p.exitCode === null && p.signalCode === null) {
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill(signal);
      });
    }
    return this.#spawnWaypoint(
      this.#waypointOptions.get(`${namespace}/${name}`) ?? { node: wp.node, namespace, name },
      wp.pod,
    );
  }

  async #spawnWaypoint(opts: StartWaypointOptions, pod: ClusterPod): Promise<WaypointProcess> {
    const key = `${opts.namespace}/${opts.name}`;
    const child = this.cluster.spawnNode(
      pod.netns,
      HYPHA_BIN,
      [
        '--log-level',
        this.#opts.agentLogLevel ?? 'info',
        'waypoint',
        '--name',
        opts.name,
        '--namespace',
        opts.namespace,
        '--config',
        await this.#configFlag(pod.netns),
        '--ca-address',
        this.caAddress,
        '--ca-token-file',
        join(this.dir, `token-${opts.node}`),
        '--ca-root-file',
        this.rootCertPath,
        '--trust-domain',
        this.trustDomain,
        '--drain-timeout',
        this.#opts.drainTimeout ?? '1s',
        // ServiceEntry hosts served for egress resolve with the outside world's resolver.
        ...(this.world !== undefined ? ['--dns-upstream', this.world.ip] : []),
        ...(opts.args ?? []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: WAYPOINT_NODE_FLAGS },
    );
    const wp: WaypointProcess = {
      node: opts.node,
      namespace: opts.namespace,
      name: opts.name,
      pod,
      ...trackProcess(this.#watchExit(child, `waypoint ${key}`), `waypoint ${key}`),
    };
    this.waypoints.set(key, wp);
    await wp.waitFor((e) => e.msg === 'ready', opts.timeoutMs ?? 30_000);
    return wp;
  }

  /** SIGTERM to the waypoint; resolves once it exited. Its pod and Gateway stay in the config. */
  async stopWaypoint(namespace: string, name: string): Promise<void> {
    const wp = this.waypoints.get(`${namespace}/${name}`);
    if (wp === undefined) return;
    this.waypoints.delete(`${namespace}/${name}`);
    const p = wp.process;
    if (p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
      p.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      p.kill('SIGTERM');
    });
  }

  /**
   * Adds an ingress gateway pod on `node` (outside the mesh's capture, as a gateway pod is) with
   * `opts.objects` to the config, and starts `hypha gateway` in that pod's namespace. Resolves once
   * it reports ready. Like a waypoint, it presents its node's token to the CA.
   */
  async startGateway(opts: StartGatewayOptions): Promise<WaypointProcess> {
    const key = `${opts.namespace}/${opts.name}`;
    if (this.#objects === undefined)
      throw new Error('startGateway needs the config written as objects (writeConfig([...]))');
    const pod = await this.addPod(
      opts.node,
      `${opts.name}-${randomBytes(2).toString('hex')}`,
      opts.namespace,
    );
    const podObject = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: pod.name,
        namespace: opts.namespace,
        labels: {
          'gateway.networking.k8s.io/gateway-name': opts.name,
          'hypha.dev/dataplane-mode': 'none',
        },
      },
      spec: {
        nodeName: opts.node,
        serviceAccountName: opts.name,
        containers: [{ name: 'gateway', image: 'hypha' }],
      },
      status: {
        podIP: pod.ip,
        podIPs: pod.ips.map((ip) => ({ ip })),
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    };
    await this.writeConfig([...this.#objects, podObject, ...opts.objects], {
      header: opts.header ?? this.#header,
    });
    const child = this.cluster.spawnNode(
      pod.netns,
      HYPHA_BIN,
      [
        '--log-level',
        this.#opts.agentLogLevel ?? 'info',
        'gateway',
        '--name',
        opts.name,
        '--namespace',
        opts.namespace,
        '--config',
        await this.#configFlag(pod.netns),
        '--ca-address',
        this.caAddress,
        '--ca-token-file',
        join(this.dir, `token-${opts.node}`),
        '--ca-root-file',
        this.rootCertPath,
        '--trust-domain',
        this.trustDomain,
        '--drain-timeout',
        this.#opts.drainTimeout ?? '1s',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: WAYPOINT_NODE_FLAGS },
    );
    const gw: WaypointProcess = {
      node: opts.node,
      namespace: opts.namespace,
      name: opts.name,
      pod,
      ...trackProcess(this.#watchExit(child, `gateway ${key}`), `gateway ${key}`),
    };
    this.gateways.set(key, gw);
    await gw.waitFor((e) => e.msg === 'ready', opts.timeoutMs ?? 30_000);
    return gw;
  }

  /**
   * Gives a pod its own resolv.conf (`/etc/netns/<netns>/resolv.conf`, which `ip netns exec` mounts
   * over /etc/resolv.conf for processes started afterwards), naming `nameserver` and the search path
   * of a pod in its namespace. stop() removes it.
   */
  async writePodResolvConf(pod: ClusterPod, nameserver: string): Promise<void> {
    const dir = join('/etc/netns', pod.netns);
    if (!existsSync('/etc/netns')) this.#createdEtcNetns = true;
    await mkdir(dir, { recursive: true });
    this.#netnsConfDirs.push(dir);
    await writeFile(
      join(dir, 'resolv.conf'),
      `nameserver ${nameserver}\nsearch ${pod.namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`,
    );
  }

  /** Access-log lines of every agent so far. */
  accessLogs(): LogEvent[] {
    return [...this.agents.values()].flatMap((a) => a.events.filter((e) => e.type === 'access'));
  }

  /** Runs a Node one-liner inside a node's namespace and returns what it printed (admin, metrics). */
  async fetchInNode(node: string, url: string, method = 'GET'): Promise<string> {
    const script = `fetch(${JSON.stringify(url)},{method:${JSON.stringify(method)}}).then(async r=>{process.stdout.write(await r.text());process.exitCode=r.ok?0:1}).catch(e=>{console.error(e.message);process.exitCode=2})`;
    const r = await this.cluster.exec(this.cluster.node(node).netns, process.execPath, ['-e', script]);
    return r.stdout;
  }

  /**
   * Unix sockets in the mesh directory that reach each running agent's and waypoint's admin port
   * (it listens on localhost inside its namespace), so tools on the host can use them, e.g.
   * `hypha tap --admin unix:PATH`. One small forwarder per namespace; they end with the mesh.
   */
  async exposeAdmin(): Promise<{ name: string; address: string }[]> {
    const targets = [
      ...[...this.agents.keys()].map((node) => ({
        name: `agent ${node}`,
        netns: this.cluster.node(node).netns,
        file: `admin-${node}.sock`,
      })),
      ...[...this.waypoints.values()].map((w) => ({
        name: `waypoint ${w.namespace}/${w.name}`,
        netns: w.pod.netns,
        file: `admin-waypoint-${w.namespace}-${w.name}.sock`,
      })),
    ];
    return Promise.all(
      targets.map(async (t) => {
        const path = join(this.dir, t.file);
        const child = this.cluster.spawn(t.netns, process.execPath, ['-e', ADMIN_FORWARDER, path], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        await new Promise<void>((resolve, reject) => {
          let err = '';
          child.stderr?.on('data', (d: Buffer) => {
            err += d.toString();
          });
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) =>
            reject(new Error(`admin forwarder for ${t.name} exited ${code}: ${err}`)),
          );
        });
        return { name: t.name, address: `unix:${path}` };
      }),
    );
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const f of this.#forwarders) f.close();
    await this.cluster.destroy();
    await this.#api?.close();
    for (const d of this.#netnsConfDirs) await rm(d, { recursive: true, force: true });
    if (this.#createdEtcNetns) await rmdir('/etc/netns').catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Forwards each connection on a unix socket (argv[1], mode 0600) to 127.0.0.1:15000 of its namespace. */
const ADMIN_FORWARDER = `const net=require('net'),fs=require('fs');const p=process.argv[1];try{fs.unlinkSync(p)}catch{}
const s=net.createServer(c=>{const u=net.connect(15000,'127.0.0.1');const k=()=>{c.destroy();u.destroy()};
c.on('error',k);u.on('error',k);c.on('close',k);u.on('close',k);c.pipe(u).pipe(c)});
s.listen(p,()=>{fs.chmodSync(p,0o600);process.stdout.write('listening\\n')});process.on('SIGTERM',()=>process.exit(0));`;

/** The waypoint's Gateway and pod, as `hypha waypoint apply` and the Deployment would create them. */
function waypointConfigObjects(opts: StartWaypointOptions, pod: ClusterPod): Record<string, unknown>[] {
  return [
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: {
        name: opts.name,
        namespace: opts.namespace,
        labels: { 'hypha.dev/waypoint-for': opts.for ?? 'service' },
      },
      spec: {
        gatewayClassName: 'hypha-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: pod.name,
        namespace: opts.namespace,
        labels: {
          'gateway.networking.k8s.io/gateway-name': opts.name,
          'hypha.dev/dataplane-mode': 'none',
        },
      },
      spec: {
        nodeName: opts.node,
        serviceAccountName: opts.name,
        containers: [{ name: 'waypoint', image: 'hypha', ports: [{ name: 'hbone', containerPort: 15008 }] }],
      },
      status: {
        podIP: pod.ip,
        podIPs: pod.ips.map((ip) => ({ ip })),
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    },
  ];
}

type PodShape = {
  metadata: { name?: string; namespace?: string; labels?: Record<string, string> };
  spec?: { nodeName?: string; containers?: { ports?: { name?: string; containerPort?: number }[] }[] };
  status?: { podIP?: string; podIPs?: { ip: string }[]; conditions?: { type: string; status: string }[] };
};
type ServiceShape = {
  metadata: { name?: string; namespace?: string };
  spec?: {
    selector?: Record<string, string>;
    ports?: { name?: string; port: number; targetPort?: number | string; protocol?: string }[];
  };
};

/** What the EndpointSlice controller makes of `objects`: one slice per Service with a selector and family. */
function endpointSlicesFor(objects: readonly KubeObject[]): KubeObject[] {
  const pods = objects.filter((o) => o.kind === 'Pod') as unknown as PodShape[];
  const out: KubeObject[] = [];
  for (const svc of objects.filter((o) => o.kind === 'Service') as unknown as ServiceShape[]) {
    const selector = svc.spec?.selector;
    if (selector === undefined || Object.keys(selector).length === 0) continue;
    const ns = svc.metadata.namespace ?? 'default';
    const members = pods.filter(
      (p) =>
        (p.metadata.namespace ?? 'default') === ns &&
        Object.entries(selector).every(([k, v]) => p.metadata.labels?.[k] === v),
    );
    for (const family of ['IPv4', 'IPv6'] as const) {
      const endpoints = members.flatMap((p) => {
        const ips = (p.status?.podIPs?.map((x) => x.ip) ?? [p.status?.podIP]).filter(
          (ip): ip is string => ip !== undefined && ip.includes(':') === (family === 'IPv6'),
        );
        if (ips.length === 0) return [];
        const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
        return [
          {
            addresses: ips.slice(0, 1),
            conditions: { ready },
            ...(p.spec?.nodeName ? { nodeName: p.spec.nodeName } : {}),
            targetRef: { kind: 'Pod', name: p.metadata.name, namespace: ns },
          },
        ];
      });
      if (endpoints.length === 0 && family === 'IPv6') continue;
      out.push({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${svc.metadata.name}-${family.toLowerCase()}`,
          namespace: ns,
          labels: { 'kubernetes.io/service-name': svc.metadata.name ?? '' },
        },
        addressType: family,
        endpoints,
        // Numeric target ports only (named ones would be resolved per pod; the harness uses numbers).
        ports: (svc.spec?.ports ?? []).map((p) => ({
          ...(p.name !== undefined ? { name: p.name } : {}),
          port: typeof p.targetPort === 'number' ? p.targetPort : p.port,
          protocol: p.protocol ?? 'TCP',
        })),
      });
    }
  }
  return out;
}

/** `ip:port`, IPv6 in brackets. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Collects a child's JSON log lines; waitFor resolves on the first matching line, past or future. */
export function trackProcess(child: ChildProcess, name: string): Omit<AgentProcess, 'node'> {
  const events: LogEvent[] = [];
  const waiters = new Set<{ p: (e: LogEvent) => boolean; resolve: (e: LogEvent) => void }>();
  let stderr = '';
  let buf = '';
  const onLine = (line: string) => {
    if (!line.startsWith('{')) {
      stderr = `${stderr + line}\n`.slice(-8192);
      return;
    }
    let e: LogEvent;
    try {
      e = JSON.parse(line) as LogEvent;
    } catch {
      stderr = `${stderr + line}\n`.slice(-8192);
      return;
    }
    events.push(e);
    for (const w of waiters) {
      if (w.p(e)) {
        waiters.delete(w);
        w.resolve(e);
      }
    }
  };
  const feed = (d: Buffer) => {
    buf += d.toString();
    let i = buf.indexOf('\n');
    while (i >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
      i = buf.indexOf('\n');
    }
  };
  child.stdout?.on('data', feed);
  child.stderr?.on('data', feed);
  let exited: string | undefined;
  const exitWaiters = new Set<(why: string) => void>();
  child.once('exit', (code, signal) => {
    exited = `${name} exited (code ${code}, signal ${signal})`;
    for (const w of exitWaiters) w(exited);
  });
  return {
    process: child,
    events,
    stderrText: () => stderr,
    waitFor(p, timeoutMs = 10_000) {
      const seen = events.find(p);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const fail = (why: string) => {
          clearTimeout(timer);
          waiters.delete(w);
          exitWaiters.delete(fail);
          const last = events
            .slice(-5)
            .map((e) => JSON.stringify(e))
            .join('\n');
          reject(new Error(`${why}\nlast log lines:\n${last}\n${stderr.slice(-2000)}`));
        };
        const timer = setTimeout(
          () => fail(`timed out after ${timeoutMs} ms waiting for ${name}`),
          timeoutMs,
        );
        const w = {
          p,
          resolve: (e: LogEvent) => {
            clearTimeout(timer);
            exitWaiters.delete(fail);
            resolve(e);
          },
        };
        waiters.add(w);
        if (exited) fail(exited);
        else exitWaiters.add(fail);
      });
    },
  };
}
