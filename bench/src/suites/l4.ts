// `npm run bench -- l4 [--json] [--quick]`: the L4 data path through two real agents on the
// network-namespace cluster of `hypha demo`, side by side with a stunnel pair and direct TCP on
// the same path (a pod on node-a to a pod on node-b across the fabric), in one run.
//
//   mesh:    client (mesh pod, node-a) ─> agent node-a ══ HBONE mTLS ══> agent node-b ─> echo-v2
//   stunnel: loadgen (non-mesh, node-a) ─> stunnel client (node-a ns) ══ mTLS ══> stunnel server
//            (node-b ns) ─> plain (non-mesh, node-b)
//   direct:  loadgen ─> node-a ─> fabric ─> node-b ─> plain
//   floor:   loadgen ─> Node TCP proxy (node-a ns) ─> Node TCP proxy (node-b ns) ─> plain: the
//            runtime's floor (bench/src/apps/tcp-pipe.ts: the agent's copy loop and V8 flags, no
//            TLS, no HTTP/2, no policy): every figure also runs through it, so each gap to stunnel
//            shows how much of it the runtime itself has
//
// Figures: single-stream throughput (iperf3), 1 KB request/response latency p50/p99 at a fixed
// rate (open loop, from the due time), new connections per second (connect, 1 byte each way,
// close), CPU per 1000 requests of 1 KB HTTP over keep-alive (both agents, the stunnel pair and
// the floor pair, each carrying the same load in turn, from /proc/<pid>/stat) and the agents' RSS
// when ready and at peak (VmHWM). Budgets are ARCHITECTURE.md section 9;
// they are reported met or not, never fail the run. Load tools run inside the pods' namespaces,
// so their CPU is on the same two cores: figures from a busy machine are noisy.
import { type ChildProcess, execFileSync } from 'node:child_process';
import { mkdtemp, readlink, realpath, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NODE_FLAGS } from '@hypha/shared/hbone';
import { CertificateAuthority, SpiffeId } from '@hypha/shared/identity';
import { type DemoResult, type LocalMesh, startDemo } from '@hypha/test';
import { fetchRssMb, fetchTreeCpuSeconds, findBenchApp, findLoadApp, runLoad, sleep } from '../mesh-load.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';
import { stunnelVersion, writeStunnelConfigs } from './hbone.js';

const APT_LINE = 'apt-get install -y iperf3 stunnel4';

type Pod = DemoResult['pods']['client'];

/** Ports inside the pods and nodes (fresh namespaces per run, so fixed numbers never collide). */
const PORTS = {
  iperf: 5201,
  echo: 7000,
  http: 8080,
  stunnelIperf: { client: 20001, server: 20101 },
  stunnelEcho: { client: 20002, server: 20102 },
  stunnelHttp: { client: 20003, server: 20103 },
  floorIperf: { client: 21001, server: 21101 },
  floorEcho: { client: 21002, server: 21102 },
  floorHttp: { client: 21003, server: 21103 },
} as const;

interface Phases {
  /** iperf3 seconds per path per round. */
  throughputSecs: number;
  throughputRounds: number;
  latencySecs: number;
  connectSecs: number;
  cpuSecs: number;
}

const FULL: Phases = { throughputSecs: 5, throughputRounds: 2, latencySecs: 10, connectSecs: 5, cpuSecs: 15 };
const QUICK: Phases = { throughputSecs: 2, throughputRounds: 1, latencySecs: 2, connectSecs: 1, cpuSecs: 2 };
const LATENCY = { rate: 1000, connections: 4, bytes: 1024 } as const;
const CPU_LOAD = { rate: 1000, connections: 4, bytes: 1024 } as const;
const CONNECT_CONCURRENCY = 16;

export class L4BenchError extends Error {
  readonly code: 'MISSING_TOOL' | 'LOAD_FAILED' | 'MESH_BYPASSED' | 'AGENT_PROCESS';
  constructor(code: L4BenchError['code'], message: string) {
    super(message);
    this.name = 'L4BenchError';
    this.code = code;
  }
}

function requireTools(): void {
  const missing = ['iperf3', 'stunnel4'].filter((bin) => {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    process.stderr.write(`${APT_LINE}\n`);
    throw new L4BenchError(
      'MISSING_TOOL',
      `${missing.join(' and ')} not installed; install the peers with: ${APT_LINE}`,
    );
  }
}

/** One iperf3 run from a namespace; Gbit/s received. Retries: iperf3 -s refuses briefly between tests. */
async function iperf3(
  mesh: LocalMesh,
  netns: string,
  host: string,
  port: number,
  secs: number,
): Promise<number> {
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const r = await mesh.cluster.exec(netns, 'iperf3', [
        '-c',
        host,
        '-p',
        String(port),
        '-t',
        String(secs),
        '-J',
      ]);
      const j = JSON.parse(r.stdout) as {
        error?: string;
        end?: { sum_received?: { bits_per_second: number } };
      };
      const bps = j.end?.sum_received?.bits_per_second;
      if (bps !== undefined && bps > 0) return bps / 1e9;
      last = j.error ?? 'no result';
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(1000);
  }
  throw new L4BenchError('LOAD_FAILED', `iperf3 to ${host}:${port} from ${netns}: ${last}`);
}

async function waitListening(
  mesh: LocalMesh,
  netns: string,
  port: number,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const r = await mesh.cluster
      .exec(netns, 'ss', ['-Hltn', `sport = :${port}`])
      .catch(() => ({ stdout: '' }));
    if (r.stdout.trim() !== '') return;
    await sleep(100);
  }
  throw new L4BenchError('LOAD_FAILED', `nothing listens on port ${port} in ${netns} after ${timeoutMs} ms`);
}

/** CPU of each agent and its direct children (its workers with --workers N > 1). */
async function fetchAgentsCpu(pids: ReadonlyMap<string, number>): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const [node, pid] of pids) out.set(node, await fetchTreeCpuSeconds(pid));
  return out;
}

/** The agents' node processes (ip netns exec execs, so the spawned pid is the agent itself). */
async function findAgentPids(mesh: LocalMesh): Promise<Map<string, number>> {
  const pids = new Map<string, number>();
  const nodeExe = await realpath(process.execPath);
  for (const [node, agent] of mesh.agents) {
    const pid = agent.process.pid;
    const exe = pid === undefined ? '' : await readlink(`/proc/${pid}/exe`).catch(() => '');
    if (pid === undefined || exe !== nodeExe) {
      throw new L4BenchError(
        'AGENT_PROCESS',
        `agent on ${node}: pid ${pid} runs "${exe}", expected ${nodeExe}`,
      );
    }
    pids.set(node, pid);
  }
  return pids;
}

/** The pid of each named process (spawned through `ip netns exec`, which execs: the pid is the program's). */
function pidsOf(procs: Record<string, ChildProcess>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, p] of Object.entries(procs)) {
    if (p.pid === undefined) throw new L4BenchError('LOAD_FAILED', `${name} did not start`);
    out.set(name, p.pid);
  }
  return out;
}

/** Starts the floor proxy (bench/src/apps/tcp-pipe.ts) in a namespace with the agent's V8 flags. */
async function startPipe(mesh: LocalMesh, netns: string, routes: readonly string[]): Promise<ChildProcess> {
  const proc = mesh.cluster.spawnNode(
    netns,
    findBenchApp('tcp-pipe'),
    routes.flatMap((r) => ['--route', r]),
    { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: AGENT_NODE_FLAGS },
  );
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-2000);
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new L4BenchError('LOAD_FAILED', `tcp-pipe in ${netns}: not listening after 10 s`)),
      10_000,
    );
    proc.stdout?.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new L4BenchError('LOAD_FAILED', `tcp-pipe in ${netns} exited with ${code}: ${err.trim()}`));
    });
  });
  return proc;
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new L4BenchError('LOAD_FAILED', `${what}: no figure in the load client's result`);
  }
  return v;
}

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  requireTools();
  findLoadApp();
  const ph = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-l4-'));
  const startedAt = new Date();
  const demo = await startDemo();
  const { mesh } = demo;
  const procs: ChildProcess[] = [];
  try {
    const [nodeA, nodeB] = [mesh.cluster.node('node-a'), mesh.cluster.node('node-b')];
    const { client, echoV2, plain } = demo.pods;
    // Not in the mesh config, so its traffic is never captured: the peers' client pod on node-a.
    const loadgen: Pod = await mesh.addPod('node-a', 'loadgen', 'outside');

    // Servers: iperf3 and a TCP echo in echo-v2 (mesh) and in plain (peers); http-echo already
    // runs on 8080 in both (the demo's).
    for (const pod of [echoV2, plain]) {
      procs.push(
        mesh.cluster.spawn(pod.netns, 'iperf3', ['-s', '-p', String(PORTS.iperf)], { stdio: 'ignore' }),
      );
      await mesh.cluster.startApp(pod, 'tcp-echo', ['--port', String(PORTS.echo)]);
    }

    // Stunnel pair: client in node-a's namespace (reached by loadgen at its gateway), server in
    // node-b's on the fabric address, forwarding to the plain pod.
    const ca = await CertificateAuthority.init();
    const [scert, ccert] = await Promise.all([
      ca.issue(SpiffeId.of('cluster.local', 'bench', 'stunnel-server')),
      ca.issue(SpiffeId.of('cluster.local', 'bench', 'stunnel-client')),
    ]);
    const route = (p: { client: number; server: number }, target: number) => ({
      clientAccept: `${nodeA.podGateway}:${p.client}`,
      serverAccept: `${nodeB.ip}:${p.server}`,
      serverConnect: `${plain.ip}:${target}`,
    });
    const conf = await writeStunnelConfigs(dir, { client: ccert, server: scert }, [
      route(PORTS.stunnelIperf, PORTS.iperf),
      route(PORTS.stunnelEcho, PORTS.echo),
      route(PORTS.stunnelHttp, PORTS.http),
    ]);
    const stunnels = {
      server: mesh.cluster.spawn(nodeB.netns, 'stunnel4', [conf.serverConf], { stdio: 'ignore' }),
      client: mesh.cluster.spawn(nodeA.netns, 'stunnel4', [conf.clientConf], { stdio: 'ignore' }),
    };
    procs.push(stunnels.server, stunnels.client);
    // The Node floor pair, on the same hops as the stunnel pair.
    const floorRoute = (p: { client: number; server: number }, target: number) => ({
      client: `${nodeA.podGateway}:${p.client}=${nodeB.ip}:${p.server}`,
      server: `${nodeB.ip}:${p.server}=${plain.ip}:${target}`,
    });
    const floorRoutes = [
      floorRoute(PORTS.floorIperf, PORTS.iperf),
      floorRoute(PORTS.floorEcho, PORTS.echo),
      floorRoute(PORTS.floorHttp, PORTS.http),
    ];
    const floors = {
      server: await startPipe(
        mesh,
        nodeB.netns,
        floorRoutes.map((r) => r.server),
      ),
      client: await startPipe(
        mesh,
        nodeA.netns,
        floorRoutes.map((r) => r.client),
      ),
    };
    procs.push(floors.server, floors.client);
    await Promise.all([
      waitListening(mesh, nodeA.netns, PORTS.stunnelEcho.client),
      waitListening(mesh, nodeB.netns, PORTS.stunnelEcho.server),
      waitListening(mesh, echoV2.netns, PORTS.iperf),
      waitListening(mesh, plain.netns, PORTS.iperf),
    ]);

    const paths = {
      mesh: { netns: client.netns, host: echoV2.ip, iperf: PORTS.iperf, echo: PORTS.echo },
      stunnel: {
        netns: loadgen.netns,
        host: nodeA.podGateway,
        iperf: PORTS.stunnelIperf.client,
        echo: PORTS.stunnelEcho.client,
      },
      direct: { netns: loadgen.netns, host: plain.ip, iperf: PORTS.iperf, echo: PORTS.echo },
      // The floor pair carries every phase too: throughput and connection rate are budgeted against
      // stunnel, and the floor shows how much of a gap is the runtime's own.
      floor: {
        netns: loadgen.netns,
        host: nodeA.podGateway,
        iperf: PORTS.floorIperf.client,
        echo: PORTS.floorEcho.client,
      },
    };
    type PathName = keyof typeof paths;
    const order: PathName[] = ['direct', 'floor', 'stunnel', 'mesh'];
    const results: BenchResult[] = [];
    const agentPids = await findAgentPids(mesh);
    const idleRss = new Map<string, number>();
    for (const [node, pid] of agentPids) idleRss.set(node, await fetchRssMb(pid, 'VmRSS'));
    // The floor pair's RSS before load: what a Node process with the agent's flags and a copy loop
    // holds, the part of the agents' RSS no change to Hypha can remove.
    const floorPids = pidsOf({ 'floor client': floors.client, 'floor server': floors.server });
    const floorIdleRss = new Map<string, number>();
    for (const [name, pid] of floorPids) floorIdleRss.set(name, await fetchRssMb(pid, 'VmRSS'));
    const timings: string[] = [`setup ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)}s`];
    let phaseStart = Date.now();
    const endPhase = (name: string): void => {
      timings.push(`${name} ${((Date.now() - phaseStart) / 1000).toFixed(1)}s`);
      phaseStart = Date.now();
    };

    // 1. Throughput: best of the rounds (alternating order) so a burst elsewhere does not decide.
    const logsBefore = mesh.accessLogs().length;
    const tput: Record<PathName, number> = { direct: 0, floor: 0, stunnel: 0, mesh: 0 };
    const streamCpu = new Map<string, number>();
    for (let round = 0; round < ph.throughputRounds; round++) {
      for (const k of round % 2 === 0 ? order : [...order].reverse()) {
        const p = paths[k];
        // Agent CPU while the mesh stream runs tells whether the agents are CPU-bound (~1 vCPU).
        const cpu0 = k === 'mesh' ? await fetchAgentsCpu(agentPids) : undefined;
        const t0 = performance.now();
        tput[k] = Math.max(tput[k], await iperf3(mesh, p.netns, p.host, p.iperf, ph.throughputSecs));
        if (cpu0) {
          const cpu1 = await fetchAgentsCpu(agentPids);
          const secs = (performance.now() - t0) / 1000;
          for (const [node, c] of cpu1) {
            streamCpu.set(node, Math.max(streamCpu.get(node) ?? 0, (c - (cpu0.get(node) ?? 0)) / secs));
          }
        }
      }
    }
    endPhase('throughput');
    // The mesh figure counts only if the bytes really crossed both agents over mTLS.
    await sleep(300);
    const meshBytes = mesh
      .accessLogs()
      .slice(logsBefore)
      .filter((e) => e.direction === 'inbound' && e.dst_workload === 'echo-v2' && e.mtls === true)
      .reduce((n, e) => n + Number(e.bytes_received ?? 0) + Number(e.bytes_sent ?? 0), 0);
    if (meshBytes < 1e6) {
      throw new L4BenchError(
        'MESH_BYPASSED',
        `node-b's agent logged ${meshBytes} bytes over mTLS to echo-v2 during the throughput run; the mesh path did not go through the agents`,
      );
    }
    results.push(
      {
        name: 'single-stream throughput, direct TCP (pod to pod across the fabric)',
        value: tput.direct,
        unit: 'Gbit/s',
      },
      {
        name: 'single-stream throughput, stunnel pair (mTLS) vs direct',
        value: tput.stunnel,
        unit: 'Gbit/s',
        peer: 'direct TCP',
        peerValue: tput.direct,
        ratio: tput.stunnel / tput.direct,
      },
      {
        name: 'single-stream throughput, Node floor pair (plain TCP proxies, no TLS/HTTP/2) vs stunnel',
        value: tput.floor,
        unit: 'Gbit/s',
        peer: 'stunnel pair',
        peerValue: tput.stunnel,
        ratio: tput.floor / tput.stunnel,
      },
      {
        name: 'single-stream throughput, mesh vs the Node floor pair',
        value: tput.mesh,
        unit: 'Gbit/s',
        peer: 'Node floor pair',
        peerValue: tput.floor,
        ratio: tput.mesh / tput.floor,
      },
      {
        name: 'single-stream throughput, mesh (two agents, HBONE) vs stunnel',
        value: tput.mesh,
        unit: 'Gbit/s',
        peer: 'stunnel pair',
        peerValue: tput.stunnel,
        ratio: tput.mesh / tput.stunnel,
        budget: 'ratio >= 1.0',
        met: tput.mesh / tput.stunnel >= 1,
      },
      {
        name: 'single-stream throughput, mesh vs direct TCP',
        value: tput.mesh,
        unit: 'Gbit/s',
        peer: 'direct TCP',
        peerValue: tput.direct,
        ratio: tput.mesh / tput.direct,
      },
      {
        name: 'bytes carried over mTLS by the agents during the throughput run',
        value: meshBytes / 1e6,
        unit: 'MB',
      },
      ...[...streamCpu].map(([node, v]) => ({
        name: `agent ${node}: vCPU used while carrying the single mesh stream (iperf3 run incl. its start)`,
        value: v,
        unit: 'vCPU',
      })),
    );

    // 2. Latency: 1 KB round trips against tcp-echo, fixed rate, open loop.
    const lat = {} as Record<PathName, { p50: number; p99: number }>;
    for (const k of order) {
      const p = paths[k];
      const r = await runLoad(
        mesh,
        p.netns,
        [
          'tcp',
          '--target',
          `${p.host}:${p.echo}`,
          '--rate',
          String(LATENCY.rate),
          '--connections',
          String(LATENCY.connections),
          '--seconds',
          String(ph.latencySecs),
          '--bytes',
          String(LATENCY.bytes),
        ],
        (ph.latencySecs + 30) * 1000,
      );
      if (num(r.completed, `${k} latency`) < num(r.sent, `${k} latency`)) {
        throw new L4BenchError(
          'LOAD_FAILED',
          `${k} latency: ${r.completed}/${r.sent} round trips completed (${JSON.stringify(r.errors)})`,
        );
      }
      lat[k] = { p50: num(r.p50, `${k} p50`), p99: num(r.p99, `${k} p99`) };
    }
    endPhase('latency');
    const at = `1 KB req/resp at ${LATENCY.rate}/s over ${LATENCY.connections} conns`;
    for (const q of ['p50', 'p99'] as const) {
      results.push(
        { name: `latency ${q}, ${at}, direct TCP`, value: lat.direct[q], unit: 'ms' },
        {
          name: `latency ${q}, ${at}, stunnel pair`,
          value: lat.stunnel[q],
          unit: 'ms',
          peer: 'direct TCP',
          peerValue: lat.direct[q],
        },
        {
          name: `latency ${q}, ${at}, Node floor pair (plain TCP proxies, no TLS/HTTP/2)`,
          value: lat.floor[q],
          unit: 'ms',
          peer: 'direct TCP',
          peerValue: lat.direct[q],
        },
        {
          name: `latency ${q}, ${at}, mesh vs stunnel (ratio = stunnel/mesh, higher is better)`,
          value: lat.mesh[q],
          unit: 'ms',
          peer: 'stunnel pair',
          peerValue: lat.stunnel[q],
          ratio: lat.stunnel[q] / lat.mesh[q],
        },
        {
          name: `latency ${q}, ${at}, mesh vs the Node floor pair (ratio = mesh/floor)`,
          value: lat.mesh[q],
          unit: 'ms',
          peer: 'Node floor pair',
          peerValue: lat.floor[q],
          ratio: lat.mesh[q] / lat.floor[q],
          ...(q === 'p99'
            ? { budget: 'mesh p99 <= 1.2x the floor p99', met: lat.mesh.p99 <= 1.2 * lat.floor.p99 }
            : {}),
        },
      );
    }

    // 3. New connections per second: pooled HBONE streams vs a TLS handshake per stunnel connection.
    const cps = {} as Record<PathName, number>;
    for (const k of order) {
      const p = paths[k];
      const r = await runLoad(
        mesh,
        p.netns,
        [
          'connect',
          '--target',
          `${p.host}:${p.echo}`,
          '--concurrency',
          String(CONNECT_CONCURRENCY),
          '--seconds',
          String(ph.connectSecs),
        ],
        (ph.connectSecs + 30) * 1000,
      );
      const done = num(r.connections, `${k} connections`);
      const failed = num(r.failed, `${k} failed connections`);
      if (failed > done / 10) {
        throw new L4BenchError(
          'LOAD_FAILED',
          `${k} connection rate: ${failed} failed of ${done + failed} (${JSON.stringify(r.errors)})`,
        );
      }
      cps[k] = num(r.perSecond, `${k} connections/s`);
    }
    results.push(
      {
        name: `new connections/s (connect, 1 byte each way, close; ${CONNECT_CONCURRENCY} at a time), direct TCP`,
        value: cps.direct,
        unit: 'conn/s',
      },
      {
        name: 'new connections/s, stunnel pair (TLS handshake per connection)',
        value: cps.stunnel,
        unit: 'conn/s',
        peer: 'direct TCP',
        peerValue: cps.direct,
        ratio: cps.stunnel / cps.direct,
      },
      {
        name: 'new connections/s, Node floor pair (a plain TCP connection per hop, no TLS)',
        value: cps.floor,
        unit: 'conn/s',
        peer: 'stunnel pair',
        peerValue: cps.stunnel,
        ratio: cps.floor / cps.stunnel,
      },
      {
        name: 'new connections/s, mesh vs the Node floor pair',
        value: cps.mesh,
        unit: 'conn/s',
        peer: 'Node floor pair',
        peerValue: cps.floor,
        ratio: cps.mesh / cps.floor,
      },
      {
        name: 'new connections/s, mesh (streams on a pooled HBONE connection) vs stunnel',
        value: cps.mesh,
        unit: 'conn/s',
        peer: 'stunnel pair',
        peerValue: cps.stunnel,
        ratio: cps.mesh / cps.stunnel,
        budget: 'ratio >= 3.0',
        met: cps.mesh / cps.stunnel >= 3,
      },
    );

    endPhase('connection rate');

    // 4. CPU per 1000 requests: the same 1 KB HTTP POSTs over keep-alive through each pair in turn
    //    (mesh: client → echo-v2:8080 through both agents; stunnel and floor: loadgen → plain:8080).
    const httpTargets = {
      mesh: { netns: client.netns, target: `${echoV2.ip}:${PORTS.http}`, pids: agentPids },
      stunnel: {
        netns: loadgen.netns,
        target: `${nodeA.podGateway}:${PORTS.stunnelHttp.client}`,
        pids: pidsOf({ 'stunnel client': stunnels.client, 'stunnel server': stunnels.server }),
      },
      floor: {
        netns: loadgen.netns,
        target: `${nodeA.podGateway}:${PORTS.floorHttp.client}`,
        pids: pidsOf({ 'floor client': floors.client, 'floor server': floors.server }),
      },
    };
    const perRequest = {} as Record<keyof typeof httpTargets, Map<string, number>>;
    for (const k of ['mesh', 'stunnel', 'floor'] as const) {
      const t = httpTargets[k];
      const before = new Map<string, number>();
      for (const [name, pid] of t.pids) before.set(name, await fetchTreeCpuSeconds(pid));
      const r = await runLoad(
        mesh,
        t.netns,
        [
          'http',
          '--target',
          t.target,
          '--rate',
          String(CPU_LOAD.rate),
          '--connections',
          String(CPU_LOAD.connections),
          '--seconds',
          String(ph.cpuSecs),
          '--bytes',
          String(CPU_LOAD.bytes),
          '--warmup-ms',
          '0',
        ],
        (ph.cpuSecs + 30) * 1000,
      );
      const requests = num(r.ok, `${k} HTTP requests`);
      const failedReq = num(r.failed, `${k} HTTP failures`);
      if (requests === 0 || failedReq > requests / 100) {
        throw new L4BenchError(
          'LOAD_FAILED',
          `HTTP load through the ${k} pair: ${requests} ok, ${failedReq} failed (${JSON.stringify(r.errors)})`,
        );
      }
      results.push({
        name: `HTTP requests through the ${k} pair (1 KB POST, keep-alive, ${CPU_LOAD.rate}/s offered), p99 ${Number(r.p99).toFixed(2)} ms`,
        value: requests / num(r.seconds, `${k} HTTP seconds`),
        unit: 'req/s',
      });
      // CPU-seconds per 1000 requests and vCPU per 1000 req/s are the same number: both are
      // cpu / (requests / 1000).
      const m = new Map<string, number>();
      for (const [name, pid] of t.pids) {
        m.set(name, (((await fetchTreeCpuSeconds(pid)) - (before.get(name) ?? 0)) * 1000) / requests);
      }
      perRequest[k] = m;
    }
    const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
    const stunnelTotal = total(perRequest.stunnel);
    const floorTotal = total(perRequest.floor);
    for (const [node, per1000] of perRequest.mesh) {
      results.push({
        name: `agent ${node}: vCPU per 1000 req/s (= CPU-s per 1000 requests)`,
        value: per1000,
        unit: 'vCPU',
        budget: '<= 0.12 vCPU',
        met: per1000 <= 0.12,
      });
    }
    for (const k of ['stunnel', 'floor'] as const) {
      for (const [name, per1000] of perRequest[k]) {
        results.push({ name: `${name}: vCPU per 1000 req/s`, value: per1000, unit: 'vCPU' });
      }
    }
    const meshTotal = total(perRequest.mesh);
    results.push(
      {
        name: 'both agents vs the stunnel pair: vCPU per 1000 req/s, same traffic',
        value: meshTotal,
        unit: 'vCPU',
        peer: 'stunnel pair',
        peerValue: stunnelTotal,
        ratio: meshTotal / stunnelTotal,
        budget: 'agents <= stunnel pair',
        met: meshTotal <= stunnelTotal,
      },
      {
        name: 'both agents vs the Node floor pair: vCPU per 1000 req/s, same traffic',
        value: meshTotal,
        unit: 'vCPU',
        peer: 'Node floor pair',
        peerValue: floorTotal,
        ratio: meshTotal / floorTotal,
      },
    );
    for (const [node, pid] of agentPids) {
      const rss = await fetchRssMb(pid, 'VmHWM');
      results.push({
        name: `agent ${node}: peak RSS (VmHWM) over the whole run`,
        value: rss,
        unit: 'MB',
        budget: '<= 128 MB',
        met: rss <= 128,
      });
    }
    for (const [node, rss] of idleRss) {
      results.push({
        name: `agent ${node}: RSS when ready, before any load`,
        value: rss,
        unit: 'MB',
        budget: '<= 64 MB',
        met: rss <= 64,
      });
    }
    for (const [name, pid] of floorPids) {
      results.push(
        {
          name: `Node floor pair, ${name}: RSS before any load`,
          value: floorIdleRss.get(name) ?? 0,
          unit: 'MB',
        },
        {
          name: `Node floor pair, ${name}: peak RSS (VmHWM) over the whole run`,
          value: await fetchRssMb(pid, 'VmHWM'),
          unit: 'MB',
        },
      );
    }
    endPhase('CPU per request');

    return {
      suite: 'l4',
      environment: {
        command: `npm run bench -- l4${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
        date: startedAt.toISOString(),
        loadavg: loadavg()
          .map((l) => l.toFixed(2))
          .join(' '),
        note: 'load clients, servers, agents and stunnel share the machine; compare ratios within one run',
        phases: JSON.stringify(ph),
        elapsed: timings.join(', '),
        stunnel: stunnelVersion(),
      },
      results,
    };
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await mesh.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
