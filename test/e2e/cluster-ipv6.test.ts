// The namespace cluster with IPv6: dual-stack nodes and pods (unique-local addresses, one /48 per
// run) and the IPv6-only variant. Same invariants as IPv4: routed through the nodes and the fabric,
// source addresses preserved, nothing in the machine's own namespace, no route to the outside.
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterError, listNetns, runCommand, TestCluster } from '../src/index.js';

const clusters: TestCluster[] = [];
afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

async function create(nodes: string[], ipFamilies: 'dual' | 'ipv6'): Promise<TestCluster> {
  const cluster = await TestCluster.create({ nodes, ipFamilies });
  clusters.push(cluster);
  return cluster;
}

/** Addresses of one interface inside a namespace, `ip -j addr` parsed. */
async function addressesOf(netns: string, dev: string): Promise<{ family: string; local: string }[]> {
  const { stdout } = await runCommand('ip', ['-n', netns, '-j', 'addr', 'show', 'dev', dev]);
  const [link] = JSON.parse(stdout) as { addr_info: { family: string; local: string; scope: string }[] }[];
  return (link?.addr_info ?? [])
    .filter((a) => a.scope !== 'link')
    .map(({ family, local }) => ({ family, local }));
}

describe('TestCluster with IPv6', () => {
  it('builds dual-stack pods reachable across nodes over both families, the source address preserved', async () => {
    const cluster = await create(['node-a', 'node-b'], 'dual');
    expect(cluster.addressBlock6).toMatch(/^fd68:7970:[0-9a-f]{1,3}::\/48$/);
    const client = await cluster.addPod({ node: 'node-a', name: 'client', namespace: 'demo' });
    const server = await cluster.addPod({ node: 'node-b', name: 'echo', namespace: 'demo' });
    // podIP stays IPv4 (as Kubernetes' first family); podIPs carries both.
    expect(client.ip).toMatch(/^10\./);
    expect(client.ipv6).toBeDefined();
    expect(client.ips).toEqual([client.ip, client.ipv6]);
    expect(client.ipv6!.startsWith(cluster.addressBlock6!.split('::')[0]!)).toBe(true);
    expect(await addressesOf(client.netns, 'eth0')).toEqual([
      { family: 'inet', local: client.ip },
      { family: 'inet6', local: client.ipv6 },
    ]);

    const echo = await cluster.startApp(server, 'tcp-echo', ['--port', '7000']);
    const result = await cluster.runApp(client, 'load-client', [
      '--mode',
      'tcp',
      '--target',
      `[${server.ipv6}]:7000`,
      '--connections',
      '2',
      '--requests',
      '3',
      '--bytes',
      '1500',
    ]);
    expect(result, JSON.stringify(result)).toMatchObject({ ok: 6, failed: 0 });
    const conn = await echo.waitFor((e) => e.event === 'connection');
    expect(String(conn.peer).replace(/:\d+$/, '')).toBe(client.ipv6);
    // IPv4 still works in the same pods.
    expect(await cluster.tcpRoundTrip(client.netns, server.ip, 7000)).toBe(true);

    // The IPv6 path crosses node A, the fabric and node B, like the IPv4 one.
    const hop = async (ttl: number): Promise<string> =>
      (await cluster.exec(client.netns, 'sh', ['-c', `ping -6 -n -c1 -W2 -t${ttl} ${server.ipv6} || true`]))
        .stdout;
    expect(await hop(1)).toContain(`From ${cluster.node('node-a').podGateway6}`);
    expect(await hop(2)).toContain(`From ${cluster.node('node-b').ipv6}`);
    expect(await hop(3)).toContain('1 received');

    // Service VIPs come from the run's own IPv6 service block.
    const vip = cluster.allocateServiceIp6();
    expect(vip.startsWith(cluster.serviceCidr6!.split('::')[0]!)).toBe(true);
    expect(cluster.allocateServiceIp6()).not.toBe(vip);
  });

  it('gives parallel runs distinct IPv6 blocks, with no route between them or to the outside', async () => {
    const [one, two] = await Promise.all([create(['x'], 'dual'), create(['x'], 'dual')]);
    expect(one.addressBlock6).not.toBe(two.addressBlock6);
    const p1 = await one.addPod({ node: 'x', name: 'p' });
    const p2 = await two.addPod({ node: 'x', name: 'p' });
    await expect(one.exec(p1.netns, 'ping', ['-6', '-c1', '-W1', p2.ipv6!])).rejects.toThrow(ClusterError);
    const { stdout } = await one.exec(one.node('x').netns, 'ip', ['-6', 'route', 'show']);
    expect(stdout).not.toContain('default');
    // Nothing of the run lives in the machine's own namespace.
    const { stdout: root } = await runCommand('ip', ['-6', 'addr', 'show']);
    expect(root).not.toContain(one.addressBlock6!.split('::')[0]!);
  });

  it('builds an IPv6-only cluster: no IPv4 address but loopback, pods reach each other over IPv6', async () => {
    const cluster = await create(['node-a', 'node-b'], 'ipv6');
    const a = await cluster.addPod({ node: 'node-a', name: 'a' });
    const b = await cluster.addPod({ node: 'node-b', name: 'b' });
    expect(a.ip).toBe(a.ipv6);
    expect(a.ips).toEqual([a.ipv6]);
    expect(cluster.node('node-a').ip).toBe(cluster.node('node-a').ipv6);
    expect(cluster.allocateServiceIp()).toContain(':');
    expect(await addressesOf(a.netns, 'eth0')).toEqual([{ family: 'inet6', local: a.ip }]);
    expect(await addressesOf(cluster.node('node-a').netns, 'fab0')).toEqual([
      { family: 'inet6', local: cluster.node('node-a').ip },
    ]);
    await cluster.startApp(b, 'tcp-echo', ['--port', '7000']);
    expect(await cluster.tcpRoundTrip(a.netns, b.ip, 7000)).toBe(true);

    const prefix = cluster.prefix;
    await cluster.destroy();
    expect((await listNetns()).filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
  });
});
