import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalMesh } from '@hypha/agent';
import { fetchCpuSeconds, fetchRssMb, findLoadApp, runLoad, sleep } from '../mesh-load.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const APT_LINE = 'apt-get install -y nginx';
const NGINX_PORT = 8081;
const ECHO_PORT = 8080;

interface Phases {
  saturateSecs: number;
  latencySecs: number;
}
const FULL: Phases = { saturateSecs: 8, latencySecs: 10 };
const QUICK: Phases = { saturateSecs: 3, latencySecs: 3 };
const SATURATE = { rate: 6000, connections: 16, bytes: 1024 } as const;
const FIXED = { rate: 500, connections: 4, bytes: 1024 } as const;

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

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const nginx = findNginx();
  findLoadApp();
  const ph = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-waypoint-'));
  const mesh = await LocalMesh.create({ nodes: ['node-a', 'node-b'] });
  try {
    const client = await mesh.addPod('node-a', 'client', 'demo');
    const echo = await mesh.addPod('node-b', 'echo', 'demo');
    const loadgen = await mesh.addPod('node-a', 'loadgen', 'outside');
    const proxy = await mesh.addPod('node-b', 'nginx', 'outside');
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
    mesh.cluster.spawn(
      proxy.netns,
      nginx,
      ['-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
      {
        stdio: 'ignore',
      },
    );
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

    const paths = {
      waypoint: { netns: client.netns, target: `${vip}:80` },
      nginx: { netns: loadgen.netns, target: `${proxy.ip}:${NGINX_PORT}` },
    };
    type PathName = keyof typeof paths;
    const order: PathName[] = ['nginx', 'waypoint'];
    const wpPid = wp.process.pid;
    if (wpPid === undefined) throw new WaypointBenchError('LOAD_FAILED', 'waypoint process has no pid');
    const load = (k: PathName, l: { rate: number; connections: number; bytes: number }, secs: number) =>
      runLoad(
        mesh,
        paths[k].netns,
        [
          'http',
          '--target',
          paths[k].target,
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

    // 1. Saturated rate.
    const rps = {} as Record<PathName, number>;
    for (const k of order) {
      const r = await load(k, SATURATE, ph.saturateSecs);
      rps[k] = num(r.ok, `${k} ok`) / num(r.seconds, `${k} seconds`);
    }
    // 2. Fixed rate: latency, and the waypoint's CPU while it carries it.
    const lat = {} as Record<PathName, { p50: number; p99: number; ok: number }>;
    let cpuPer1000 = Number.NaN;
    for (const k of order) {
      const cpu0 = k === 'waypoint' ? await fetchCpuSeconds(wpPid) : 0;
      const r = await load(k, FIXED, ph.latencySecs);
      const ok = num(r.ok, `${k} ok`);
      if (num(r.failed, `${k} failed`) > 0)
        throw new WaypointBenchError(
          'LOAD_FAILED',
          `${k}: ${r.failed} requests failed at ${FIXED.rate}/s (${JSON.stringify(r.errors)})`,
        );
      if (k === 'waypoint') cpuPer1000 = ((await fetchCpuSeconds(wpPid)) - cpu0) / (ok / 1000);
      lat[k] = { p50: num(r.p50, `${k} p50`), p99: num(r.p99, `${k} p99`), ok };
    }
    const rss = await fetchRssMb(wpPid, 'VmHWM');
    // The waypoint figures count only if the waypoint really served the requests.
    const metrics = await mesh.fetchInNode('node-b', `http://${wp.pod.ip}:15020/metrics`);
    const served = metrics
      .split('\n')
      .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"'))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    if (served < lat.waypoint.ok)
      throw new WaypointBenchError(
        'MESH_BYPASSED',
        `the waypoint counted ${served} requests, fewer than the ${lat.waypoint.ok} sent through it`,
      );

    const at = `1 KB POST at ${FIXED.rate}/s over ${FIXED.connections} keep-alive conns`;
    const results: BenchResult[] = [
      {
        name: `requests/s, saturated (open loop ${SATURATE.rate}/s offered, ${SATURATE.connections} conns, 1 KB POST)`,
        value: rps.waypoint,
        unit: 'req/s',
        peer: 'nginx (1 worker)',
        peerValue: rps.nginx,
        ratio: rps.waypoint / rps.nginx,
        budget: 'ratio >= 0.5',
        met: rps.waypoint / rps.nginx >= 0.5,
      },
      {
        name: `p50, ${at}`,
        value: lat.waypoint.p50,
        unit: 'ms',
        peer: 'nginx',
        peerValue: lat.nginx.p50,
        ratio: lat.waypoint.p50 / lat.nginx.p50,
      },
      {
        name: `p99, ${at}`,
        value: lat.waypoint.p99,
        unit: 'ms',
        peer: 'nginx',
        peerValue: lat.nginx.p99,
        ratio: lat.waypoint.p99 / lat.nginx.p99,
        budget: 'ratio <= 2',
        met: lat.waypoint.p99 / lat.nginx.p99 <= 2,
      },
      {
        name: `waypoint CPU-seconds per 1000 requests (= vCPU per 1000 req/s), ${at}`,
        value: cpuPer1000,
        unit: 'vCPU',
        budget: '<= 0.25',
        met: cpuPer1000 <= 0.25,
      },
      { name: 'waypoint peak RSS (VmHWM)', value: rss, unit: 'MB' },
    ];
    return {
      suite: 'waypoint',
      environment: { command: `npm run bench -- waypoint${opts.quick ? ' --quick' : ''}`, nginxWorkers: 1 },
      results,
    };
  } finally {
    await mesh.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
