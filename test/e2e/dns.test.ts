// The agent's DNS proxy end to end (issue 16 part 4, docs/dns.md): agents run with --dns-proxy on a
// two-node namespace cluster; a mesh pod's resolv.conf names a cluster DNS address where nothing
// listens, exactly as a Kubernetes pod's names kube-dns: capture sends its port-53 traffic to the
// agent, which answers Service names itself and forwards the rest to an upstream resolver (dnsmasq
// in a non-mesh pod, the test's "outside world").
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ClusterPod, LocalMesh } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const NODES = ['node-a', 'node-b'] as const;
const EXT_ANSWER = '192.0.2.80';
const BIG_TXT = Array.from({ length: 10 }, (_, i) => `${i + 1}${'x'.repeat(200)}`);

let mesh: LocalMesh;
let client: ClusterPod; // mesh pod, node-a
let plain: ClusterPod; // non-mesh pod, node-a
let resolverPod: ClusterPod; // non-mesh, node-b: the upstream resolver
let webVip: string;
let clusterDns: string;
let resolver: ChildProcess;
let resolverLog = '';
const netnsConfDirs: string[] = [];
/** Whether this run created /etc/netns itself (then it removes it again, if empty). */
let createdEtcNetns = false;

const pod = (name: string, namespace: string, node: string, ip: string, app: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels: { app } },
  spec: { nodeName: node, serviceAccountName: name },
  status: { podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});

/** /etc/netns/NS/resolv.conf: `ip netns exec NS` mounts it over /etc/resolv.conf, as a pod's. */
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
const agentArgs = () => ['--dns-proxy', '--dns-upstream', resolverPod.ip];
const status = (out: string) => /status: (\w+)/.exec(out)?.[1];

beforeAll(async () => {
  mesh = await LocalMesh.create({ nodes: NODES });
  const { cluster } = mesh;
  client = await mesh.addPod('node-a', 'client', 'shop');
  const web = await mesh.addPod('node-b', 'web', 'shop');
  plain = await mesh.addPod('node-a', 'plain', 'outside');
  resolverPod = await mesh.addPod('node-b', 'resolver', 'outside');
  webVip = cluster.allocateServiceIp();
  clusterDns = cluster.allocateServiceIp(); // "kube-dns": nothing listens there
  await writePodResolvConf(client);
  await writePodResolvConf(plain);
  await mesh.writeConfig([
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'outside' } },
    pod('client', 'shop', 'node-a', client.ip, 'client'),
    pod('web', 'shop', 'node-b', web.ip, 'web'),
    pod('plain', 'outside', 'node-a', plain.ip, 'plain'),
    pod('resolver', 'outside', 'node-b', resolverPod.ip, 'resolver'),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { clusterIP: webVip, selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] },
    },
  ]);
  resolver = cluster.spawn(
    resolverPod.netns,
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--pid-file=',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${resolverPod.ip}`,
      '--port=53',
      '--local-ttl=60',
      `--address=/ext.example.test/${EXT_ANSWER}`,
      ...BIG_TXT.map((t) => `--txt-record=big.example.test,${t}`),
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
  await Promise.all(NODES.map((n) => mesh.startAgent(n, 30_000, { args: agentArgs() })));
}, 120_000);

afterAll(async () => {
  resolver?.kill('SIGKILL');
  await mesh?.stop();
  for (const d of netnsConfDirs) await rm(d, { recursive: true, force: true });
  if (createdEtcNetns) await rmdir('/etc/netns').catch(() => {}); // only if empty: others may use it
});

describe('DNS proxy in the agent, from inside a mesh pod', () => {
  it("answers a Service's name with its VIP, through the pod's resolv.conf address", async () => {
    expect((await dig(client, '+short', 'web.shop.svc.cluster.local')).trim()).toBe(webVip);
    const full = await dig(client, 'web.shop.svc.cluster.local');
    expect(full).toMatch(/flags: qr aa rd ra/);
    expect(full).toContain(`SERVER: ${clusterDns}#53`);
  });

  it('answers short names through the search path', async () => {
    expect((await dig(client, '+search', '+short', 'web')).trim()).toBe(webVip);
    expect((await dig(client, '+search', '+short', 'web.shop')).trim()).toBe(webVip);
  });

  it('says NXDOMAIN for a Service that does not exist', async () => {
    expect(status(await dig(client, 'missing.shop.svc.cluster.local'))).toBe('NXDOMAIN');
  });

  it('forwards an external name to the upstream resolver, asked by the agent rather than the pod', async () => {
    expect((await dig(client, '+short', 'ext.example.test')).trim()).toBe(EXT_ANSWER);
    const asked = resolverLog.split('\n').filter((l) => l.includes('query[A] ext.example.test from'));
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((l) => !l.includes(`from ${client.ip}`))).toBe(true);
  });

  it('carries a large answer over TCP, and marks it truncated for a UDP client that cannot take it', async () => {
    const tcp = await dig(client, '+tcp', 'big.example.test', 'TXT');
    expect(tcp).toContain('ANSWER: 10');
    for (const t of BIG_TXT) expect(tcp).toContain(t);
    const udp = await dig(client, '+notcp', '+ignore', '+noedns', 'big.example.test', 'TXT');
    expect(udp).toMatch(/flags: qr tc rd ra/);
    // The default: UDP first, TC, then dig retries over TCP by itself and gets everything.
    expect(await dig(client, 'big.example.test', 'TXT')).toContain('ANSWER: 10');
  });

  it("leaves a non-mesh pod's DNS alone", async () => {
    const out = await dig(plain, `@${resolverPod.ip}`, '+short', 'ext.example.test');
    expect(out.trim()).toBe(EXT_ANSWER);
    expect(resolverLog).toContain(`query[A] ext.example.test from ${plain.ip}`);
    expect(status(await dig(plain, 'web.shop.svc.cluster.local'))).not.toBe('NOERROR');
  });

  it('shows its work: /debug/dns on the admin port and hypha_dns_* metrics', async () => {
    const view = JSON.parse(await mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/debug/dns')) as {
      index: { names: number };
      cache: { entries: number };
      recent: { name: string; source: string }[];
    };
    expect(view.index.names).toBe(1);
    expect(view.cache.entries).toBeGreaterThan(0);
    expect(view.recent.some((q) => q.name === 'web.shop.svc.cluster.local' && q.source === 'mesh')).toBe(
      true,
    );
    const metrics = await mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
    expect(metrics).toMatch(/hypha_dns_requests_total\{type="A",source="mesh",rcode="NOERROR"\} [1-9]/);
    expect(metrics).toMatch(/hypha_dns_requests_total\{type="A",source="mesh",rcode="NXDOMAIN"\} [1-9]/);
    expect(metrics).toMatch(/hypha_dns_requests_total\{type="TXT",source="cache",rcode="NOERROR"\} [1-9]/);
    expect(metrics).toMatch(/hypha_dns_upstream_duration_seconds_count\{transport="tcp"\} [1-9]/);
  });

  it('keeps answering through an agent upgrade: the new agent binds beside the old one (SO_REUSEPORT), then the old one stops', async () => {
    const { next, oldExited } = await mesh.upgradeAgent('node-a', 60_000, agentArgs());
    expect(next.events.some((e) => e.msg === 'DNS proxy listening (UDP and TCP)')).toBe(true);
    expect((await dig(client, '+short', 'web.shop.svc.cluster.local')).trim()).toBe(webVip);
    expect(await oldExited).toBe(0);
    expect((await dig(client, '+short', 'web.shop.svc.cluster.local')).trim()).toBe(webVip);
    expect((await dig(client, '+tcp', '+short', 'ext.example.test')).trim()).toBe(EXT_ANSWER);
  }, 90_000);
});
