// The mesh over IPv6 (issue 12, part 2), on a dual-stack two-node namespace cluster with real
// agents, a real CA, nftables capture and HBONE between nodes: the demo's checks over IPv6 (service
// VIP load balancing across nodes over mTLS, the client's IPv6 address preserved, passthrough),
// no plaintext on the fabric, a DENY policy by IPv6 ipBlock, and the waypoint path. Then the
// IPv6-only variant: the same checks with no IPv4 address on any pod or node.

import { fileURLToPath } from 'node:url';
import { demoConfigObjects } from '@hypha/shared/config';
import { type DemoResult, demoConfigParams, eventually, runDemoTraffic, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ECHO_PORT = 9100;
const HYPHA_BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));

/** Writes the config and waits until every agent applied this version. */
async function apply(demo: DemoResult, objects: object[]): Promise<void> {
  await demo.mesh.applyConfig(objects);
}

/** Sends a marker from a pod to ip:port over TCP and waits for the echo's end. */
function sendMarker(demo: DemoResult, ip: string, port: number, marker: string) {
  return demo.mesh.cluster.exec(demo.pods.client.netns, process.execPath, [
    '-e',
    `const s=require('net').connect(${port},${JSON.stringify(ip)},()=>{s.end(${JSON.stringify(marker.repeat(20))})});s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',e=>{console.error(e.message);process.exit(1)})`,
  ]);
}

describe('the mesh on a dual-stack cluster', () => {
  let demo: DemoResult;

  beforeAll(async () => {
    demo = await startDemo(undefined, () => {}, { ipFamilies: 'dual' });
    await Promise.all([
      demo.mesh.cluster.startApp(demo.pods.echoV1, 'tcp-echo', ['--port', String(ECHO_PORT)]),
      demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]),
      demo.mesh.cluster.startApp(demo.pods.plain, 'tcp-echo', ['--port', String(ECHO_PORT)]),
    ]);
  }, 120_000);

  afterAll(async () => {
    await demo?.mesh.stop();
  });

  it('load-balances the IPv6 VIP over both nodes over mTLS, preserving the client IPv6 address, and IPv4 keeps working', async () => {
    expect(demo.vip6).toMatch(/^fd68:7970:/);
    expect(demo.pods.client.ipv6).toMatch(/^fd68:7970:/);
    await runDemoTraffic(demo);
    const failed = demo.checks.filter((c) => !c.ok);
    expect(failed, demo.report.join('\n')).toEqual([]);
    const names = demo.checks.map((c) => c.name);
    // Every check ran once per family.
    expect(names.filter((n) => n.endsWith('(IPv6)'))).toHaveLength(5);
    expect(names.filter((n) => !n.endsWith('(IPv6)'))).toHaveLength(5);
    // The agents logged the IPv6 addresses (bracketed), with the client's identity on both ends.
    const v6Inbound = demo.mesh
      .accessLogs()
      .filter((e) => e.direction === 'inbound' && String(e.src).startsWith(`[${demo.pods.client.ipv6}]:`));
    expect(v6Inbound.map((e) => e.dst_workload).sort()).toContain('echo-v2');
    expect(v6Inbound.every((e) => e.src_identity === 'spiffe://cluster.local/ns/demo/sa/client')).toBe(true);
  }, 60_000);

  it("serves metrics and readiness on the node's IPv6 address, and /connections and hypha status show IPv6 peers", async () => {
    const { mesh } = demo;
    const node = mesh.cluster.node('node-b');
    const v6 = await mesh.fetchInNode('node-b', `http://[${node.ipv6}]:15020/metrics`);
    expect(v6).toContain('istio_tcp_connections_opened_total');
    expect(await mesh.fetchInNode('node-b', `http://${node.ip}:15020/metrics`)).toContain(
      'istio_tcp_connections_opened_total',
    );
    expect(await mesh.fetchInNode('node-b', `http://[${node.ipv6}]:15021/healthz/ready`)).toBe('ready\n');
    // /connections names IPv6 peers in brackets, like the access log.
    const held = mesh.cluster.holdTcpConnection(demo.pods.client.netns, demo.pods.echoV2.ipv6!, ECHO_PORT);
    try {
      await held.exchange(10);
      const live = JSON.parse(await mesh.fetchInNode('node-b', 'http://127.0.0.1:15000/connections')) as {
        source: { address: string };
        destination: { address: string };
      }[];
      expect(live.map((c) => c.destination.address)).toContain(`[${demo.pods.echoV2.ipv6}]:${ECHO_PORT}`);
      expect(live.some((c) => c.source.address.startsWith(`[${demo.pods.client.ipv6}]:`))).toBe(true);
      // `hypha status` on the node shows the pods' IPv6 addresses and the live IPv6 connection.
      const status = await mesh.cluster.exec(node.netns, process.execPath, [HYPHA_BIN, 'status']);
      expect(status.stdout).toContain(demo.pods.echoV2.ipv6);
      expect(status.stdout).toContain(`[${demo.pods.echoV2.ipv6}]:${ECHO_PORT}`);
    } finally {
      held.kill();
    }
  });

  it('never puts plaintext on the wire between nodes over IPv6, while the same capture sees non-mesh plaintext', async () => {
    const { mesh, pods } = demo;
    const marker = `hypha-v6-marker-${Math.random().toString(36).slice(2)}`;
    const capture = await mesh.cluster.startFabricCapture('ip6 and tcp');
    await sendMarker(demo, pods.echoV2.ipv6!, ECHO_PORT, marker); // mesh → mesh, inside HBONE over IPv6
    await new Promise((r) => setTimeout(r, 300));
    let pcap = await capture.stop();
    expect(pcap.length).toBeGreaterThan(1000); // the capture saw the IPv6 tunnel
    expect(pcap.includes(Buffer.from(marker))).toBe(false);

    const control = await mesh.cluster.startFabricCapture('ip6 and tcp');
    await sendMarker(demo, pods.plain.ipv6!, ECHO_PORT, marker);
    await new Promise((r) => setTimeout(r, 300));
    pcap = await control.stop();
    expect(pcap.includes(Buffer.from(marker))).toBe(true);
  }, 60_000);

  it('denies by IPv6 ipBlock: the client is refused from its IPv6 address and still allowed over IPv4', async () => {
    const { mesh, pods } = demo;
    const base = demoConfigObjects(demoConfigParams(demo));
    // The client's whole /64 (its node's IPv6 pod block), written non-canonically on purpose.
    const block = `${pods.client.ipv6!.split('::')[0]}:0::/64`;
    await apply(demo, [
      ...base,
      {
        apiVersion: 'security.hypha.dev/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'deny-v6-block', namespace: 'demo' },
        spec: {
          selector: { matchLabels: { app: 'echo' } },
          action: 'DENY',
          rules: [{ from: [{ source: { ipBlocks: [block] } }] }],
        },
      },
    ]);
    const since = mesh.agents.get('node-b')!.events.length;
    expect(await mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV2.ipv6!, ECHO_PORT)).toBe(false);
    expect(await mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV2.ip, ECHO_PORT)).toBe(true);
    const denied = await mesh.agents
      .get('node-b')!
      .waitFor(
        (e) =>
          e.type === 'access' &&
          e.response_flags === 'DENY' &&
          String(e.src).startsWith(`[${pods.client.ipv6}]:`) &&
          mesh.agents.get('node-b')!.events.indexOf(e) >= since,
      );
    expect(denied.policy).toBe('demo/deny-v6-block');
    expect(denied.dst_workload).toBe('echo-v2');

    await apply(demo, base);
    expect(await mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV2.ipv6!, ECHO_PORT)).toBe(true);
  }, 60_000);

  it('sends IPv6 VIP traffic of a waypoint-bound service through the waypoint at its IPv6 address', async () => {
    const { mesh, pods } = demo;
    // Service demo/echo bound to waypoint demo/waypoint (label on the Service); startWaypoint adds
    // the Gateway and the waypoint pod (dual-stack, both podIPs) to this config.
    const base = demoConfigObjects(demoConfigParams(demo)).map((o) =>
      o.kind === 'Service'
        ? { ...o, metadata: { ...(o.metadata as object), labels: { 'hypha.dev/use-waypoint': 'waypoint' } } }
        : o,
    );
    await mesh.writeConfig(base);
    const waypoint = await mesh.startWaypoint({ node: 'node-b', namespace: 'demo', name: 'waypoint' });
    expect(waypoint.pod.ipv6).toBeDefined();
    const nodeA = mesh.agents.get('node-a')!;
    const since = nodeA.events.length;
    // Until node-a applied the binding (the waypoint's Gateway and pod arrive with startWaypoint).
    const viaWaypoint = () =>
      nodeA.events
        .slice(since)
        .filter((e) => e.type === 'access' && String(e.dst).startsWith(`[${waypoint.pod.ipv6}]:`));
    const result = await eventually(
      () =>
        mesh.cluster.runApp(pods.client, 'load-client', ['--target', `[${demo.vip6}]:80`, '--requests', '4']),
      (r) => r.failed === 0 && viaWaypoint().length > 0,
    );
    expect(result, JSON.stringify(result)).toMatchObject({ ok: 4, failed: 0 });
    const byPod = result.byPod as Record<string, number>;
    expect((byPod['echo-v1'] ?? 0) + (byPod['echo-v2'] ?? 0)).toBe(4);
    // The client's agent tunneled to the waypoint pod's IPv6 address over mTLS, naming the service.
    const toWaypoint = viaWaypoint();
    expect(toWaypoint.length).toBeGreaterThan(0);
    expect(toWaypoint[toWaypoint.length - 1]).toMatchObject({
      mtls: true,
      dst_service: 'demo/echo',
      dst_identity: 'spiffe://cluster.local/ns/demo/sa/waypoint',
      response_flags: '-',
    });
    // The waypoint went on to the echo pods over IPv6 too: their agents hold its (pooled, still
    // open) connections on the pods' IPv6 addresses, admitted with the waypoint's identity.
    const fromWaypoint: { destination: { address: string } }[] = [];
    for (const node of ['node-a', 'node-b']) {
      const live = JSON.parse(await mesh.fetchInNode(node, 'http://127.0.0.1:15000/connections')) as {
        direction: string;
        source: { identity?: string };
        destination: { address: string };
      }[];
      fromWaypoint.push(
        ...live.filter(
          (c) =>
            c.direction === 'inbound' && c.source.identity === 'spiffe://cluster.local/ns/demo/sa/waypoint',
        ),
      );
    }
    const echoV6 = [pods.echoV1.ipv6, pods.echoV2.ipv6].map((ip) => `[${ip}]:8080`);
    expect(fromWaypoint.length).toBeGreaterThan(0);
    expect(fromWaypoint.map((c) => c.destination.address).every((a) => echoV6.includes(a))).toBe(true);
  }, 90_000);
});

describe('the mesh on an IPv6-only cluster', () => {
  let demo: DemoResult;

  beforeAll(async () => {
    demo = await startDemo(undefined, () => {}, { ipFamilies: 'ipv6' });
  }, 120_000);

  afterAll(async () => {
    await demo?.mesh.stop();
  });

  it('passes every demo check with no IPv4 address on any pod or node', async () => {
    expect(demo.pods.client.ip).toBe(demo.pods.client.ipv6);
    expect(demo.vip).toContain(':');
    expect(demo.mesh.cluster.node('node-a').ips.every((ip) => ip.includes(':'))).toBe(true);
    await runDemoTraffic(demo);
    const failed = demo.checks.filter((c) => !c.ok);
    expect(failed, demo.report.join('\n')).toEqual([]);
    expect(demo.checks.map((c) => c.name).every((n) => n.endsWith('(IPv6)'))).toBe(true);
    expect(demo.checks).toHaveLength(5);
  }, 60_000);
});
