// `npm run bench -- ingress [--json] [--quick]`: HTTPS in at the edge, the ingress gateway against
// nginx terminating TLS, in one run on a two-node namespace cluster, with the same open-loop load
// (1 KB POSTs over keep-alive TLS connections, SNI bench.example.test, server verified against the
// bench's CA):
//
//   gateway  loadgen (outside, node-a) ─TLS─> hypha gateway (pod, node-b) ══HBONE══> agent B ─> http-echo (mesh)
//   nginx    loadgen (outside, node-a) ─TLS─> nginx (1 worker, pod, node-b) ─────────────> http-echo (not in mesh)
//
// The gateway does more on its path (mTLS into the mesh); that is what a user gets from it. The
// issue's budget: the gateway's requests/s at least 0.5x nginx's.
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAYPOINT_NODE_FLAGS } from '@hypha/shared/hbone';
import { LocalMesh, trackProcess } from '@hypha/test';
import { fetchCpuSeconds, fetchTreeCpuSeconds, findLoadApp, runLoad, sleep } from '../mesh-load.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const APT_LINE = 'apt-get install -y nginx';
const HOST = 'bench.example.test';
const GATEWAY_PORT = 8443;
const NGINX_PORT = 8444;
const ECHO_PORT = 8080;
const SATURATE = { rate: 4000, connections: 16, bytes: 1024 } as const;
const FIXED = { rate: 500, connections: 4, bytes: 1024 } as const;
const FULL = { warmupSecs: 4, saturateSecs: 4, saturateRounds: 2, latencySecs: 10 };
const QUICK = { warmupSecs: 2, saturateSecs: 3, saturateRounds: 1, latencySecs: 3 };
type PathName = 'nginx' | 'gateway';
const ORDER: readonly PathName[] = ['nginx', 'gateway'];

export class IngressBenchError extends Error {
  readonly code: 'MISSING_TOOL' | 'LOAD_FAILED' | 'MESH_BYPASSED';
  constructor(code: IngressBenchError['code'], message: string) {
    super(message);
    this.name = 'IngressBenchError';
    this.code = code;
  }
}

function findNginx(): string {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) if (existsSync(p)) return p;
  process.stderr.write(`${APT_LINE}\n`);
  throw new IngressBenchError('MISSING_TOOL', `nginx is not installed; install the peer with: ${APT_LINE}`);
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new IngressBenchError('LOAD_FAILED', `${what}: no figure in the load client's result`);
  return v;
}

/** A CA and an ECDSA P-256 certificate for HOST (the same for both paths). */
function makeCertificate(dir: string): void {
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench-ca']);
  run(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${HOST}`]);
  execFileSync('sh', ['-c', `printf 'subjectAltName=DNS:${HOST}\\n' > server.ext`], { cwd: dir });
  run([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '1',
    '-extfile',
    'server.ext',
  ]);
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
    listen ${NGINX_PORT} ssl;
    server_name ${HOST};
    ssl_certificate ${dir}/server.pem;
    ssl_certificate_key ${dir}/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
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
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-ingress-'));
  makeCertificate(dir);
  const mesh = await LocalMesh.create({ nodes: ['node-a', 'node-b'] });
  try {
    const echo = await mesh.addPod('node-b', 'echo', 'demo');
    const gwPod = await mesh.addPod('node-b', 'ingress', 'demo');
    const loadgen = await mesh.addPod('node-a', 'loadgen', 'outside');
    const proxy = await mesh.addPod('node-b', 'nginx', 'outside');
    const plain = await mesh.addPod('node-b', 'plain', 'outside');
    const vip = mesh.cluster.allocateServiceIp();
    const pod = (p: typeof echo, labels: Record<string, string>, sa = p.name) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, labels },
      spec: { nodeName: p.node, serviceAccountName: sa, containers: [{ name: 'app', image: 'x' }] },
      status: { podIP: p.ip, conditions: [{ type: 'Ready', status: 'True' }] },
    });
    const b64 = async (f: string) => (await readFile(join(dir, f))).toString('base64');
    await mesh.writeConfig([
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'demo', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
      },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'outside' } },
      pod(echo, { app: 'echo' }),
      pod(
        gwPod,
        { 'gateway.networking.k8s.io/gateway-name': 'ingress', 'hypha.dev/dataplane-mode': 'none' },
        'ingress',
      ),
      pod(loadgen, { app: 'loadgen' }),
      pod(proxy, { app: 'nginx' }),
      pod(plain, { app: 'plain' }),
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'echo', namespace: 'demo' },
        spec: {
          clusterIP: vip,
          selector: { app: 'echo' },
          ports: [{ name: 'http', port: 80, targetPort: ECHO_PORT }],
        },
      },
      {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'kubernetes.io/tls',
        metadata: { name: 'bench-cert', namespace: 'demo' },
        data: { 'tls.crt': await b64('server.pem'), 'tls.key': await b64('server.key') },
      },
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'Gateway',
        metadata: { name: 'ingress', namespace: 'demo' },
        spec: {
          gatewayClassName: 'hypha',
          listeners: [
            {
              name: 'https',
              port: GATEWAY_PORT,
              protocol: 'HTTPS',
              hostname: HOST,
              tls: { certificateRefs: [{ name: 'bench-cert' }] },
            },
          ],
        },
      },
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: 'echo', namespace: 'demo' },
        spec: { parentRefs: [{ name: 'ingress' }], rules: [{ backendRefs: [{ name: 'echo', port: 80 }] }] },
      },
    ]);
    await Promise.all([
      mesh.cluster.startApp(echo, 'http-echo', ['--port', String(ECHO_PORT), '--pod', 'echo']),
      mesh.cluster.startApp(plain, 'http-echo', ['--port', String(ECHO_PORT), '--pod', 'plain']),
    ]);
    await mesh.startAgents();
    // Access log off, as nginx's (access_log off).
    const gateway = trackProcess(
      mesh.cluster.spawnNode(
        gwPod.netns,
        mesh.hyphaBin,
        [
          'gateway',
          '--name',
          'ingress',
          '--namespace',
          'demo',
          '--config',
          `file:${mesh.configPath}`,
          '--ca-address',
          mesh.caAddress,
          '--ca-token-file',
          join(mesh.dir, `token-${gwPod.node}`),
          '--ca-root-file',
          mesh.rootCertPath,
          '--trust-domain',
          mesh.trustDomain,
          '--access-log',
          'off',
          '--drain-timeout',
          '1s',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: WAYPOINT_NODE_FLAGS },
      ),
      'gateway demo/ingress',
    );
    await gateway.waitFor((e) => e.msg === 'ready', 30_000);
    await writeFile(join(dir, 'nginx.conf'), nginxConf(dir, `${plain.ip}:${ECHO_PORT}`));
    const nginxProc = mesh.cluster.spawn(
      proxy.netns,
      nginx,
      ['-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
      { stdio: 'ignore' },
    );
    const target: Record<PathName, string> = {
      gateway: `${gwPod.ip}:${GATEWAY_PORT}`,
      nginx: `${proxy.ip}:${NGINX_PORT}`,
    };
    const load = (k: PathName, l: { rate: number; connections: number; bytes: number }, secs: number) =>
      runLoad(
        mesh,
        loadgen.netns,
        [
          'https',
          '--target',
          target[k],
          '--ca',
          join(dir, 'ca.pem'),
          '--server-name',
          HOST,
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
    // Both answer 200 before anything is measured.
    for (const k of ORDER) {
      let up = false;
      for (let i = 0; i < 50 && !up; i++) {
        const r = await load(k, { rate: 10, connections: 1, bytes: 16 }, 1).catch(() => undefined);
        up = r !== undefined && num(r.ok, `${k} ok`) > 0 && r.failed === 0;
        if (!up) await sleep(200);
      }
      if (!up)
        throw new IngressBenchError('LOAD_FAILED', `${k} at ${target[k]} does not answer 200 over TLS`);
    }
    const pids = { gateway: pidOf(gateway.process, 'gateway'), nginx: pidOf(nginxProc, 'nginx') };
    const cpuOf: Record<PathName, () => Promise<number>> = {
      gateway: () => fetchCpuSeconds(pids.gateway),
      nginx: () => fetchTreeCpuSeconds(pids.nginx),
    };
    // The gateway's figures count only if it served the requests (its own request counter).
    const fetchServed = async (): Promise<number> => {
      const metrics = await mesh.fetchInNode('node-b', `http://${gwPod.ip}:15020/metrics`);
      return metrics
        .split('\n')
        .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="gateway"'))
        .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    };
    const measured = async <T extends { ok: number }>(k: PathName, phase: string, f: () => Promise<T>) => {
      if (k !== 'gateway') return f();
      const before = await fetchServed();
      const r = await f();
      let served = (await fetchServed()) - before;
      for (let i = 0; i < 10 && served < r.ok; i++) {
        await sleep(300);
        served = (await fetchServed()) - before;
      }
      if (served < r.ok)
        throw new IngressBenchError(
          'MESH_BYPASSED',
          `gateway, ${phase}: it counted ${served} requests, fewer than the ${r.ok} answered through it`,
        );
      return r;
    };

    for (const k of ORDER) await load(k, SATURATE, ph.warmupSecs);
    const sat = { gateway: { ok: 0, seconds: 0, cpu: 0 }, nginx: { ok: 0, seconds: 0, cpu: 0 } };
    for (let round = 1; round <= ph.saturateRounds; round++) {
      for (const k of ORDER) {
        const r = await measured(k, `saturated, round ${round}`, async () => {
          const cpu0 = await cpuOf[k]();
          const res = await load(k, SATURATE, ph.saturateSecs);
          return {
            ok: num(res.ok, `${k} ok`),
            seconds: num(res.seconds, `${k} seconds`),
            cpu: (await cpuOf[k]()) - cpu0,
          };
        });
        sat[k].ok += r.ok;
        sat[k].seconds += r.seconds;
        sat[k].cpu += r.cpu;
      }
    }
    const lat = {} as Record<PathName, { ok: number; p50: number; p99: number }>;
    for (const k of ORDER) {
      lat[k] = await measured(k, `${FIXED.rate}/s`, async () => {
        const r = await load(k, FIXED, ph.latencySecs);
        if (num(r.failed, `${k} failed`) > 0)
          throw new IngressBenchError(
            'LOAD_FAILED',
            `${k}: ${r.failed} requests failed at ${FIXED.rate}/s (${JSON.stringify(r.errors)})`,
          );
        return { ok: num(r.ok, `${k} ok`), p50: num(r.p50, `${k} p50`), p99: num(r.p99, `${k} p99`) };
      });
    }
    const rps = (k: PathName) => sat[k].ok / sat[k].seconds;
    const cpu1000 = (k: PathName) => sat[k].cpu / (sat[k].ok / 1000);
    const saturated = `HTTPS, saturated (open loop ${SATURATE.rate}/s offered, ${SATURATE.connections} TLS conns, 1 KB POST)`;
    const at = `HTTPS 1 KB POST at ${FIXED.rate}/s over ${FIXED.connections} keep-alive TLS conns`;
    const NGINX = 'nginx terminating TLS (1 worker)';
    const ratio = (value: number, peerValue: number) => ({
      peer: NGINX,
      peerValue,
      ratio: value / peerValue,
    });
    const results: BenchResult[] = [
      {
        name: `requests/s, ${saturated}, gateway into the mesh`,
        value: rps('gateway'),
        unit: 'req/s',
        ...ratio(rps('gateway'), rps('nginx')),
        budget: 'ratio >= 0.5',
        met: rps('gateway') / rps('nginx') >= 0.5,
      },
      {
        name: `p50, ${at}, gateway`,
        value: lat.gateway.p50,
        unit: 'ms',
        ...ratio(lat.gateway.p50, lat.nginx.p50),
      },
      {
        name: `p99, ${at}, gateway`,
        value: lat.gateway.p99,
        unit: 'ms',
        ...ratio(lat.gateway.p99, lat.nginx.p99),
      },
      {
        name: `CPU-seconds per 1000 requests, ${saturated}, gateway`,
        value: cpu1000('gateway'),
        unit: 'vCPU',
        ...ratio(cpu1000('gateway'), cpu1000('nginx')),
      },
    ];
    return {
      suite: 'ingress',
      environment: {
        command: `npm run bench -- ingress${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
        nginxWorkers: 1,
      },
      results,
    };
  } finally {
    await mesh.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function pidOf(child: ChildProcess, what: string): number {
  if (child.pid === undefined) throw new IngressBenchError('LOAD_FAILED', `${what} process has no pid`);
  return child.pid;
}
