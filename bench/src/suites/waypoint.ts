// `npm run bench -- waypoint [--json] [--quick]`: the L7 waypoint against nginx, in one run on a
// two-node namespace cluster, over four paths with the same open-loop load (1 KB POSTs):
//
//   waypoint        client pod ─> agent A ══HBONE══> waypoint ══HBONE══> agent B ─> http-echo
//   waypoint alone  loadgen ══════════════HBONE══> waypoint ══HBONE══> agent B ─> http-echo
//                   (the load client opens its own mTLS HTTP/2 CONNECT streams: no agent A)
//   nginx           loadgen ─> nginx (1 worker, non-mesh pod, node-b) ─> http-echo (non-mesh)
//   node proxy      loadgen ─> node:http + undici Pool (non-mesh pod, node-b) ─> http-echo (non-mesh)
//
// The first is what a user gets; the second takes agent A and its capture out, so it is the
// waypoint's own share; nginx is the peer; the bare Node proxy is the floor the runtime sets for
// any HTTP proxy written on it, against which the waypoint's CPU is judged.

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, SpiffeId } from '@hypha/shared/identity';
import { LocalMesh } from '@hypha/test';
import {
  fetchCpuSeconds,
  fetchRssMb,
  fetchTreeCpuSeconds,
  findBenchApp,
  findLoadApp,
  runLoad,
  sleep,
} from '../mesh-load.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const APT_LINE = 'apt-get install -y nginx';
const NGINX_PORT = 8081;
const NODE_PROXY_PORT = 8082;
const ECHO_PORT = 8080;
const HBONE_PORT = 15008;

interface Phases {
  warmupSecs: number;
  saturateSecs: number;
  saturateRounds: number;
  latencySecs: number;
}
const FULL: Phases = { warmupSecs: 4, saturateSecs: 4, saturateRounds: 2, latencySecs: 10 };
const QUICK: Phases = { warmupSecs: 2, saturateSecs: 3, saturateRounds: 1, latencySecs: 3 };
const SATURATE = { rate: 6000, connections: 16, bytes: 1024 } as const;
const FIXED = { rate: 500, connections: 4, bytes: 1024 } as const;
// Not measured: the saturating load on every path first, which brings each proxy's JIT and heap to
// steady state, so that the path measured first on a shared proxy (the waypoint serves two paths)
// does not pay for it. A shorter warm-up at 1000/s was not enough: whichever waypoint path came
// first saturated at half the other's rate with 1.5-2x the CPU per request.
const WARMUP = SATURATE;

export class WaypointBenchError extends Error {
  readonly code: 'MISSING_TOOL' | 'LOAD_FAILED' | 'MESH_BYPASSED';
  constructor(code: WaypointBenchError['code'], message: string) {
    super(message);
    this.name = 'WaypointBenchError';
    this.code = code;
  }
}

function findNginx(): string {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) if (existsSync(p)) return p;
  process.stderr.write(`${APT_LINE}\n`);
  throw new WaypointBenchError('MISSING_TOOL', `nginx is not installed; install the peer with: ${APT_LINE}`);
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new WaypointBenchError('LOAD_FAILED', `${what}: no figure in the load client's result`);
  return v;
}

function nginxConf(dir: string, upstream: string): string {
  return `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  upstream echo { server ${upstream}; keepalive 32; }
  server {
    listen ${NGINX_PORT};
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

type PathName = 'nginx' | 'nodeProxy' | 'waypointAlone' | 'waypoint';
/** One path's figures; cpuPer1000 is its proxy's CPU-seconds per 1000 answered requests. */
interface Saturated {
  ok: number;
  rps: number;
  cpuPer1000: number;
}
interface Fixed {
  ok: number;
  p50: number;
  p99: number;
  cpuPer1000: number;
}
const ORDER: readonly PathName[] = ['nginx', 'nodeProxy', 'waypointAlone', 'waypoint'];
interface Load {
  rate: number;
  connections: number;
  bytes: number;
}

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const nginx = findNginx();
  findLoadApp();
  const nodeProxyApp = findBenchApp('node-proxy');
  const ph = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-waypoint-'));
  const mesh = await LocalMesh.create({ nodes: ['node-a', 'node-b'] });
  try {
    const client = await mesh.addPod('node-a', 'client', 'demo');
    const echo = await mesh.addPod('node-b', 'echo', 'demo');
    const loadgen = await mesh.addPod('node-a', 'loadgen', 'outside');
    const proxy = await mesh.addPod('node-b', 'nginx', 'outside');
    const nodeProxy = await mesh.addPod('node-b', 'nodeproxy', 'outside');
    const plain = await mesh.addPod('node-b', 'plain', 'outside');
    const vip = mesh.cluster.allocateServiceIp();
    const pod = (p: typeof client, labels: Record<string, string>) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, labels },
      spec: { nodeName: p.node, serviceAccountName: p.name, containers: [{ name: 'app', image: 'x' }] },
      status: { podIP: p.ip, conditions: [{ type: 'Ready', status: 'True' }] },
    });
    await mesh.writeConfig([
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'demo', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
      },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'outside' } },
      pod(client, { app: 'client' }),
      pod(echo, { app: 'echo' }),
      pod(loadgen, { app: 'loadgen' }),
      pod(proxy, { app: 'nginx' }),
      pod(nodeProxy, { app: 'nodeproxy' }),
      pod(plain, { app: 'plain' }),
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'echo', namespace: 'demo', labels: { 'hypha.dev/use-waypoint': 'waypoint' } },
        spec: {
          clusterIP: vip,
          selector: { app: 'echo' },
          ports: [{ name: 'http', port: 80, targetPort: ECHO_PORT }],
        },
      },
    ]);
    await Promise.all([
      mesh.cluster.startApp(echo, 'http-echo', ['--port', String(ECHO_PORT), '--pod', 'echo']),
      mesh.cluster.startApp(plain, 'http-echo', ['--port', String(ECHO_PORT), '--pod', 'plain']),
    ]);
    await mesh.startAgents();
    // Access log off, as nginx's (access_log off) and Istio's waypoint default.
    const wp = await mesh.startWaypoint({
      node: 'node-b',
      namespace: 'demo',
      name: 'waypoint',
      args: ['--access-log', 'off'],
    });
    await writeFile(join(dir, 'nginx.conf'), nginxConf(dir, `${plain.ip}:${ECHO_PORT}`));
    const nginxProc = mesh.cluster.spawn(
      proxy.netns,
      nginx,
      ['-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
      { stdio: 'ignore' },
    );
    const nodeProxyProc = mesh.cluster.spawnNode(
      nodeProxy.netns,
      nodeProxyApp,
      ['--port', String(NODE_PROXY_PORT), '--upstream', `${plain.ip}:${ECHO_PORT}`],
      { stdio: 'ignore' },
    );
    // The waypoint-alone client is a workload of the mesh as far as the waypoint can tell: it
    // presents a certificate for demo/client from the mesh's CA (issued here with the CA's key, as
    // the CA would sign the client agent's CSR) and checks the waypoint's own identity.
    const tls = await issueClientCertificate(mesh, dir);
    const waypointId = SpiffeId.of(mesh.trustDomain, 'demo', 'waypoint').toString();
    const waitUp = async (netns: string, url: string) => {
      const script = `fetch(${JSON.stringify(url)}).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))`;
      for (let i = 0; i < 100; i++) {
        const ok = await mesh.cluster
          .exec(netns, process.execPath, ['-e', script])
          .then(() => true)
          .catch(() => false);
        if (ok) return;
        await sleep(100);
      }
      throw new WaypointBenchError('LOAD_FAILED', `${url} does not answer 200 from ${netns}`);
    };
    await waitUp(client.netns, `http://${vip}/`);
    await waitUp(loadgen.netns, `http://${proxy.ip}:${NGINX_PORT}/`);
    await waitUp(loadgen.netns, `http://${nodeProxy.ip}:${NODE_PROXY_PORT}/`);

    const paths: Record<PathName, { netns: string; args: string[] }> = {
      waypoint: { netns: client.netns, args: ['http', '--target', `${vip}:80`] },
      waypointAlone: {
        netns: loadgen.netns,
        args: [
          'http-hbone',
          '--target',
          `${vip}:80`,
          '--via',
          `${wp.pod.ip}:${HBONE_PORT}`,
          '--cert',
          tls.cert,
          '--key',
          tls.key,
          '--ca',
          tls.ca,
          '--server-id',
          waypointId,
        ],
      },
      nginx: { netns: loadgen.netns, args: ['http', '--target', `${proxy.ip}:${NGINX_PORT}`] },
      nodeProxy: { netns: loadgen.netns, args: ['http', '--target', `${nodeProxy.ip}:${NODE_PROXY_PORT}`] },
    };
    const pids = {
      waypoint: pidOf(wp.process, 'waypoint'),
      nginx: pidOf(nginxProc, 'nginx'),
      nodeProxy: pidOf(nodeProxyProc, 'node proxy'),
    };
    // CPU of the proxy each path measures: the waypoint's for both waypoint paths, nginx's master
    // and worker, the bare Node proxy's process.
    const proxyCpu: Record<PathName, () => Promise<number>> = {
      waypoint: () => fetchCpuSeconds(pids.waypoint),
      waypointAlone: () => fetchCpuSeconds(pids.waypoint),
      nginx: () => fetchTreeCpuSeconds(pids.nginx),
      nodeProxy: () => fetchCpuSeconds(pids.nodeProxy),
    };
    const load = (k: PathName, l: Load, secs: number) =>
      runLoad(
        mesh,
        paths[k].netns,
        [
          ...paths[k].args,
          '--rate',
          String(l.rate),
          '--connections',
          String(l.connections),
          '--seconds',
          String(secs),
          '--bytes',
          String(l.bytes),
        ],
        (secs + 30) * 1000,
      );
    // The waypoint figures count only if the waypoint really served the requests: its own
    // istio_requests_total must grow by at least what each waypoint phase got answered.
    const fetchServed = async (): Promise<number> => {
      const metrics = await mesh.fetchInNode('node-b', `http://${wp.pod.ip}:15020/metrics`);
      return metrics
        .split('\n')
        .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"'))
        .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    };
    const throughWaypoint = async <T extends { ok: number }>(
      k: PathName,
      phase: string,
      measure: () => Promise<T>,
    ): Promise<T> => {
      if (k !== 'waypoint' && k !== 'waypointAlone') return measure();
      const before = await fetchServed();
      const r = await measure();
      // A request is counted when the waypoint finished it, which may trail the client's view of
      // the response a little: give the counter a few seconds to catch up before calling it a bypass.
      let served = (await fetchServed()) - before;
      for (let i = 0; i < 10 && served < r.ok; i++) {
        await sleep(300);
        served = (await fetchServed()) - before;
      }
      if (served < r.ok)
        throw new WaypointBenchError(
          'MESH_BYPASSED',
          `${k}, ${phase}: the waypoint counted ${served} requests, fewer than the ${r.ok} answered through it`,
        );
      return r;
    };

    // 0. Warm-up, not measured (see WARMUP).
    for (const k of ORDER) await load(k, WARMUP, ph.warmupSecs);
    // 1. Saturated rate, and the proxy's CPU per request at its ceiling. The paths take turns
    // (rounds of saturateSecs each) so that a burst of other work on the machine does not land on
    // one path's whole measurement; each path's figure sums its rounds.
    const sat = Object.fromEntries(ORDER.map((k) => [k, { ok: 0, seconds: 0, cpu: 0 }])) as Record<
      PathName,
      { ok: number; seconds: number; cpu: number }
    >;
    for (let round = 1; round <= ph.saturateRounds; round++) {
      for (const k of ORDER) {
        const r = await throughWaypoint(k, `saturated, round ${round}`, async () => {
          const cpu0 = await proxyCpu[k]();
          const res = await load(k, SATURATE, ph.saturateSecs);
          const cpu = (await proxyCpu[k]()) - cpu0;
          return { ok: num(res.ok, `${k} ok`), seconds: num(res.seconds, `${k} seconds`), cpu };
        });
        sat[k].ok += r.ok;
        sat[k].seconds += r.seconds;
        sat[k].cpu += r.cpu;
      }
    }
    const saturated = Object.fromEntries(
      ORDER.map((k) => [
        k,
        { ok: sat[k].ok, rps: sat[k].ok / sat[k].seconds, cpuPer1000: sat[k].cpu / (sat[k].ok / 1000) },
      ]),
    ) as Record<PathName, Saturated>;
    // 2. Fixed rate: latency, and the proxy's CPU while it carries it.
    const lat = {} as Record<PathName, Fixed>;
    for (const k of ORDER) {
      lat[k] = await throughWaypoint(k, `${FIXED.rate}/s`, async () => {
        const cpu0 = await proxyCpu[k]();
        const r = await load(k, FIXED, ph.latencySecs);
        const cpu = (await proxyCpu[k]()) - cpu0;
        const ok = num(r.ok, `${k} ok`);
        if (num(r.failed, `${k} failed`) > 0)
          throw new WaypointBenchError(
            'LOAD_FAILED',
            `${k}: ${r.failed} requests failed at ${FIXED.rate}/s (${JSON.stringify(r.errors)})`,
          );
        return {
          p50: num(r.p50, `${k} p50`),
          p99: num(r.p99, `${k} p99`),
          ok,
          cpuPer1000: cpu / (ok / 1000),
        };
      });
    }
    const rss = await fetchRssMb(pids.waypoint, 'VmHWM');
    const nodeProxyRss = await fetchRssMb(pids.nodeProxy, 'VmHWM');
    return {
      suite: 'waypoint',
      environment: {
        command: `npm run bench -- waypoint${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
        nginxWorkers: 1,
      },
      results: figures(saturated, lat, rss, nodeProxyRss),
    };
  } finally {
    await mesh.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function pidOf(child: ChildProcess, what: string): number {
  if (child.pid === undefined) throw new WaypointBenchError('LOAD_FAILED', `${what} process has no pid`);
  return child.pid;
}

/** A workload certificate for spiffe://<trust domain>/ns/demo/sa/client, as PEM files in `dir`. */
async function issueClientCertificate(
  mesh: LocalMesh,
  dir: string,
): Promise<{ cert: string; key: string; ca: string }> {
  const ca = await CertificateAuthority.load(join(mesh.dir, 'ca'), { trustDomain: mesh.trustDomain });
  const issued = await ca.issue(SpiffeId.of(mesh.trustDomain, 'demo', 'client'), { ttlSeconds: 3600 });
  const files = {
    cert: join(dir, 'client-cert.pem'),
    key: join(dir, 'client-key.pem'),
    ca: mesh.rootCertPath,
  };
  await writeFile(files.cert, issued.certChainPem);
  await writeFile(files.key, issued.keyPem, { mode: 0o600 });
  return files;
}

// The issue's budgets: the user's path at least half nginx's rate and at most 3x its p99; the
// waypoint at most 0.45 vCPU per 1000 req/s and at most 1.5x the bare Node proxy's CPU for the
// same requests; peak RSS at most 150 MB.
function figures(
  sat: Record<PathName, Saturated>,
  lat: Record<PathName, Fixed>,
  rss: number,
  nodeProxyRss: number,
): BenchResult[] {
  const saturated = `saturated (open loop ${SATURATE.rate}/s offered, ${SATURATE.connections} conns, 1 KB POST)`;
  const at = `1 KB POST at ${FIXED.rate}/s over ${FIXED.connections} keep-alive conns`;
  const cpu = 'CPU-seconds per 1000 requests (= vCPU per 1000 req/s)';
  const NGINX = 'nginx (1 worker)';
  const FLOOR = 'bare Node proxy (node:http + undici Pool)';
  const withRatio = (r: BenchResult & { peerValue: number }, budget?: Budget): BenchResult => {
    const ratio = r.value / r.peerValue;
    return { ...r, ratio, ...(budget ? { budget: budget.text, met: budget.ok(ratio) } : {}) };
  };
  // Requests/s, p50 and p99 of one path against nginx's, each with its budget if it has one.
  const vsNginx = (
    name: string,
    k: PathName,
    budgets: { rps?: Budget; p99?: Budget } = {},
  ): BenchResult[] => [
    withRatio(
      {
        name: `requests/s, ${saturated}, ${name}`,
        value: sat[k].rps,
        unit: 'req/s',
        peer: NGINX,
        peerValue: sat.nginx.rps,
      },
      budgets.rps,
    ),
    withRatio({
      name: `p50, ${at}, ${name}`,
      value: lat[k].p50,
      unit: 'ms',
      peer: NGINX,
      peerValue: lat.nginx.p50,
    }),
    withRatio(
      { name: `p99, ${at}, ${name}`, value: lat[k].p99, unit: 'ms', peer: NGINX, peerValue: lat.nginx.p99 },
      budgets.p99,
    ),
  ];
  // The proxy's CPU on path k at both rates, against the peer's on its own path.
  const cpuAt = (who: string, k: PathName, peer: string, p: PathName, suffix = ''): BenchResult[] => [
    withRatio({
      name: `${who} ${cpu}, ${at}${suffix}`,
      value: lat[k].cpuPer1000,
      unit: 'vCPU',
      peer,
      peerValue: lat[p].cpuPer1000,
    }),
    withRatio({
      name: `${who} ${cpu}, ${saturated}${suffix}`,
      value: sat[k].cpuPer1000,
      unit: 'vCPU',
      peer,
      peerValue: sat[p].cpuPer1000,
    }),
  ];
  const wpCpu = lat.waypoint.cpuPer1000;
  return [
    // The user's path.
    ...vsNginx('waypoint path', 'waypoint', { rps: SAT_BUDGET, p99: P99_BUDGET }),
    {
      name: `waypoint ${cpu}, ${at}, waypoint path`,
      value: wpCpu,
      unit: 'vCPU',
      budget: '<= 0.45',
      met: wpCpu <= 0.45,
    },
    withRatio(
      {
        name: `waypoint ${cpu}, ${at}, waypoint path, against the runtime's floor`,
        value: wpCpu,
        unit: 'vCPU',
        peer: FLOOR,
        peerValue: lat.nodeProxy.cpuPer1000,
      },
      FLOOR_BUDGET,
    ),
    cpuAt('waypoint', 'waypoint', FLOOR, 'nodeProxy', ', waypoint path')[1]!,
    { name: 'waypoint peak RSS (VmHWM)', value: rss, unit: 'MB', budget: '<= 150', met: rss <= 150 },
    // The waypoint alone: an HBONE client straight to it, no agent A.
    ...vsNginx('waypoint alone (HBONE client -> waypoint)', 'waypointAlone'),
    ...cpuAt('waypoint', 'waypointAlone', FLOOR, 'nodeProxy', ', waypoint alone'),
    // The runtime's floor, against nginx.
    ...vsNginx(FLOOR, 'nodeProxy'),
    ...cpuAt(FLOOR, 'nodeProxy', NGINX, 'nginx'),
    { name: `${FLOOR} peak RSS (VmHWM)`, value: nodeProxyRss, unit: 'MB' },
  ];
}

interface Budget {
  text: string;
  ok: (ratio: number) => boolean;
}
const SAT_BUDGET: Budget = { text: 'ratio >= 0.5', ok: (r: number) => r >= 0.5 };
const P99_BUDGET: Budget = { text: 'ratio <= 3', ok: (r: number) => r <= 3 };
const FLOOR_BUDGET: Budget = { text: 'ratio <= 1.5', ok: (r: number) => r <= 1.5 };
