// DNS capture (issue 16 part 4): with a DNS port, mesh pods' port-53 traffic, UDP and TCP, IPv4 and
// IPv6, to any resolver address is redirected to it in the node namespace, and the pod sees the
// answer come from the address it asked. Non-mesh pods' DNS is untouched. A dnsmasq in the node namespace on
// the DNS port stands in for the agent's proxy (the agent's own is tested in test/e2e/dns.test.ts).
import type { ChildProcess } from 'node:child_process';
import { type ClusterPod, TestCluster } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createNodeCapture,
  expectedRuleCount,
  type NodeCapture,
  renderRuleset,
} from '../../src/capture/index.js';

const DNS_PORT = 15053;
const ANSWER = '192.0.2.53';
let cluster: TestCluster;
let nodeNetns: string;
let mesh: ClusterPod;
let plain: ClusterPod;
let remote: ClusterPod;
let capture: NodeCapture;
let resolver: ChildProcess;

beforeAll(async () => {
  cluster = await TestCluster.create({ nodes: ['node-a', 'node-b'], ipFamilies: 'dual' });
  nodeNetns = cluster.node('node-a').netns;
  mesh = await cluster.addPod({ node: 'node-a', name: 'mesh' });
  plain = await cluster.addPod({ node: 'node-a', name: 'plain' });
  remote = await cluster.addPod({ node: 'node-b', name: 'remote' });
  capture = createNodeCapture({ netns: nodeNetns, ports: { dns: DNS_PORT } });
  await capture.setMeshPods([...mesh.ips]);
  await capture.start();
  resolver = cluster.spawn(
    nodeNetns,
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--pid-file=',
      '--no-resolv',
      '--no-hosts',
      `--port=${DNS_PORT}`,
      `--address=/probe.test/${ANSWER}`,
      '--log-facility=-',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const on = (d: Buffer) => {
      log += d.toString();
      if (/started, version/.test(log)) resolve();
    };
    resolver.stderr?.on('data', on);
    resolver.stdout?.on('data', on);
    resolver.once('exit', (code) => reject(new Error(`dnsmasq exited (${code}): ${log}`)));
  });
  resolver.removeAllListeners('exit');
}, 60_000);

afterAll(async () => {
  resolver?.kill('SIGKILL');
  await capture?.stop().catch(() => {});
  await cluster?.destroy();
});

async function dig(from: ClusterPod, server: string, ...args: string[]): Promise<string> {
  const r = await cluster
    .exec(from.netns, 'dig', [`@${server}`, '+short', '+tries=1', '+time=2', ...args, 'probe.test', 'A'])
    .catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
  return r.stdout.trim();
}

describe('DNS capture', () => {
  it('renders the DNS rules first, only when a DNS port is given', () => {
    const base = { table: 't', mark: 0x111, meshPods4: [], meshPods6: [] };
    const without = renderRuleset({ ...base, ports: { outbound: 1, inboundPlaintext: 2, hbone: 3 } });
    expect(without).not.toContain('dport 53');
    const withDns = renderRuleset({
      ...base,
      ports: { outbound: 1, inboundPlaintext: 2, hbone: 3, dns: DNS_PORT },
    });
    expect(withDns.indexOf('th dport 53 redirect to :15053')).toBeGreaterThan(0);
    expect(withDns.indexOf('th dport 53')).toBeLessThan(withDns.indexOf('redirect to :1\n'));
  });

  it('installs healthy, with the DNS rules counted', async () => {
    const s = await capture.fetchState();
    expect(s.healthy).toBe(true);
    expect(s.ruleCount).toBe(
      expectedRuleCount({ outbound: 15001, inboundPlaintext: 15006, hbone: 15008, dns: 1 }),
    );
  });

  it("redirects a mesh pod's DNS over UDP and TCP to the DNS port, whatever resolver it asks", async () => {
    // Nothing listens on port 53 at the remote pod or at a made-up address: only capture answers.
    expect(await dig(mesh, remote.ip, '+notcp')).toBe(ANSWER);
    expect(await dig(mesh, '203.0.113.53', '+notcp')).toBe(ANSWER);
    expect(await dig(mesh, remote.ip, '+tcp')).toBe(ANSWER);
  });

  it("redirects a mesh pod's DNS over IPv6 too", async () => {
    expect(remote.ipv6).toBeDefined();
    expect(await dig(mesh, remote.ipv6!, '+notcp')).toBe(ANSWER);
    expect(await dig(mesh, remote.ipv6!, '+tcp')).toBe(ANSWER);
  });

  it("leaves a non-mesh pod's DNS alone", async () => {
    expect(await dig(plain, remote.ip, '+notcp')).not.toContain(ANSWER);
    expect(await dig(plain, remote.ipv6!, '+notcp')).not.toContain(ANSWER);
  });
});
