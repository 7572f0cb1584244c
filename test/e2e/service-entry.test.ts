// Egress through the mesh (issue 16 parts 2-4, docs/egress.md) on a two-node namespace cluster with
// an "outside world": a host beyond the cluster on the fabric (TestCluster.addExternalHost) running
// the external API (a TCP echo on 8080), an unlisted service (echo on 9090) and the resolver for
// their names (dnsmasq). A mesh pod's DNS is captured by the agent (--dns-proxy), so:
//   - the ServiceEntry host answers its allocated VIP from the agent, and a connection to it by name
//     is captured, resolved upstream by the agent and reaches the external API from the agent;
//   - the unlisted service passes through with ALLOW_ANY and is refused, logged and counted once
//     MeshConfig hypha-system/default says REGISTRY_ONLY; the ServiceEntry host keeps working.
// The rest of the DNS proxy (Service names, short names, NXDOMAIN, large answers over TCP) is
// test/e2e/dns.test.ts.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { hashedVip } from '@hypha/shared/config';
import { type ClusterPod, type ExternalHost, LocalMesh } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const NODES = ['node-a', 'node-b'] as const;
const API_HOST = 'api.external.test';
const API_PORT = 8080;
const UNLISTED_PORT = 9090;

let mesh: LocalMesh;
let client: ClusterPod; // mesh pod, node-a
let plain: ClusterPod; // non-mesh pod, node-a
let world: ExternalHost;
let clusterDns: string;
let resolver: ChildProcess;
let resolverLog = '';
const servers: Server[] = [];
/** Remote addresses the outside world's servers saw, by port. */
const seen = new Map<number, string[]>();
const netnsConfDirs: string[] = [];
let createdEtcNetns = false;

const pod = (name: string, namespace: string, node: string, ip: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels: { app: name } },
  spec: { nodeName: node, serviceAccountName: name },
  status: { podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});
// The ServiceEntry docs/egress.md shows: no addresses, so the host gets a VIP; DNS resolution.
const externalApi = {
  apiVersion: 'networking.hypha.dev/v1',
  kind: 'ServiceEntry',
  metadata: { name: 'external-api', namespace: 'shop' },
  spec: {
    hosts: [API_HOST],
    location: 'MESH_EXTERNAL',
    ports: [{ number: API_PORT, name: 'tcp', protocol: 'TCP' }],
    resolution: 'DNS',
  },
};
// A STATIC entry: its own address (no interface has it), traffic to the outside server's 8080.
const ordersDb = (worldIp: string) => ({
  apiVersion: 'networking.hypha.dev/v1',
  kind: 'ServiceEntry',
  metadata: { name: 'orders-db', namespace: 'shop' },
  spec: {
    hosts: ['db.external.test'],
    addresses: ['192.0.2.40'],
    ports: [{ number: 5432, name: 'pg', protocol: 'TCP' }],
    resolution: 'STATIC',
    endpoints: [{ address: worldIp, ports: { pg: API_PORT } }],
  },
});
const meshConfig = (mode: 'ALLOW_ANY' | 'REGISTRY_ONLY') => ({
  apiVersion: 'networking.hypha.dev/v1',
  kind: 'MeshConfig',
  metadata: { name: 'default', namespace: 'hypha-system' },
  spec: { outboundTrafficPolicy: { mode } },
});
let baseConfig: unknown[];

async function writePodResolvConf(p: ClusterPod): Promise<void> {
  const dir = join('/etc/netns', p.netns);
  if (!existsSync('/etc/netns')) createdEtcNetns = true;
  await mkdir(dir, { recursive: true });
  netnsConfDirs.push(dir);
  await writeFile(
    join(dir, 'resolv.conf'),
    `nameserver ${clusterDns}\nsearch ${p.namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`,
  );
}

async function dig(from: ClusterPod, ...args: string[]): Promise<string> {
  const r = await mesh.cluster
    .exec(from.netns, 'dig', ['+tries=1', '+time=3', ...args])
    .catch((e: { stdout?: string; stderr?: string }) => ({ stdout: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
  return r.stdout;
}

/** An echo server in the outside world that remembers who connected. */
async function startWorldServer(port: number): Promise<void> {
  const server = await mesh.cluster.listenIn(world.netns, { host: world.ip, port });
  server.on('connection', (s: Socket) => {
    seen.set(port, [...(seen.get(port) ?? []), s.remoteAddress ?? '?']);
    s.on('error', () => {});
    s.pipe(s);
  });
  servers.push(server);
}

const roundTrip = (from: ClusterPod, host: string, port: number) =>
  mesh.cluster.tcpRoundTrip(from.netns, host, port, 5000);

beforeAll(async () => {
  mesh = await LocalMesh.create({ nodes: NODES });
  const { cluster } = mesh;
  client = await mesh.addPod('node-a', 'client', 'shop');
  plain = await mesh.addPod('node-a', 'plain', 'outside');
  world = await cluster.addExternalHost('world');
  clusterDns = cluster.allocateServiceIp(); // "kube-dns": nothing listens there
  await writePodResolvConf(client);
  await writePodResolvConf(plain);
  baseConfig = [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'outside' } },
    pod('client', 'shop', 'node-a', client.ip),
    pod('plain', 'outside', 'node-a', plain.ip),
    externalApi,
    ordersDb(world.ip),
  ];
  await mesh.writeConfig(baseConfig);
  resolver = cluster.spawn(
    world.netns,
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--pid-file=',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${world.ip}`,
      '--port=53',
      `--address=/${API_HOST}/${world.ip}`,
      `--address=/unlisted.external.test/${world.ip}`,
      // What a search path makes of an outside name ends in cluster.local: say it does not exist.
      '--local=/cluster.local/',
      '--log-queries',
      '--log-facility=-',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    const on = (d: Buffer) => {
      resolverLog += d.toString();
      if (/started, version/.test(resolverLog)) resolve();
    };
    resolver.stderr?.on('data', on);
    resolver.stdout?.on('data', on);
    resolver.once('exit', (code) => reject(new Error(`dnsmasq exited (${code}): ${resolverLog}`)));
  });
  resolver.removeAllListeners('exit');
  await startWorldServer(API_PORT);
  await startWorldServer(UNLISTED_PORT);
  const args = ['--dns-proxy', '--dns-upstream', world.ip];
  await Promise.all(NODES.map((n) => mesh.startAgent(n, 30_000, { args })));
}, 120_000);

afterAll(async () => {
  resolver?.kill('SIGKILL');
  for (const s of servers) s.close();
  await mesh?.stop();
  for (const d of netnsConfDirs) await rm(d, { recursive: true, force: true });
  if (createdEtcNetns) await rmdir('/etc/netns').catch(() => {});
});

describe('ServiceEntry: an external host by name, through the mesh', () => {
  it("answers the host's allocated VIP from the agent, and forwards other outside names", async () => {
    const vip = hashedVip(API_HOST);
    expect(vip).toMatch(/^240\.240\./);
    expect((await dig(client, '+short', API_HOST)).trim()).toBe(vip);
    expect(await dig(client, API_HOST)).toMatch(/flags: qr aa rd ra/);
    // The agent answered it: the outside resolver was never asked for the host.
    expect(resolverLog).not.toContain(`query[A] ${API_HOST}`);
    expect((await dig(client, '+short', 'unlisted.external.test')).trim()).toBe(world.ip);
    // Every agent gives the host the same VIP (derived from the name).
    const view = JSON.parse(await mesh.fetchInNode('node-b', 'http://127.0.0.1:15000/debug/dns')) as {
      index: { serviceEntries: number };
    };
    expect(view.index.serviceEntries).toBe(2);
    expect((await dig(client, '+short', 'db.external.test')).trim()).toBe('192.0.2.40');
  });

  it('carries a TCP connection by host name to the external server: captured at the VIP, resolved upstream by the agent', async () => {
    const before = seen.get(API_PORT)?.length ?? 0;
    expect(await roundTrip(client, API_HOST, API_PORT)).toBe(true);
    const from = (seen.get(API_PORT) ?? []).slice(before);
    // The external server saw the agent (node-a's fabric address), never the pod: it went through the mesh.
    expect(from.length).toBeGreaterThan(0);
    expect(from.every((a) => a.endsWith(mesh.cluster.node('node-a').ip))).toBe(true);
    expect(resolverLog).toContain(`query[A] ${API_HOST} from ${mesh.cluster.node('node-a').ip}`);
    // The access-log line is written when the connection closes, which may be after the echo.
    const access = await mesh.agents
      .get('node-a')!
      .waitFor((e) => e.dst_service === 'shop/external-api' && e.response_flags === '-', 5000);
    expect(access).toMatchObject({
      direction: 'passthrough',
      dst: `${world.ip}:${API_PORT}`,
      src_workload: 'client',
    });
    const metrics = await mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
    expect(metrics).toMatch(
      new RegExp(`istio_tcp_connections_opened_total\\{[^}]*destination_service="${API_HOST}"[^}]*\\} [1-9]`),
    );
  });

  it("sends a STATIC entry's address to its endpoint, on the endpoint's port", async () => {
    const before = seen.get(API_PORT)?.length ?? 0;
    expect(await roundTrip(client, 'db.external.test', 5432)).toBe(true);
    expect((seen.get(API_PORT) ?? []).length).toBeGreaterThan(before);
    await mesh.agents
      .get('node-a')!
      .waitFor((e) => e.dst_service === 'shop/orders-db' && e.dst === `${world.ip}:${API_PORT}`, 5000);
  });
});

describe('outboundTrafficPolicy', () => {
  it('ALLOW_ANY (no MeshConfig) passes an unlisted destination through', async () => {
    const before = seen.get(UNLISTED_PORT)?.length ?? 0;
    expect(await roundTrip(client, world.ip, UNLISTED_PORT)).toBe(true);
    expect((seen.get(UNLISTED_PORT) ?? []).length).toBeGreaterThan(before);
  });

  it('REGISTRY_ONLY refuses it, says why in the log, counts it; the ServiceEntry host and non-mesh pods are unaffected', async () => {
    await mesh.applyConfig([...baseConfig, meshConfig('REGISTRY_ONLY')]);
    const agent = mesh.agents.get('node-a')!;
    await agent.waitFor((e) => e.msg === 'outbound traffic policy REGISTRY_ONLY');
    const before = seen.get(UNLISTED_PORT)?.length ?? 0;
    expect(await roundTrip(client, world.ip, UNLISTED_PORT)).toBe(false);
    expect(seen.get(UNLISTED_PORT)?.length ?? 0).toBe(before);
    const refusal = await agent.waitFor((e) => e.reason === 'REGISTRY_ONLY');
    expect(refusal).toMatchObject({ dst: `${world.ip}:${UNLISTED_PORT}`, src_workload: 'shop/client' });
    expect(String(refusal.msg)).toContain('neither a known Service, pod nor ServiceEntry');
    const metrics = await mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
    expect(metrics).toMatch(
      /istio_tcp_connections_failed_total\{[^}]*source_workload="client"[^}]*destination_service="BlackHoleCluster"[^}]*response_flags="REGISTRY_ONLY"[^}]*\} [1-9]/,
    );
    // Registered: still reachable by name.
    expect(await roundTrip(client, API_HOST, API_PORT)).toBe(true);
    // A pod outside the mesh is not the mesh's to refuse.
    expect(await roundTrip(plain, world.ip, UNLISTED_PORT)).toBe(true);
  });

  it('back to ALLOW_ANY: the same destination passes again', async () => {
    await mesh.applyConfig([...baseConfig, meshConfig('ALLOW_ANY')]);
    expect(await roundTrip(client, world.ip, UNLISTED_PORT)).toBe(true);
  });
});
