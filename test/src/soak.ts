// The soak (issue 18 part 1): the demo's two-node mesh with its waypoint, under steady mixed
// traffic for the whole run while, all at once, pods are added and removed every second, a DENY
// policy is toggled every few seconds, workload certificates live a short time (so they rotate
// under load), the CA is restarted once and one agent is upgraded mid-way. It counts what the
// clients saw, samples the memory, heap, file descriptors and HBONE connections of every mesh
// process, and compares the agents' and the waypoint's metric counters with the clients' own
// counts. By default agents and the waypoint read their config from the stand-in Kubernetes API
// server, which drops every watch mid-way and answers with 410 (history compacted, and one relist
// refused) so every informer relists under load. Thin on purpose: each piece is simple; what is
// not measured is said in docs/reliability.md.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { demoConfigObjects } from '@hypha/shared/config';
import type { ClusterPod } from './cluster/cluster.js';
import { DEMO_NODES, DEMO_WAYPOINT, demoConfigParams } from './mesh/demo.js';
import { hostPort, LocalMesh } from './mesh/local-mesh.js';

export interface SoakOptions {
  /** Duration in minutes (or `seconds`); default 2 minutes. */
  minutes?: number;
  seconds?: number;
  /** Workload certificate lifetime in seconds (agent --cert-ttl); default 60. */
  certTtlSeconds?: number;
  /**
   * Config source of agents and the waypoint: `kubernetes` (default; the stand-in API server, with
   * the watch drop and 410s mid-way) or `file` (the YAML file, no API event).
   */
  configSource?: 'kubernetes' | 'file';
  progress?: (line: string) => void;
}

export interface TrafficCount {
  sent: number;
  succeeded: number;
  failedUnexpectedly: number;
  deniedAsExpected: number;
  errors: Record<string, number>;
}

export interface ProcessSample {
  name: string;
  pid: number;
  rssKiB: number;
  /** Of the RSS, pages backed by files (RssFile): mostly the `node` binary's code, touched lazily. */
  rssFileKiB: number;
  fds: number;
  /** MALLOC_ARENA_MAX in the process's environment (MESH_PROCESS_ENV), as it started. */
  mallocArenaMax?: string;
  /** V8 heap in use (`nodejs_heap_size_used_bytes` of its /metrics; the CA's on 15014). */
  heapUsedBytes?: number;
  /** V8 heap committed (`nodejs_heap_size_total_bytes`): RSS minus this is memory outside the heap. */
  heapTotalBytes?: number;
  /** Memory V8 is told of outside its heap, Buffers mostly (`nodejs_external_memory_bytes`). */
  externalBytes?: number;
  /** Established TCP connections of this process to or from port 15008 (`ss -tnp` in its namespace). */
  hboneConnections: number;
}

export interface StreamResult {
  /** When it ended, in seconds from the start. */
  at?: number;
  sent: number;
  received: number;
  sha256Match: boolean;
  error?: string;
}

export interface SoakResult {
  durationSeconds: number;
  certTtlSeconds: number;
  /** L4 connections client → echo-v2 (cross-node), each one round trip. */
  l4: TrafficCount;
  /** HTTP requests through the waypoint (service web, bound to waypoint demo/waypoint). */
  http: TrafficCount;
  /** gRPC unary calls through the waypoint (service rpc, GRPCRoute rpc), endpoints on both nodes. */
  grpc: TrafficCount;
  /** The dedicated client whose connections the toggled DENY policy refuses. */
  denyClient: TrafficCount;
  /** Long-lived sha256-checked streams (about 20 s each, three at a time, cross-node). */
  streams: StreamResult[];
  churn: {
    podsAdded: number;
    podsRemoved: number;
    certificatesSeen: number;
    configWrites: number;
    /** Endpoint changes of services web and rpc (a second pod's label flipped in and out). */
    endpointChanges: number;
  };
  denyToggles: number;
  configSource: 'kubernetes' | 'file';
  /** The API server event (configSource kubernetes): every watch dropped, history compacted, one relist refused. */
  api?: {
    watchesDropped: number;
    /** Answers 410 Expired from the drop until the informers were watching again (resumes and the refused relist). */
    expiredAnswers: number;
    /** List requests (relists) from the drop until every watch was open again. */
    relists: number;
    /** Seconds from the drop until as many watches were open as before. */
    rewatchSeconds: number;
    /** After the relist: DENY refusals counted, and churn pods whose certificates the agents got. */
    deniedAfter: number;
    churnCertificatesAfter: number;
  };
  caRestarted: boolean;
  agentUpgraded: boolean;
  /** Per identity present at start: whether its certificate's serial changed by the end. */
  certificatesRotated: Record<string, boolean>;
  processes: { start: ProcessSample[]; warm: ProcessSample[]; end: ProcessSample[] };
  /** When each event happened, in seconds from the start. */
  eventsAt: Record<string, number>;
  /** The waypoint's access-log lines with a 5xx status (at most 20), for telling why a call failed. */
  waypointErrors: string[];
  /** Samples every `timelineEverySeconds` from the start, for telling growth from a plateau. */
  timeline: { t: number; samples: ProcessSample[] }[];
  /** End vs warm-up, per process name: growth in percent. */
  growthAfterWarmup: Record<string, { rssPct: number; fdPct: number; heapPct?: number }>;
  /** Metric counters (their increase over the run) against the clients' own counts. */
  metrics: {
    l4ConnectionsOpened: number;
    l4ClientConnections: number;
    httpRequests: number;
    httpClientRequests: number;
    grpcRequests: number;
    grpcClientRequests: number;
  };
}

const ECHO_TCP_PORT = 9200;
const GRPC_PORT = 9090;
const STREAM_SECONDS = 20;
const STREAMS = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function count(): TrafficCount {
  return { sent: 0, succeeded: 0, failedUnexpectedly: 0, deniedAsExpected: 0, errors: {} };
}

function podObject(name: string, node: string, ip: string, labels: Record<string, string>): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'app', image: 'hypha-demo' }] },
    status: {
      phase: 'Running',
      podIP: ip,
      podIPs: [{ ip }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

/** A stream script run inside a pod: writes random chunks for `seconds`, checks the echo's sha256. */
function streamScript(ip: string, port: number, seconds: number): string {
  return `const c=require('crypto');const s=require('net').connect(${port},${JSON.stringify(ip)});
const hs=c.createHash('sha256'),hr=c.createHash('sha256');let sent=0,rec=0,err;let t;
s.on('connect',()=>{t=setInterval(()=>{const b=c.randomBytes(16384);hs.update(b);sent+=b.length;s.write(b)},100);
setTimeout(()=>{clearInterval(t);s.end()},${seconds * 1000})});
s.on('data',d=>{hr.update(d);rec+=d.length});s.on('error',e=>{err=e.code||e.message});
s.on('close',()=>{clearInterval(t);process.stdout.write(JSON.stringify({sent,received:rec,sentSha256:hs.digest('hex'),receivedSha256:hr.digest('hex'),error:err})+'\\n');process.exit(0)});`;
}

async function readProc(
  pid: number,
): Promise<{ rssKiB: number; rssFileKiB: number; fds: number; mallocArenaMax?: string } | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const rssFileKiB = Number(/RssFile:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    const arena = (await readFile(`/proc/${pid}/environ`, 'utf8'))
      .split('\0')
      .find((v) => v.startsWith('MALLOC_ARENA_MAX='));
    return { rssKiB, rssFileKiB, fds, ...(arena ? { mallocArenaMax: arena.slice(17) } : {}) };
  } catch {
    return undefined;
  }
}

/** The CA's pid: LocalMesh keeps it private, so find `hypha ca serve --dir <mesh>/ca` in /proc. */
async function caPid(meshDir: string): Promise<number | undefined> {
  const caDir = join(meshDir, 'ca');
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (cmd.includes('serve') && cmd.includes(caDir) && !cmd.includes('netns')) return Number(entry);
    } catch {}
  }
  return undefined;
}

/** Established TCP connections to or from port 15008 in `netns`, by owning pid. */
async function hboneByPid(mesh: LocalMesh, netns: string): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  try {
    const r = await mesh.cluster.exec(netns, 'ss', [
      '-Htnp',
      'state',
      'established',
      '( sport = :15008 or dport = :15008 )',
    ]);
    for (const line of r.stdout.split('\n')) {
      for (const m of line.matchAll(/pid=(\d+),/g)) {
        const pid = Number(m[1]);
        out.set(pid, (out.get(pid) ?? 0) + 1);
      }
    }
  } catch {}
  return out;
}

function gauge(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

async function sampleAll(mesh: LocalMesh): Promise<ProcessSample[]> {
  const out: ProcessSample[] = [];
  const add = async (
    name: string,
    pid: number | undefined,
    netns: string,
    metricsUrl?: () => Promise<string>,
  ) => {
    if (pid === undefined) return;
    const p = await readProc(pid);
    if (p === undefined) return;
    let heapUsedBytes: number | undefined;
    let heapTotalBytes: number | undefined;
    let externalBytes: number | undefined;
    try {
      if (metricsUrl) {
        const text = await metricsUrl();
        heapUsedBytes = gauge(text, 'nodejs_heap_size_used_bytes');
        heapTotalBytes = gauge(text, 'nodejs_heap_size_total_bytes');
        externalBytes = gauge(text, 'nodejs_external_memory_bytes');
      }
    } catch {}
    const hbone = (await hboneByPid(mesh, netns)).get(pid) ?? 0;
    out.push({
      name,
      pid,
      ...p,
      ...(heapUsedBytes !== undefined ? { heapUsedBytes } : {}),
      ...(heapTotalBytes !== undefined ? { heapTotalBytes } : {}),
      ...(externalBytes !== undefined ? { externalBytes } : {}),
      hboneConnections: hbone,
    });
  };
  for (const [node, a] of mesh.agents)
    await add(`agent ${node}`, a.process.pid, mesh.cluster.node(node).netns, () =>
      mesh.fetchInNode(node, 'http://127.0.0.1:15020/metrics'),
    );
  for (const [key, w] of mesh.waypoints)
    await add(`waypoint ${key}`, w.process.pid, w.pod.netns, () =>
      mesh.fetchInNode(w.node, `http://${hostPort(w.pod.ip, 15020)}/metrics`),
    );
  await add('ca', await caPid(mesh.dir), mesh.cluster.node(DEMO_NODES[0]).netns, () =>
    mesh.fetchInNode(DEMO_NODES[0], 'http://127.0.0.1:15014/metrics'),
  );
  return out;
}

/** Sum of a counter's samples whose line contains every one of `parts`. */
function sumCounter(text: string, name: string, parts: readonly string[]): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !parts.every((p) => line.includes(p))) continue;
    sum += Number(line.split(' ').pop());
  }
  return sum;
}

type CertView = { identity: string; state: string; serial?: string };

async function certs(mesh: LocalMesh): Promise<CertView[]> {
  const out: CertView[] = [];
  for (const node of mesh.agents.keys()) {
    try {
      out.push(...(JSON.parse(await mesh.fetchInNode(node, 'http://127.0.0.1:15000/certs')) as CertView[]));
    } catch {}
  }
  return out;
}

interface SoakMesh {
  mesh: LocalMesh;
  echoV2: ClusterPod;
}

/** The demo's two-node mesh and config, with waypoint demo/waypoint on node-b, on the chosen source. */
async function startMesh(source: 'kubernetes' | 'file', progress: (line: string) => void): Promise<SoakMesh> {
  progress(
    `building a two-node cluster; config from ${source === 'kubernetes' ? 'the stand-in Kubernetes API server' : 'a file'} ...`,
  );
  const mesh = await LocalMesh.create({ nodes: DEMO_NODES, drainTimeout: '30s', configSource: source });
  try {
    const [a, b] = DEMO_NODES;
    const pods = {
      client: await mesh.addPod(a, 'client', 'demo'),
      echoV1: await mesh.addPod(a, 'echo-v1', 'demo'),
      echoV2: await mesh.addPod(b, 'echo-v2', 'demo'),
      plain: await mesh.addPod(b, 'plain', 'outside'),
    };
    const vip = mesh.cluster.allocateServiceIp();
    await mesh.writeConfig(
      demoConfigObjects(demoConfigParams({ pods, vip, vip6: undefined, ipFamilies: 'ipv4' })),
    );
    progress('starting the CA, one agent per node and waypoint demo/waypoint (node-b) ...');
    await Promise.all([mesh.startAgents(), mesh.startWaypoint({ ...DEMO_WAYPOINT })]);
    return { mesh, echoV2: pods.echoV2 };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

export async function runSoak(options: SoakOptions = {}): Promise<SoakResult> {
  const durationMs = Math.round(
    options.seconds !== undefined ? options.seconds * 1000 : (options.minutes ?? 2) * 60_000,
  );
  const ttl = options.certTtlSeconds ?? 60;
  const source = options.configSource ?? 'kubernetes';
  const progress = options.progress ?? (() => {});
  const prevTtl = process.env.HYPHA_CERT_TTL;
  // Read by every agent this process starts, the upgraded one included.
  process.env.HYPHA_CERT_TTL = `${ttl}s`;
  let m: SoakMesh | undefined;
  try {
    m = await startMesh(source, progress);
    return await soak(m, source, durationMs, ttl, progress);
  } finally {
    await m?.mesh.stop();
    if (prevTtl === undefined) delete process.env.HYPHA_CERT_TTL;
    else process.env.HYPHA_CERT_TTL = prevTtl;
  }
}

const label = (o: object, labels: Record<string, string>) => {
  const x = structuredClone(o) as { metadata: { labels: Record<string, string> } };
  x.metadata.labels = labels;
  return x;
};

async function soak(
  { mesh, echoV2 }: SoakMesh,
  source: 'kubernetes' | 'file',
  durationMs: number,
  ttl: number,
  progress: (line: string) => void,
): Promise<SoakResult> {
  const cluster = mesh.cluster;
  const api = mesh.api;
  const base = mesh.configObjects ?? [];
  const l4client = await mesh.addPod('node-a', 'l4client', 'demo');
  const hclient = await mesh.addPod('node-a', 'hclient', 'demo');
  const gclient = await mesh.addPod('node-a', 'gclient', 'demo');
  const denier = await mesh.addPod('node-a', 'denier', 'demo');
  const web = await mesh.addPod('node-a', 'web', 'demo');
  const web2 = await mesh.addPod('node-b', 'web-2', 'demo');
  const rpcA = await mesh.addPod('node-a', 'rpc-a', 'demo');
  const rpcB = await mesh.addPod('node-b', 'rpc-b', 'demo');
  const webVip = cluster.allocateServiceIp();
  const rpcVip = cluster.allocateServiceIp();
  const churnVip = cluster.allocateServiceIp();
  const web2Pod = podObject('web-2', 'node-b', web2.ip, { app: 'web' });
  const rpcBPod = podObject('rpc-b', 'node-b', rpcB.ip, { app: 'rpc' });
  const fixed = [
    podObject('l4client', 'node-a', l4client.ip, { app: 'l4client' }),
    podObject('hclient', 'node-a', hclient.ip, { app: 'hclient' }),
    podObject('gclient', 'node-a', gclient.ip, { app: 'gclient' }),
    podObject('denier', 'node-a', denier.ip, { app: 'denier' }),
    podObject('web', 'node-a', web.ip, { app: 'web' }),
    podObject('rpc-a', 'node-a', rpcA.ip, { app: 'rpc' }),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'demo', labels: { 'hypha.dev/use-waypoint': DEMO_WAYPOINT.name } },
      spec: {
        clusterIP: webVip,
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'rpc', namespace: 'demo', labels: { 'hypha.dev/use-waypoint': DEMO_WAYPOINT.name } },
      spec: {
        clusterIP: rpcVip,
        selector: { app: 'rpc' },
        ports: [{ name: 'grpc', port: GRPC_PORT, targetPort: GRPC_PORT, appProtocol: 'grpc' }],
      },
    },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GRPCRoute',
      metadata: { name: 'rpc', namespace: 'demo' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'rpc', port: GRPC_PORT }],
        rules: [
          {
            matches: [{ method: { service: 'hypha.echo.Echo', method: 'Say' } }],
            backendRefs: [{ name: 'rpc', port: GRPC_PORT }],
          },
        ],
      },
    },
    // The churn pods' service: its endpoints change with every churn step.
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'churn', namespace: 'demo' },
      spec: { clusterIP: churnVip, selector: { app: 'churn' }, ports: [{ name: 'tcp', port: 7000 }] },
    },
  ];
  const denyPolicy = {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'soak-deny', namespace: 'demo' },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      action: 'DENY',
      rules: [{ from: [{ source: { principals: [`${mesh.trustDomain}/ns/demo/sa/denier`] } }] }],
    },
  };
  const churn: { pod: ClusterPod; node: string }[] = [];
  let denyOn = false;
  // Second endpoints of web and rpc (on node-b): in the services or labelled out of them.
  let secondIn = true;
  let configWrites = 0;
  // One write at a time (the churn loop and the API event both write).
  let writing: Promise<void> = Promise.resolve();
  const write = () => {
    const next = writing.then(writeNow);
    writing = next.catch(() => {});
    return next;
  };
  const writeNow = async () => {
    const churnObjects = churn.map((c) => podObject(c.pod.name, c.node, c.pod.ip, { app: 'churn' }));
    const seconds = secondIn
      ? [web2Pod, rpcBPod]
      : [label(web2Pod, { app: 'web-out' }), label(rpcBPod, { app: 'rpc-out' })];
    await mesh.writeConfig([...base, ...fixed, ...seconds, ...churnObjects, ...(denyOn ? [denyPolicy] : [])]);
    configWrites++;
  };
  await write();
  await Promise.all([
    cluster.startApp(echoV2, 'tcp-echo', ['--port', String(ECHO_TCP_PORT)]),
    cluster.startApp(web, 'http-echo', ['--port', '8080', '--pod', 'web', '--namespace', 'demo']),
    cluster.startApp(web2, 'http-echo', ['--port', '8080', '--pod', 'web-2', '--namespace', 'demo']),
    cluster.startApp(rpcA, 'grpc-echo', ['--port', String(GRPC_PORT), '--pod', 'rpc-a']),
    cluster.startApp(rpcB, 'grpc-echo', ['--port', String(GRPC_PORT), '--pod', 'rpc-b']),
  ]);
  // Wait until the new pods' certificates are held and traffic flows, before counting anything.
  const soakAccounts = ['l4client', 'hclient', 'gclient', 'denier', 'web', 'web-2', 'rpc-a', 'rpc-b'];
  const ready = async (): Promise<boolean> => {
    const held = new Set((await certs(mesh)).filter((c) => c.state === 'ready').map((c) => c.identity));
    return soakAccounts.every((sa) => held.has(`spiffe://${mesh.trustDomain}/ns/demo/sa/${sa}`));
  };
  for (let i = 0; !(await ready()); i++) {
    if (i > 60) throw new Error('the soak pods got no certificates within 30 s');
    await sleep(500);
  }
  const echoTarget = hostPort(echoV2.ip, ECHO_TCP_PORT);
  const webTarget = hostPort(webVip, 80);
  const rpcTarget = hostPort(rpcVip, GRPC_PORT);
  const wpKey = `${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name}`;
  const waypointMetricsUrl = () => `http://${hostPort(mesh.waypoints.get(wpKey)!.pod.ip, 15020)}/metrics`;
  const readCounters = async () => {
    const b = await mesh.fetchInNode('node-b', 'http://127.0.0.1:15020/metrics');
    const w = await mesh.fetchInNode(DEMO_WAYPOINT.node, waypointMetricsUrl());
    return {
      l4: sumCounter(b, 'istio_tcp_connections_opened_total', ['reporter="destination"', '"l4client"']),
      http: sumCounter(w, 'istio_requests_total', ['"hclient"']),
      grpc: sumCounter(w, 'istio_requests_total', ['"gclient"']),
    };
  };
  for (let i = 0; i < 20; i++) {
    if (await cluster.tcpRoundTrip(l4client.netns, echoV2.ip, ECHO_TCP_PORT)) break;
    await sleep(500);
  }
  const countersBefore = await readCounters();
  const startCerts = new Map(
    (await certs(mesh)).filter((c) => !c.identity.includes('/sa/churn')).map((c) => [c.identity, c.serial]),
  );
  const start = await sampleAll(mesh);
  progress(`soak running for ${Math.round(durationMs / 1000)} s (certificates live ${ttl} s) ...`);

  const t0 = Date.now();
  let endAt = t0 + durationMs;
  const running = () => Date.now() < endAt;
  // An event that fails ends the run early (every loop stops) and is thrown at the end.
  let failure: unknown;
  const guard = (p: Promise<void>) =>
    p.catch((err: unknown) => {
      failure ??= err;
      endAt = Math.min(endAt, Date.now());
    });
  const l4 = count();
  const http = count();
  const grpc = count();
  const denyClient = count();
  const streams: StreamResult[] = [];
  const denyWindows: { from: number; to: number }[] = [];
  let denyToggles = 0;
  let podsAdded = 0;
  let podsRemoved = 0;
  let endpointChanges = 0;
  let caRestarted = false;
  let agentUpgraded = false;
  const churnCerts = new Set<string>();
  const churnCertsAfterApi = new Set<string>();
  /** While the API event runs (and 3 s after), the DENY policy is not toggled. */
  let apiQuiet = false;
  let apiResult: SoakResult['api'];
  let apiDoneAt = Number.POSITIVE_INFINITY;
  let deniedAfterApi = 0;
  const eventsAt: Record<string, number> = {};
  const stamp = (what: string) => {
    eventsAt[what] = Math.round((Date.now() - t0) / 100) / 10;
  };
  const note = (c: TrafficCount, err: string) => {
    c.errors[err] = (c.errors[err] ?? 0) + 1;
  };
  type LoadResult = { ok: number; failed: number; errors?: Record<string, number> };
  const tally = (c: TrafficCount, r: LoadResult) => {
    c.sent += r.ok + r.failed;
    c.succeeded += r.ok;
    c.failedUnexpectedly += r.failed;
    for (const [k, v] of Object.entries(r.errors ?? {})) c.errors[k] = (c.errors[k] ?? 0) + v;
  };
  /** Runs a client app every `everyMs` until the end, counting into `c`. */
  const loop = async (
    c: TrafficCount,
    pod: ClusterPod,
    app: 'load-client' | 'grpc-echo',
    args: string[],
    everyMs: number,
  ) => {
    while (running()) {
      const tick = Date.now();
      try {
        tally(c, (await cluster.runApp(pod, app, args, 30_000)) as LoadResult);
      } catch (err) {
        note(c, `client: ${(err as Error).message.split('\n')[0]}`);
      }
      await sleep(Math.max(0, everyMs - (Date.now() - tick)));
    }
  };
  // The dedicated client the DENY policy targets: one connection a second. A refusal while the
  // policy was in force (or being applied: within 3 s of a toggle) is denied as expected.
  const denyLoop = async () => {
    while (running()) {
      const from = Date.now();
      const ok = await cluster.tcpRoundTrip(denier.netns, echoV2.ip, ECHO_TCP_PORT, 5000);
      const to = Date.now();
      denyClient.sent++;
      if (ok) denyClient.succeeded++;
      else if (denyOn || denyWindows.some((w) => w.from - 3000 <= to && w.to + 3000 >= from)) {
        denyClient.deniedAsExpected++;
        if (from > apiDoneAt) deniedAfterApi++;
      } else denyClient.failedUnexpectedly++;
      await sleep(Math.max(0, 1000 - (to - from)));
    }
  };
  const streamLoop = async () => {
    while (Date.now() + STREAM_SECONDS * 1000 < endAt) {
      const child = cluster.spawn(l4client.netns, process.execPath, [
        '-e',
        streamScript(echoV2.ip, ECHO_TCP_PORT, STREAM_SECONDS),
      ]);
      let out = '';
      let errText = '';
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr?.on('data', (d: Buffer) => {
        errText = (errText + d.toString()).slice(-500);
      });
      // 'close', not 'exit': at 'exit' the child's stdout may still hold its result unread (a 20-minute
      // soak once counted such a stream as failed: "no result (exit 0)").
      const exit = await new Promise<string>((r) =>
        child.once('close', (code, signal) => r(`exit ${code ?? ''}${signal ? ` signal ${signal}` : ''}`)),
      );
      try {
        const r = JSON.parse(out.trim()) as {
          sent: number;
          received: number;
          sentSha256: string;
          receivedSha256: string;
          error?: string;
        };
        streams.push({
          at: Math.round((Date.now() - t0) / 1000),
          sent: r.sent,
          received: r.received,
          sha256Match: r.sent > 0 && r.sent === r.received && r.sentSha256 === r.receivedSha256,
          ...(r.error ? { error: r.error } : {}),
        });
      } catch {
        streams.push({
          at: Math.round((Date.now() - t0) / 1000),
          sent: 0,
          received: 0,
          sha256Match: false,
          // The stream's process printed no result: say how it ended, for telling a harness
          // failure (it never ran) from a mesh one.
          error: `no result (${exit}): ${out.slice(0, 200)} ${errText.trim()}`,
        });
      }
    }
  };
  // Churn: every second a pod is added (alternating nodes) and the oldest beyond three removed
  // (service churn's endpoints change with them); every 5 s the DENY policy flips, and 2 s later
  // web's and rpc's second endpoints (node-b) move out of or back into their services. Each change
  // is one config write.
  const churnLoop = async () => {
    let n = 0;
    while (running()) {
      const tick = Date.now();
      n++;
      try {
        const node = n % 2 === 0 ? 'node-a' : 'node-b';
        churn.push({ pod: await mesh.addPod(node, `churn-${n}`, 'demo'), node });
        podsAdded++;
        while (churn.length > 3) {
          const gone = churn.shift()!;
          await cluster.removePod(gone.pod);
          podsRemoved++;
        }
        if (n % 5 === 0 && !apiQuiet) {
          denyOn = !denyOn;
          denyToggles++;
          if (denyOn) denyWindows.push({ from: Date.now(), to: Number.POSITIVE_INFINITY });
          else denyWindows[denyWindows.length - 1]!.to = Date.now();
        }
        if (n % 5 === 2) {
          secondIn = !secondIn;
          endpointChanges++;
        }
        await write();
        if (n % 3 === 0) {
          for (const c of await certs(mesh)) {
            if (!c.identity.includes('/sa/churn-') || c.state !== 'ready') continue;
            churnCerts.add(c.identity);
            const made = Number(/churn-(\d+)$/.exec(c.identity)?.[1]);
            if (apiDoneAt < Number.POSITIVE_INFINITY && made > apiChurnMark)
              churnCertsAfterApi.add(c.identity);
          }
        }
      } catch (err) {
        progress(`churn step ${n} failed: ${(err as Error).message.split('\n')[0]}`);
      }
      churnN = n;
      await sleep(Math.max(0, 1000 - (Date.now() - tick)));
    }
  };
  let churnN = 0;
  let apiChurnMark = Number.POSITIVE_INFINITY;
  // The API server (stand-in) drops every watch; while none is open, changes go on and the history
  // is compacted, so every resume is answered 410 Expired and every informer relists; the first
  // relist is refused with 410 too. No DENY toggle meanwhile (its 3 s grace assumes a live watch).
  const apiEvent = async () => {
    if (api === undefined) return;
    await sleep(durationMs * 0.5);
    if (!running()) return;
    apiQuiet = true;
    await sleep(3000);
    progress('the API server drops every watch and answers 410 ...');
    const watches = api.activeWatches;
    const mark = api.requests.length;
    const droppedAt = Date.now();
    stamp('API watches dropped');
    const release = api.holdWatches();
    api.dropWatches();
    // A change while no watch is open (web's and rpc's second endpoints move), then the history
    // is compacted: every resume is answered 410 and only a relist can bring the change.
    secondIn = !secondIn;
    endpointChanges++;
    await write();
    await sleep(2000);
    api.compactHistory();
    api.injectFailure({
      method: 'GET',
      watch: false,
      status: 410,
      message: 'the soak refuses one relist',
      times: 1,
    });
    release();
    await api.waitForWatches(watches, 60_000);
    const rewatchSeconds = Math.round((Date.now() - droppedAt) / 100) / 10;
    stamp('API watches open again');
    const after = api.requests.slice(mark);
    apiChurnMark = churnN;
    apiDoneAt = Date.now();
    apiResult = {
      watchesDropped: watches,
      expiredAnswers: after.filter((r) => r.status === 410).length,
      relists: after.filter((r) => !r.watch && r.method === 'GET' && r.status === 200).length,
      rewatchSeconds,
      deniedAfter: 0,
      churnCertificatesAfter: 0,
    };
    await sleep(3000);
    apiQuiet = false;
  };
  // Mid-way events: the CA restarted at 40 %, agent node-a upgraded at 60 %.
  const events = async () => {
    await sleep(durationMs * 0.4);
    if (!running()) return;
    progress('restarting the CA ...');
    stamp('CA killed');
    await mesh.killCa();
    await sleep(3000);
    await mesh.restartCa();
    stamp('CA ready again');
    caRestarted = true;
    await sleep(Math.max(0, t0 + durationMs * 0.6 - Date.now()));
    if (!running()) return;
    progress('upgrading agent node-a ...');
    stamp('agent node-a upgrade started');
    const { oldExited } = await mesh.upgradeAgent('node-a');
    stamp('agent node-a upgraded (new one serving)');
    agentUpgraded = true;
    void oldExited.then(() => stamp('old agent node-a exited'));
  };
  const warmMs = Math.min(Math.max(durationMs * 0.15, 15_000), 120_000);
  let warm: ProcessSample[] = [];
  const warmSample = async () => {
    await sleep(warmMs);
    warm = await sampleAll(mesh);
  };
  const timelineEveryMs = Math.max(15_000, Math.round(durationMs / 20));
  const timeline: SoakResult['timeline'] = [{ t: 0, samples: start }];
  const timelineLoop = async () => {
    while (Date.now() + timelineEveryMs < endAt) {
      await sleep(timelineEveryMs);
      timeline.push({ t: Math.round((Date.now() - t0) / 1000), samples: await sampleAll(mesh) });
    }
  };

  await Promise.all([
    loop(
      l4,
      l4client,
      'load-client',
      ['--target', echoTarget, '--mode', 'tcp', '--connections', '5', '--requests', '1'],
      1000,
    ),
    loop(
      http,
      hclient,
      'load-client',
      ['--target', webTarget, '--connections', '2', '--requests', '10'],
      2000,
    ),
    loop(grpc, gclient, 'grpc-echo', ['--target', rpcTarget, '--connections', '2', '--requests', '10'], 2000),
    denyLoop(),
    churnLoop(),
    guard(events()),
    guard(apiEvent()),
    guard(warmSample()),
    timelineLoop(),
    ...Array.from({ length: STREAMS }, (_, i) => sleep(i * 2000).then(streamLoop)),
  ]);
  if (failure !== undefined) throw failure;
  const end = await sampleAll(mesh);
  timeline.push({ t: Math.round((Date.now() - t0) / 1000), samples: end });
  // Let the last connections' metrics settle, then read the counters.
  await sleep(1000);
  const countersAfter = await readCounters();
  const endCerts = new Map((await certs(mesh)).map((c) => [c.identity, c.serial]));
  const waypointErrors = [...mesh.waypoints.values()]
    .flatMap((w) => w.events)
    .filter((e) => e.component === 'access' && Number(e.response_code) >= 500)
    .slice(0, 20)
    .map((e) =>
      [
        `+${Math.round((Date.parse(String(e.start_time)) - t0) / 100) / 10}s`,
        e.method,
        e.path,
        e.response_code,
        e.response_flags,
        e.upstream_host ?? '',
        e.duration,
      ].join(' '),
    );
  const certificatesRotated: Record<string, boolean> = {};
  for (const [id, serial] of startCerts) {
    const now = endCerts.get(id);
    if (now !== undefined) certificatesRotated[id] = now !== serial;
  }
  const pct = (a: number, b: number) => Math.round(((b - a) / a) * 1000) / 10;
  const growthAfterWarmup: SoakResult['growthAfterWarmup'] = {};
  for (const e of end) {
    const w = warm.find((x) => x.name === e.name);
    if (!w) continue;
    growthAfterWarmup[e.name] = {
      rssPct: pct(w.rssKiB, e.rssKiB),
      fdPct: pct(w.fds, e.fds),
      ...(w.heapUsedBytes !== undefined && e.heapUsedBytes !== undefined
        ? { heapPct: pct(w.heapUsedBytes, e.heapUsedBytes) }
        : {}),
    };
  }
  if (apiResult) {
    apiResult.deniedAfter = deniedAfterApi;
    apiResult.churnCertificatesAfter = churnCertsAfterApi.size;
  }
  return {
    durationSeconds: Math.round((Date.now() - t0) / 1000),
    certTtlSeconds: ttl,
    l4,
    http,
    grpc,
    denyClient,
    streams,
    churn: { podsAdded, podsRemoved, certificatesSeen: churnCerts.size, configWrites, endpointChanges },
    denyToggles,
    configSource: source,
    ...(apiResult ? { api: apiResult } : {}),
    caRestarted,
    agentUpgraded,
    certificatesRotated,
    processes: { start, warm, end },
    eventsAt,
    waypointErrors,
    timeline,
    growthAfterWarmup,
    metrics: {
      l4ConnectionsOpened: countersAfter.l4 - countersBefore.l4,
      // The long streams run from the same client to the same port: one connection each.
      l4ClientConnections: l4.sent + streams.length,
      httpRequests: countersAfter.http - countersBefore.http,
      httpClientRequests: http.sent,
      grpcRequests: countersAfter.grpc - countersBefore.grpc,
      grpcClientRequests: grpc.sent,
    },
  };
}

/** The figures as lines of text, for the bench and the test's output. */
export function formatSoak(r: SoakResult): string[] {
  const t = (name: string, c: TrafficCount) =>
    `${name}: sent ${c.sent}, succeeded ${c.succeeded}, failed unexpectedly ${c.failedUnexpectedly}, denied as expected ${c.deniedAsExpected}${Object.keys(c.errors).length ? ` (errors ${JSON.stringify(c.errors)})` : ''}`;
  const exact = r.streams.filter((s) => s.sha256Match).length;
  const rotated = Object.values(r.certificatesRotated).filter(Boolean).length;
  const mib = (b: number) => Math.round(b / 1048576);
  const f = (p?: ProcessSample) =>
    p
      ? `${mib(p.rssKiB * 1024)} MiB RSS/${p.heapUsedBytes !== undefined ? `${mib(p.heapUsedBytes)} MiB heap/` : ''}${mib(p.rssFileKiB * 1024)} MiB of files/${p.heapTotalBytes !== undefined ? `${mib((p.rssKiB - p.rssFileKiB) * 1024 - p.heapTotalBytes)} MiB anonymous outside the heap/` : ''}${p.externalBytes !== undefined ? `${mib(p.externalBytes)} MiB external/` : ''}${p.fds} fds/${p.hboneConnections} HBONE`
      : '-';
  return [
    `soak ${r.durationSeconds} s, certificates --cert-ttl ${r.certTtlSeconds}s, config source ${r.configSource}`,
    t('L4 connections client → echo (cross-node)', r.l4),
    t('HTTP requests through the waypoint', r.http),
    t('gRPC calls through the waypoint', r.grpc),
    t('DENY-targeted client connections', r.denyClient),
    `long streams (${STREAM_SECONDS} s each, sha256-checked): ${exact}/${r.streams.length} exact, ${r.streams.reduce((a, s) => a + s.sent, 0)} bytes sent${exact < r.streams.length ? `; not exact: ${JSON.stringify(r.streams.filter((s) => !s.sha256Match))}` : ''}`,
    `churn: ${r.churn.podsAdded} pods added, ${r.churn.podsRemoved} removed, ${r.churn.certificatesSeen} churn certificates seen ready, ${r.churn.configWrites} config writes, ${r.churn.endpointChanges} endpoint changes of web and rpc; DENY toggled ${r.denyToggles} times`,
    ...(r.api
      ? [
          `API server: ${r.api.watchesDropped} watches dropped, ${r.api.expiredAnswers} answers 410, ${r.api.relists} relists, all watching again after ${r.api.rewatchSeconds} s; afterwards ${r.api.deniedAfter} DENY refusals and ${r.api.churnCertificatesAfter} new churn certificates`,
        ]
      : []),
    `events (s from start): ${Object.entries(r.eventsAt)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    ...(r.waypointErrors.length ? [`waypoint 5xx: ${r.waypointErrors.join(' | ')}`] : []),
    `CA restarted: ${r.caRestarted}; agent node-a upgraded: ${r.agentUpgraded}; certificates rotated: ${rotated}/${Object.keys(r.certificatesRotated).length}`,
    ...r.processes.end.map((e) => {
      const s = r.processes.start.find((x) => x.name === e.name);
      const w = r.processes.warm.find((x) => x.name === e.name);
      const g = r.growthAfterWarmup[e.name];
      return `${e.name}: start ${f(s)}; warm ${f(w)}; end ${f(e)}${g ? ` (after warm-up: RSS ${g.rssPct}%, ${g.heapPct !== undefined ? `heap ${g.heapPct}%, ` : ''}fds ${g.fdPct}%)` : ''}`;
    }),
    `timeline (s: RSS MiB/heap MiB/HBONE connections per process): ${r.timeline
      .map(
        (x) =>
          `${x.t}: ${x.samples.map((p) => `${p.name.replace(/^waypoint .*/, 'waypoint')} ${mib(p.rssKiB * 1024)}/${p.heapUsedBytes !== undefined ? mib(p.heapUsedBytes) : '-'}/${p.hboneConnections}`).join(', ')}`,
      )
      .join('; ')}`,
    `metrics: istio_tcp_connections_opened_total (node-b, destination, l4client) +${r.metrics.l4ConnectionsOpened} vs client ${r.metrics.l4ClientConnections} (round trips + streams); waypoint istio_requests_total (hclient) +${r.metrics.httpRequests} vs client ${r.metrics.httpClientRequests}; (gclient, gRPC) +${r.metrics.grpcRequests} vs client ${r.metrics.grpcClientRequests}`,
  ];
}
