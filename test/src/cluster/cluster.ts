// A small Kubernetes-like cluster built from Linux network namespaces, for end-to-end tests and
// `hypha demo`.
//
//   pod ns (eth0 podIP/32) ──veth── node ns (pK gw/32) ── fab0 ──veth── fabric ns (br0) ── other nodes
//
// Invariants:
// - Everything lives in namespaces this run created; the machine's own namespace gets no
//   interface, address or route, and no namespace has a route to the outside.
// - Every run owns a prefix `hyt<3 hex>` and the address block derived from the same number
//   (10.S.T.0/20), claimed atomically by creating `<prefix>-fabric` (creation fails if another run
//   holds it). Parallel runs therefore never share names or addresses.
// - A pod on node B is reached from node A only through node B's fabric address (per-node /24
//   pod routes), so traffic between nodes always crosses the fabric bridge.
// - Teardown kills every process inside the namespaces before deleting them (a live process would
//   keep a deleted namespace, its veths and addresses alive). It runs on destroy(), on process
//   exit and on SIGINT/SIGTERM; `cleanupStale()` removes what a SIGKILLed run left behind.
//
// Address block for id N (0 <= N < 3072): S = 64 + (N >> 4), T = (N & 15) << 4
//   10.S.T.0/24        fabric: node i at .(i+1), external hosts (addExternalHost) from .200
//   10.S.(T+1).0/24    service VIPs (allocateServiceIp; no interface carries them)
//   10.S.(T+2+i).0/24  pods of node i: .1 is the node-side gateway, pods from .2
// With IPv6 (ipFamilies 'dual' or 'ipv6') the run also owns the unique-local block
// fd68:7970:N::/48 (N in hex), laid out the same way:
//   fd68:7970:N:0::/64      fabric: node i at ::(i+1)
//   fd68:7970:N:1::/112     service VIPs (allocateServiceIp6)
//   fd68:7970:N:(2+i)::/64  pods of node i: ::1 is the node-side gateway, pod k at ::k (k as in IPv4)
// 'ipv6' builds an IPv6-only cluster: no IPv4 address anywhere but loopback.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Server } from 'node:net';
import type { Logger } from '@hypha/shared';
import { MESH_PROCESS_ENV } from '@hypha/shared/hbone';
import { type RunningApp, runApp, type SampleApp, startApp } from './apps.js';
import { type ExternalHttps, type ExternalHttpsOptions, startExternalHttps } from './external-https.js';
import { type HeldConnection, heldConnectionScript, steerHeldConnection } from './held-connection.js';
import { ClusterError, listNetns, type RunResult, removeNetnsSync, runCommand } from './run.js';

/** Marks every namespace the harness creates: `hyt` + 3 hex digits + `-`. */
export const CLUSTER_NETNS_PATTERN = /^hyt[0-9a-f]{3}-/;
/** Written as the fabric bridge's alias; cleanupStale reads the owner pid from it. */
export const OWNER_ALIAS_PREFIX = 'hypha-test:owner=';

const MAX_ID = 3072;
const MAX_NODES = 14;
const NAME_RE = /^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/;

/** Address families of a cluster: IPv4 only (default), dual-stack, or IPv6 only. */
export type IpFamilies = 'ipv4' | 'dual' | 'ipv6';

export interface ClusterNode {
  readonly name: string;
  /**
   * Address on the fabric; other nodes route this node's pod CIDR through it. The IPv4 address,
   * or the IPv6 one in an IPv6-only cluster.
   */
  readonly ip: string;
  /** Every fabric address of the node, IPv4 first. */
  readonly ips: readonly string[];
  /** The node's IPv6 fabric address (dual-stack and IPv6-only clusters). */
  readonly ipv6: string | undefined;
  readonly netns: string;
  /** The block its pods get addresses from, e.g. `10.70.34.0/24` (IPv6-only: the /64). */
  readonly podCidr: string;
  /** Node-side address of every pod veth, the pods' default gateway (IPv6-only: the IPv6 one). */
  readonly podGateway: string;
  /** The IPv6 pod block, e.g. `fd68:7970:2a3:4::/64`, when the cluster has IPv6. */
  readonly podCidr6: string | undefined;
  /** The IPv6 gateway of every pod veth, when the cluster has IPv6. */
  readonly podGateway6: string | undefined;
}

export interface ClusterPod {
  readonly name: string;
  readonly namespace: string;
  readonly node: string;
  /** The pod's primary address: IPv4, or IPv6 in an IPv6-only cluster (as Kubernetes' podIP). */
  readonly ip: string;
  /** Every address of the pod, IPv4 first (as Kubernetes' podIPs). */
  readonly ips: readonly string[];
  /** The pod's IPv6 address (dual-stack and IPv6-only clusters). */
  readonly ipv6: string | undefined;
  readonly netns: string;
  /** The pod's veth peer inside the node namespace. */
  readonly hostInterface: string;
}

/**
 * A host beyond the cluster (the "outside world": an external API, a resolver): its own namespace
 * on the fabric bridge, reached by nodes directly and by pods through their node. It runs no agent
 * and holds no pod, so nothing the mesh knows has its address.
 */
export interface ExternalHost {
  readonly name: string;
  /** Its fabric address, 10.S.T.(200+k). */
  readonly ip: string;
  readonly netns: string;
  /** The HTTPS API it serves, when asked for (`addExternalHost(name, { https })`). */
  readonly https?: ExternalHttps | undefined;
}

export interface FabricCapture {
  /** Stops tcpdump and returns the raw pcap bytes captured on the fabric. */
  stop(): Promise<Buffer>;
}

export interface TestClusterOptions {
  nodes: readonly string[];
  logger?: Logger;
  /** Tear down on SIGINT/SIGTERM (then re-raise the signal if nobody else listens). Default true. */
  handleSignals?: boolean;
  /** IPv4 only (default), dual-stack, or IPv6 only. */
  ipFamilies?: IpFamilies;
}

export interface AddPodOptions {
  node: string;
  name: string;
  namespace?: string;
}

interface NodeState extends ClusterNode {
  readonly index: number;
  /** IPv4 node fields, absent in an IPv6-only cluster. */
  readonly v4: { ip: string; podCidr: string; podGateway: string } | undefined;
  nextHost: number;
  /** Host numbers of removed pods, reused (oldest first) once the never-used ones run out. */
  readonly freeHosts: number[];
}

const live = new Set<TestCluster>();
let handlersInstalled = false;

function installProcessHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const cluster of live) cluster.destroySync();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      const handling = [...live].filter((c) => c.handlesSignals);
      for (const cluster of handling) cluster.destroySync();
      // Our listener replaced the default "exit on signal"; restore it when nobody else cares.
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

export class TestCluster {
  readonly id: number;
  readonly prefix: string;
  readonly fabricNetns: string;
  /** The run's whole block, e.g. `10.70.32.0/20`. */
  readonly addressBlock: string;
  readonly serviceCidr: string;
  /** The run's IPv6 unique-local block (`fd68:7970:N::/48`), when the cluster has IPv6. */
  readonly addressBlock6: string | undefined;
  /** The IPv6 service CIDR, when the cluster has IPv6. */
  readonly serviceCidr6: string | undefined;
  readonly ipFamilies: IpFamilies;
  readonly handlesSignals: boolean;
  readonly #octets: { s: number; t: number };
  /** `fd68:7970:N` (no trailing colon), the first three groups of every IPv6 address of the run. */
  readonly #v6: string;
  readonly #nodes = new Map<string, NodeState>();
  readonly #pods = new Map<string, ClusterPod>();
  /** Host number (last address part) of each pod, returned to its node on removePod. */
  readonly #hostOf = new Map<string, number>();
  readonly #externals = new Map<string, ExternalHost>();
  readonly #children = new Set<ChildProcess>();
  readonly #log: Logger | undefined;
  #nextIface = 0;
  #nextVip = 10;
  #nextVip6 = 10;
  #destroyed = false;

  private constructor(id: number, options: TestClusterOptions) {
    this.id = id;
    this.prefix = `hyt${id.toString(16).padStart(3, '0')}`;
    this.fabricNetns = `${this.prefix}-fabric`;
    const s = 64 + (id >> 4);
    const t = (id & 15) << 4;
    this.#octets = { s, t };
    this.ipFamilies = options.ipFamilies ?? 'ipv4';
    this.#v6 = `fd68:7970:${id.toString(16)}`;
    const v6 = this.ipFamilies !== 'ipv4';
    this.addressBlock6 = v6 ? canonical6(`${this.#v6}::/48`) : undefined;
    this.serviceCidr6 = v6 ? canonical6(`${this.#v6}:1::/112`) : undefined;
    // In an IPv6-only cluster the primary block is the IPv6 one.
    this.addressBlock = this.ipFamilies === 'ipv6' ? this.addressBlock6! : `10.${s}.${t}.0/20`;
    this.serviceCidr = this.ipFamilies === 'ipv6' ? this.serviceCidr6! : `10.${s}.${t + 1}.0/24`;
    this.handlesSignals = options.handleSignals ?? true;
    this.#log = options.logger?.child({ component: 'test-cluster', prefix: this.prefix });
  }

  /** Builds the fabric and the nodes. On any failure everything created so far is removed. */
  static async create(options: TestClusterOptions): Promise<TestCluster> {
    validateNodes(options.nodes);
    if ((options.ipFamilies ?? 'ipv4') !== 'ipv4' && !existsSync('/proc/sys/net/ipv6')) {
      throw new ClusterError(
        'IPV6_UNSUPPORTED',
        `${options.ipFamilies === 'dual' ? 'a dual-stack' : 'an IPv6-only'} cluster needs IPv6 in the kernel, and this ` +
          'one has it disabled (/proc/sys/net/ipv6 is missing: ipv6.disable=1 on the kernel command line?)',
      );
    }
    if (options.ipFamilies !== undefined && !['ipv4', 'dual', 'ipv6'].includes(options.ipFamilies)) {
      throw new ClusterError(
        'BAD_INPUT',
        `ipFamilies must be ipv4, dual or ipv6, got ${String(options.ipFamilies)}`,
      );
    }
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new ClusterError(
        'NOT_ROOT',
        'the namespace cluster needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN to create network namespaces); run as root, e.g. with sudo',
      );
    }
    const cluster = await TestCluster.#claim(options);
    live.add(cluster);
    installProcessHandlers();
    try {
      await cluster.#buildFabric();
      for (const [index, name] of options.nodes.entries()) await cluster.#buildNode(name, index);
      await cluster.#buildRoutes();
    } catch (err) {
      cluster.destroySync();
      throw err;
    }
    cluster.#log?.info({ nodes: options.nodes, block: cluster.addressBlock }, 'cluster ready');
    return cluster;
  }

  static async #claim(options: TestClusterOptions): Promise<TestCluster> {
    const taken = new Set((await listNetns()).map((n) => n.slice(0, 6)));
    for (let attempt = 0; attempt < 32; attempt++) {
      const id = randomInt(MAX_ID);
      const cluster = new TestCluster(id, options);
      if (taken.has(cluster.prefix)) continue;
      try {
        // `ip netns add` fails if the name exists: creating the fabric namespace is the lock.
        await runCommand('ip', ['netns', 'add', cluster.fabricNetns]);
        return cluster;
      } catch (err) {
        if (err instanceof ClusterError && err.code === 'TOOL_MISSING') throw err;
        if (err instanceof ClusterError && /exists/i.test(err.message)) continue;
        if (err instanceof ClusterError && /not permitted|permission denied|read-only/i.test(err.message)) {
          throw new ClusterError(
            'NETNS_UNSUPPORTED',
            `cannot create network namespaces here (${err.message}); run as root on a Linux host, or in a ` +
              'container with --privileged (CAP_SYS_ADMIN and CAP_NET_ADMIN)',
            { cause: err },
          );
        }
        throw err;
      }
    }
    throw new ClusterError(
      'NO_FREE_BLOCK',
      'could not claim a free cluster prefix after 32 tries; remove leftovers with cleanupStale() or `ip netns list`',
    );
  }

  get nodes(): readonly ClusterNode[] {
    return [...this.#nodes.values()].map(publicNode);
  }

  get pods(): readonly ClusterPod[] {
    return [...this.#pods.values()];
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  node(name: string): ClusterNode {
    return publicNode(this.#node(name));
  }

  /**
   * A fresh address from the run's service CIDR, for Service VIPs in configs (an IPv6 one in an
   * IPv6-only cluster).
   */
  allocateServiceIp(): string {
    if (this.ipFamilies === 'ipv6') return this.allocateServiceIp6();
    if (this.#nextVip > 254)
      throw new ClusterError('BAD_INPUT', `service CIDR ${this.serviceCidr} is exhausted`);
    return `10.${this.#octets.s}.${this.#octets.t + 1}.${this.#nextVip++}`;
  }

  /** A fresh IPv6 service VIP from the run's IPv6 service CIDR (dual-stack and IPv6-only clusters). */
  allocateServiceIp6(): string {
    if (this.serviceCidr6 === undefined) {
      throw new ClusterError(
        'BAD_INPUT',
        `cluster ${this.prefix} has no IPv6 (create it with ipFamilies: 'dual' or 'ipv6')`,
      );
    }
    if (this.#nextVip6 > 0xfffe)
      throw new ClusterError('BAD_INPUT', `service CIDR ${this.serviceCidr6} is exhausted`);
    return canonical6(`${this.#v6}:1::${(this.#nextVip6++).toString(16)}`);
  }

  async addPod(options: AddPodOptions): Promise<ClusterPod> {
    this.#assertLive();
    const namespace = options.namespace ?? 'default';
    if (!NAME_RE.test(options.name) || !NAME_RE.test(namespace)) {
      throw new ClusterError(
        'BAD_INPUT',
        `pod "${namespace}/${options.name}": names must be lowercase DNS labels of 1-32 characters`,
      );
    }
    const key = `${namespace}/${options.name}`;
    if (this.#pods.has(key)) throw new ClusterError('BAD_INPUT', `pod ${key} already exists in this cluster`);
    const node = this.#node(options.node);
    if (node.nextHost > 254 && node.freeHosts.length === 0)
      throw new ClusterError('BAD_INPUT', `node ${node.name} has no free pod addresses`);
    const host = node.nextHost <= 254 ? node.nextHost++ : node.freeHosts.shift()!;
    const ip4 = node.v4 ? `${node.v4.podCidr.split('.').slice(0, 3).join('.')}.${host}` : undefined;
    const ip6 = node.podCidr6
      ? canonical6(`${this.#v6}:${(2 + node.index).toString(16)}::${host}`)
      : undefined;
    const ips = [ip4, ip6].filter((x): x is string => x !== undefined);
    const netns = `${this.prefix}-${namespace}.${options.name}`;
    const hostInterface = `p${this.#nextIface++}`;
    const pod: ClusterPod = {
      name: options.name,
      namespace,
      node: node.name,
      ip: ips[0]!,
      ips,
      ipv6: ip6,
      netns,
      hostInterface,
    };
    await runCommand('ip', ['netns', 'add', netns]);
    this.#pods.set(key, pod);
    this.#hostOf.set(key, host);
    try {
      const nodeSide = [`link add ${hostInterface} type veth peer name eth0 netns ${netns}`];
      const podSide = ['link set lo up'];
      if (ip4 !== undefined && node.v4) {
        nodeSide.push(`addr add ${node.v4.podGateway}/32 dev ${hostInterface}`);
        podSide.push(`addr add ${ip4}/32 dev eth0`);
      }
      if (ip6 !== undefined && node.podGateway6) {
        // nodad: the addresses are ours alone, and a tentative address would not answer for ~1 s.
        nodeSide.push(`addr add ${node.podGateway6}/128 dev ${hostInterface} nodad`);
        podSide.push(`addr add ${ip6}/128 dev eth0 nodad`);
      }
      nodeSide.push(`link set ${hostInterface} up`);
      podSide.push('link set eth0 up');
      if (ip4 !== undefined && node.v4) {
        nodeSide.push(`route add ${ip4}/32 dev ${hostInterface} src ${node.v4.podGateway}`);
        podSide.push(
          `route add ${node.v4.podGateway}/32 dev eth0`,
          `route add default via ${node.v4.podGateway} dev eth0 src ${ip4}`,
        );
      }
      if (ip6 !== undefined && node.podGateway6) {
        nodeSide.push(`route add ${ip6}/128 dev ${hostInterface} src ${node.podGateway6}`);
        podSide.push(
          `route add ${node.podGateway6}/128 dev eth0`,
          `route add default via ${node.podGateway6} dev eth0 src ${ip6}`,
        );
      }
      await batch(node.netns, nodeSide);
      await batch(netns, podSide);
    } catch (err) {
      this.#pods.delete(key);
      this.#hostOf.delete(key);
      node.freeHosts.push(host);
      removeNetnsSync([netns]);
      throw err;
    }
    this.#log?.debug({ pod: key, node: node.name, ips }, 'pod added');
    return pod;
  }

  async removePod(pod: Pick<ClusterPod, 'name' | 'namespace'>): Promise<void> {
    const key = `${pod.namespace}/${pod.name}`;
    const known = this.#pods.get(key);
    if (!known) return;
    this.#pods.delete(key);
    for (const child of this.#children) {
      if (childNetns(child) === known.netns) child.kill('SIGKILL');
    }
    removeNetnsSync([known.netns]);
    // Its address goes back to the node (a long soak adds and removes more pods than a /24 holds).
    const host = this.#hostOf.get(key);
    this.#hostOf.delete(key);
    if (host !== undefined) this.#node(known.node).freeHosts.push(host);
    // The veth normally dies with the pod namespace; deleting it explicitly covers a namespace
    // that lingers, and must not fail when it is already gone.
    await runCommand('ip', ['-n', this.#node(known.node).netns, 'link', 'del', known.hostInterface]).catch(
      () => {},
    );
    this.#log?.debug({ pod: key }, 'pod removed');
  }

  /**
   * Starts `cmd args` inside a namespace (`ip netns exec`, which execs, so child.pid is the
   * command itself). The child is killed on destroy().
   */
  spawn(netns: string, cmd: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
    this.#assertLive();
    const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], options);
    childNetnsMap.set(child, netns);
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    // A spawn error is reported through 'exit'/'error' to whoever listens; never crash the run.
    child.on('error', (err) => this.#log?.warn({ err, netns, cmd }, 'child process error'));
    return child;
  }

  /**
   * Starts a Node script with this process's Node (the project's Node 24) inside a namespace.
   * HYPHA_NODE_ARGS adds Node flags that NODE_OPTIONS refuses, for profiling the mesh's processes:
   * HYPHA_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- waypoint --quick
   * `options.nodeArgs` go before the script too (agents pass AGENT_NODE_FLAGS). Every such process
   * runs with MESH_PROCESS_ENV (malloc settings) as the manifests' containers do, unless the
   * caller's env sets the same names.
   */
  spawnNode(
    netns: string,
    script: string,
    args: readonly string[] = [],
    options: SpawnOptions & { nodeArgs?: readonly string[] } = {},
  ): ChildProcess {
    const { nodeArgs = [], ...spawnOptions } = options;
    const extra = (process.env.HYPHA_NODE_ARGS ?? '').split(' ').filter(Boolean);
    return this.spawn(
      netns,
      process.execPath,
      ['--disable-warning=ExperimentalWarning', ...nodeArgs, ...extra, script, ...args],
      { ...spawnOptions, env: { ...MESH_PROCESS_ENV, ...(spawnOptions.env ?? process.env) } },
    );
  }

  /** Runs a command inside a namespace to completion. */
  exec(netns: string, cmd: string, args: readonly string[] = [], input?: string): Promise<RunResult> {
    this.#assertLive();
    return runCommand('ip', ['netns', 'exec', netns, cmd, ...args], input);
  }

  /**
   * One TCP round trip from inside `netns` (a fresh process there): sends `ping` to ip:port and
   * resolves true when the same bytes come back, false when the connection is refused, reset or
   * silent for `timeoutMs`. Expects an echo server at the destination.
   */
  async tcpRoundTrip(netns: string, ip: string, port: number, timeoutMs = 5000): Promise<boolean> {
    const script = `const s=require('net').connect(${port},${JSON.stringify(ip)});let got='';
const done=(ok)=>{process.stdout.write(ok?'OK':'REFUSED');process.exit(0)};
s.on('connect',()=>s.write('ping'));s.on('data',d=>{got+=d;if(got==='ping')done(true)});
s.on('close',()=>done(false));s.on('error',()=>done(false));setTimeout(()=>done(false),${timeoutMs});`;
    const r = await this.exec(netns, process.execPath, ['-e', script]);
    return r.stdout === 'OK';
  }

  /**
   * A TCP connection from inside `netns` to ip:port (an echo server), held open by a child process
   * the test steers: `exchange(n)` sends n bytes and waits for their echo, `end()` half-closes,
   * `waitClosed()` resolves when the mesh or the server closes it.
   */
  holdTcpConnection(netns: string, ip: string, port: number): HeldConnection {
    const child = this.spawn(netns, process.execPath, ['-e', heldConnectionScript(ip, port)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return steerHeldConnection(child);
  }

  /**
   * A listening `net.Server` whose socket lives inside `netns`: a short-lived child listens there
   * and hands the socket over IPC. The caller's process stays in its own namespace.
   */
  async listenIn(netns: string, options: { port?: number; host?: string } = {}): Promise<Server> {
    this.#assertLive();
    return listenInNetns(netns, options, (cmd, args, opts) => this.spawn(netns, cmd, args, opts));
  }

  /**
   * Starts a sample server app (tcp-echo, http-echo, `bytes serve`) in a pod or namespace and
   * resolves once it listens.
   */
  startApp(where: ClusterPod | string, app: SampleApp, args: readonly string[] = []): Promise<RunningApp> {
    const netns = typeof where === 'string' ? where : where.netns;
    return startApp(
      (script, a) => this.spawnNode(netns, script, a, { stdio: ['ignore', 'pipe', 'pipe'] }),
      app,
      args,
    );
  }

  /** Runs a sample client app (load-client, `bytes send`) to completion; resolves with its result line. */
  runApp(
    where: ClusterPod | string,
    app: SampleApp,
    args: readonly string[] = [],
    timeoutMs?: number,
  ): Promise<Record<string, unknown>> {
    const netns = typeof where === 'string' ? where : where.netns;
    return runApp(
      (script, a) => this.spawnNode(netns, script, a, { stdio: ['ignore', 'pipe', 'pipe'] }),
      app,
      args,
      timeoutMs,
    );
  }

  /**
   * Records packets on the fabric (all bridge ports: every byte that travels between nodes) with tcpdump,
   * as raw pcap. Resolves once tcpdump is listening; `stop()` returns everything captured, so a
   * test can search it for a marker string.
   */
  startFabricCapture(filter = 'tcp'): Promise<FabricCapture> {
    return this.startCapture(this.fabricNetns, filter);
  }

  /** The same on every interface of one namespace (a node's: its pod links and its fabric link). */
  startCapture(netns: string, filter = 'tcp'): Promise<FabricCapture> {
    this.#assertLive();
    const child = this.spawn(
      netns,
      'tcpdump',
      ['-i', 'any', '--immediate-mode', '-U', '-n', '-s', '0', '-w', '-', filter],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const chunks: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => chunks.push(d));
    let stderr = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new ClusterError('APP_FAILED', `tcpdump did not start in ${netns}: ${stderr.trim()}`));
      }, 10_000);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(
          new ClusterError(
            'TOOL_MISSING',
            `tcpdump failed to start (apt-get install -y tcpdump): ${err.message}`,
          ),
        );
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new ClusterError('APP_FAILED', `tcpdump exited (${code}): ${stderr.trim()}`));
      });
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (!stderr.includes('listening on')) return;
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({
          stop: () =>
            new Promise<Buffer>((done) => {
              if (child.exitCode !== null || child.signalCode !== null) return done(Buffer.concat(chunks));
              child.once('close', () => done(Buffer.concat(chunks)));
              // SIGINT makes tcpdump flush what it buffered before exiting.
              child.kill('SIGINT');
            }),
        });
      });
    });
  }

  /**
   * Adds a host outside the cluster on the fabric (IPv4 clusters): namespace `<prefix>-x-<name>`,
   * address 10.S.T.(200+k)/24, routes back to every node's pods. Removed with the cluster.
   * `https`: it also serves an HTTPS API for those names with a CA of its own (external-https.ts).
   */
  async addExternalHost(name: string, opts: { https?: ExternalHttpsOptions } = {}): Promise<ExternalHost> {
    this.#assertLive();
    if (this.ipFamilies !== 'ipv4') {
      throw new ClusterError('BAD_INPUT', 'external hosts exist in IPv4 clusters only');
    }
    if (!NAME_RE.test(name) || name.length > 8 || this.#externals.has(name)) {
      throw new ClusterError(
        'BAD_INPUT',
        `external host "${name}": a new lowercase DNS label of at most 8 characters`,
      );
    }
    const k = this.#externals.size;
    if (k >= 50) throw new ClusterError('BAD_INPUT', 'at most 50 external hosts');
    const { s, t } = this.#octets;
    const host: ExternalHost = { name, ip: `10.${s}.${t}.${200 + k}`, netns: `${this.prefix}-x-${name}` };
    await runCommand('ip', ['netns', 'add', host.netns]);
    this.#externals.set(name, host);
    const peer = `x${k}`;
    await batch(host.netns, [
      'link set lo up',
      `link add eth0 type veth peer name ${peer} netns ${this.fabricNetns}`,
      `addr add ${host.ip}/24 dev eth0`,
      'link set eth0 up',
      ...[...this.#nodes.values()].flatMap((n) =>
        n.v4 ? [`route add ${n.v4.podCidr} via ${n.v4.ip} dev eth0`] : [],
      ),
    ]);
    await batch(this.fabricNetns, [`link set ${peer} master br0`, `link set ${peer} up`]);
    if (opts.https === undefined) return host;
    const https = await startExternalHttps((o) => this.listenIn(host.netns, o), host.ip, opts.https);
    const withHttps: ExternalHost = { ...host, https };
    this.#externals.set(name, withHttps);
    return withHttps;
  }

  /** Tears everything down. Safe to call more than once and after a failed create(). */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    const exits = [...this.#children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => {
            child.kill('SIGKILL');
            resolve();
          }, 2000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    );
    await Promise.all(exits);
    this.destroySync();
  }

  /** Immediate teardown (SIGKILL everything); used by exit and signal handlers. */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    live.delete(this);
    for (const child of this.#children) child.kill('SIGKILL');
    this.#children.clear();
    const pods = [...this.#pods.values()].map((p) => p.netns);
    const nodes = [...this.#nodes.values()].map((n) => n.netns);
    const externals = [...this.#externals.values()].map((x) => x.netns);
    removeNetnsSync([...pods, ...nodes, ...externals, this.fabricNetns]);
    this.#externals.clear();
    this.#pods.clear();
    this.#log?.info('cluster destroyed');
  }

  #node(name: string): NodeState {
    const node = this.#nodes.get(name);
    if (!node) {
      throw new ClusterError(
        'BAD_INPUT',
        `no node "${name}" in this cluster (nodes: ${[...this.#nodes.keys()].join(', ')})`,
      );
    }
    return node;
  }

  #assertLive(): void {
    if (this.#destroyed) throw new ClusterError('DESTROYED', `cluster ${this.prefix} was destroyed`);
  }

  async #buildFabric(): Promise<void> {
    await batch(this.fabricNetns, [
      'link set lo up',
      'link add br0 type bridge',
      `link set br0 alias ${OWNER_ALIAS_PREFIX}${process.pid}`,
      'link set br0 up',
    ]);
  }

  async #buildNode(name: string, index: number): Promise<void> {
    const { s, t } = this.#octets;
    const netns = `${this.prefix}-${name}`;
    const v4 =
      this.ipFamilies === 'ipv6'
        ? undefined
        : {
            ip: `10.${s}.${t}.${index + 1}`,
            podCidr: `10.${s}.${t + 2 + index}.0/24`,
            podGateway: `10.${s}.${t + 2 + index}.1`,
          };
    const subnet6 = `${this.#v6}:${(2 + index).toString(16)}`;
    const v6 =
      this.ipFamilies === 'ipv4'
        ? undefined
        : {
            ip: canonical6(`${this.#v6}:0::${(index + 1).toString(16)}`),
            podCidr: canonical6(`${subnet6}::/64`),
            podGateway: canonical6(`${subnet6}::1`),
          };
    const primary = (v4 ?? v6)!;
    const node: NodeState = {
      name,
      index,
      netns,
      ip: primary.ip,
      ips: [v4?.ip, v6?.ip].filter((x): x is string => x !== undefined),
      ipv6: v6?.ip,
      podCidr: primary.podCidr,
      podGateway: primary.podGateway,
      podCidr6: v6?.podCidr,
      podGateway6: v6?.podGateway,
      v4,
      nextHost: 2,
      freeHosts: [],
    };
    await runCommand('ip', ['netns', 'add', netns]);
    this.#nodes.set(name, node);
    const sysctls = ['net.ipv4.ip_forward=1'];
    // A node forwards IPv6 between its pods and the fabric. Addresses need no duplicate address
    // detection (the run's block is its own): set before any interface exists, so the fabric veth
    // and later pod veths are usable at once instead of "tentative" for a second.
    if (v6) {
      sysctls.push(
        'net.ipv6.conf.all.forwarding=1',
        'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.all.accept_dad=0',
      );
    }
    await runCommand('ip', ['netns', 'exec', netns, 'sysctl', '-qw', ...sysctls]);
    await batch(netns, [
      'link set lo up',
      `link add fab0 type veth peer name n${index} netns ${this.fabricNetns}`,
      ...(v4 ? [`addr add ${v4.ip}/24 dev fab0`] : []),
      ...(v6 ? [`addr add ${v6.ip}/64 dev fab0 nodad`] : []),
      'link set fab0 up',
    ]);
    await batch(this.fabricNetns, [`link set n${index} master br0`, `link set n${index} up`]);
  }

  async #buildRoutes(): Promise<void> {
    for (const node of this.#nodes.values()) {
      const routes: string[] = [];
      for (const other of this.#nodes.values()) {
        if (other === node) continue;
        if (other.v4) routes.push(`route add ${other.v4.podCidr} via ${other.v4.ip} dev fab0`);
        if (other.podCidr6 && other.ipv6)
          routes.push(`route add ${other.podCidr6} via ${other.ipv6} dev fab0`);
      }
      if (routes.length > 0) await batch(node.netns, routes);
    }
  }
}

function publicNode(node: NodeState): ClusterNode {
  return {
    name: node.name,
    ip: node.ip,
    ips: node.ips,
    ipv6: node.ipv6,
    netns: node.netns,
    podCidr: node.podCidr,
    podGateway: node.podGateway,
    podCidr6: node.podCidr6,
    podGateway6: node.podGateway6,
  };
}

/** RFC 5952 text of an IPv6 address or `addr/prefix` (what Node reports for sockets). */
export function canonical6(text: string): string {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const host = new URL(`http://[${addr}]/`).hostname.slice(1, -1);
  return slash < 0 ? host : `${host}${text.slice(slash)}`;
}

function validateNodes(nodes: readonly string[]): void {
  if (nodes.length === 0 || nodes.length > MAX_NODES) {
    throw new ClusterError('BAD_INPUT', `a cluster has 1 to ${MAX_NODES} nodes, got ${nodes.length}`);
  }
  const seen = new Set<string>();
  for (const name of nodes) {
    if (!NAME_RE.test(name) || name === 'fabric' || name.includes('.')) {
      throw new ClusterError(
        'BAD_INPUT',
        `node name "${name}" must be a lowercase DNS label of 1-32 characters other than "fabric"`,
      );
    }
    if (seen.has(name)) throw new ClusterError('BAD_INPUT', `node "${name}" is listed twice`);
    seen.add(name);
  }
}

/** Runs several `ip` subcommands inside one namespace with one process (`ip -batch`). */
async function batch(netns: string, lines: readonly string[]): Promise<void> {
  await runCommand('ip', ['-n', netns, '-batch', '-'], `${lines.join('\n')}\n`);
}

const childNetnsMap = new WeakMap<ChildProcess, string>();
function childNetns(child: ChildProcess): string | undefined {
  return childNetnsMap.get(child);
}

// The child listens, passes the listening handle to the parent and exits; the duplicated fd keeps
// the socket (and its namespace binding) alive in the parent.
const LISTEN_CHILD = `
const net = require('node:net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const server = net.createServer();
server.on('error', (err) => { process.send({ error: err.code + ': ' + err.message }, () => process.exit(1)); });
server.listen({ host, port }, () => {
  process.send({ ok: true }, server, () => { server.close(); process.disconnect(); });
});
`;

export function listenInNetns(
  netns: string,
  options: { port?: number; host?: string },
  spawnIn: (cmd: string, args: readonly string[], opts: SpawnOptions) => ChildProcess,
): Promise<Server> {
  const host = options.host ?? '0.0.0.0';
  const port = options.port ?? 0;
  return new Promise((resolve, reject) => {
    const child = spawnIn(process.execPath, ['-e', LISTEN_CHILD, host, String(port)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('message', (msg: { ok?: boolean; error?: string }, handle: unknown) => {
      if (msg.ok && handle) {
        // The handle arrives as a net.Server already listening on the child's socket.
        const server = handle as Server;
        resolve(server);
      } else {
        reject(
          new ClusterError('APP_FAILED', `listening on ${host}:${port} in ${netns} failed: ${msg.error}`),
        );
      }
    });
    child.once('exit', (code) => {
      if (code !== 0) {
        reject(
          new ClusterError('APP_FAILED', `listener child in ${netns} exited with ${code}: ${stderr.trim()}`),
        );
      }
    });
  });
}
