// The demo scenario: a two-node mesh with a client, two versions of an echo service on different
// nodes, and a pod outside the mesh. It sends traffic, then checks what a user would look for:
// both versions answered through the service VIP, the servers saw the client's own pod IP, the
// hops between nodes ran over mutual TLS with the expected identities, and traffic to the pod
// outside the mesh passed through as plain TCP.
import type { Logger } from '@hypha/shared';
import { type DemoConfigParams, demoConfigObjects, demoConfigYaml } from '@hypha/shared/config';
import type { ClusterPod, IpFamilies } from '../cluster/cluster.js';
import { hostPort, LocalMesh, type WaypointProcess } from './local-mesh.js';

export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoResult {
  mesh: LocalMesh;
  pods: Record<'client' | 'echoV1' | 'echoV2' | 'plain', ClusterPod>;
  /** The echo Service's VIP: IPv4, or IPv6 in an IPv6-only demo. */
  vip: string;
  /** The echo Service's IPv6 VIP in a dual-stack demo. */
  vip6: string | undefined;
  ipFamilies: IpFamilies;
  /** Waypoint demo/waypoint on node-b (startDemo with `waypoint: true`); nothing is bound to it yet. */
  waypoint: WaypointProcess | undefined;
  checks: DemoCheck[];
  report: string[];
}

export const DEMO_NODES = ['node-a', 'node-b'] as const;

/** The demo's waypoint: Gateway demo/waypoint, its pod on node-b. */
export const DEMO_WAYPOINT = { node: 'node-b', namespace: 'demo', name: 'waypoint' } as const;

const CONFIG_HEADER =
  '# Hypha demo configuration (generated). Edit and save: the agents pick changes up live.\n';

/** Builds the demo mesh and starts everything; the caller stops it (mesh.stop()). */
export async function startDemo(
  logger?: Logger,
  progress: (line: string) => void = () => {},
  options: {
    ipFamilies?: IpFamilies;
    /** Also start waypoint DEMO_WAYPOINT (alongside the agents); demo-l7 binds the echo service to it. */
    waypoint?: boolean;
    /**
     * An outside world beyond the cluster (IPv4 demos), the agents' DNS upstream: demo-edge runs
     * the ingress gateway and egress to an external API against it.
     */
    outsideWorld?: boolean;
  } = {},
): Promise<DemoResult> {
  const ipFamilies = options.ipFamilies ?? 'ipv4';
  const stack = { ipv4: 'IPv4', dual: 'dual-stack (IPv4 + IPv6)', ipv6: 'IPv6-only' }[ipFamilies];
  progress(`building a two-node ${stack} cluster from network namespaces ...`);
  const mesh = await LocalMesh.create({
    nodes: DEMO_NODES,
    ipFamilies,
    // An upgraded agent carries its live connections to their end (the upgrade check's streams).
    drainTimeout: '30s',
    outsideWorld: options.outsideWorld === true && ipFamilies === 'ipv4',
    ...(logger ? { logger } : {}),
  });
  try {
    const [a, b] = DEMO_NODES;
    const pods = {
      client: await mesh.addPod(a, 'client', 'demo'),
      echoV1: await mesh.addPod(a, 'echo-v1', 'demo'),
      echoV2: await mesh.addPod(b, 'echo-v2', 'demo'),
      plain: await mesh.addPod(b, 'plain', 'outside'),
    };
    const vip = mesh.cluster.allocateServiceIp();
    const vip6 = ipFamilies === 'dual' ? mesh.cluster.allocateServiceIp6() : undefined;
    const params = demoConfigParams({ pods, vip, vip6, ipFamilies });
    // startWaypoint adds its Gateway and pod to a config written as objects.
    if (options.waypoint) await mesh.writeConfig(demoConfigObjects(params), { header: CONFIG_HEADER });
    else await mesh.writeConfig(demoConfigYaml(params));
    progress(
      'starting sample apps: http-echo v1 (node-a), v2 (node-b), plain (node-b, outside the mesh) ...',
    );
    await Promise.all([
      mesh.cluster.startApp(pods.echoV1, 'http-echo', [
        '--port',
        '8080',
        '--pod',
        'echo-v1',
        '--namespace',
        'demo',
      ]),
      mesh.cluster.startApp(pods.echoV2, 'http-echo', [
        '--port',
        '8080',
        '--pod',
        'echo-v2',
        '--namespace',
        'demo',
      ]),
      mesh.cluster.startApp(pods.plain, 'http-echo', [
        '--port',
        '8080',
        '--pod',
        'plain',
        '--namespace',
        'outside',
      ]),
    ]);
    progress(
      `starting the CA and one agent per node${options.waypoint ? `, and waypoint ${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name} (${DEMO_WAYPOINT.node})` : ''}; waiting until every agent holds its pods' certificates ...`,
    );
    // The waypoint needs only the CA and the config, so it starts while the agents do.
    const [, waypoint] = await Promise.all([
      mesh.startAgents(),
      options.waypoint ? mesh.startWaypoint({ ...DEMO_WAYPOINT }) : undefined,
    ]);
    return { mesh, pods, vip, vip6, ipFamilies, waypoint, checks: [], report: [] };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

/**
 * The parameters of the demo's config (`demoConfigObjects`/`demoConfigYaml`): tests that rewrite
 * the config (policies, waypoints) start from the same objects. Dual-stack pods get `podIPs` and
 * the Service both ClusterIPs.
 */
export function demoConfigParams(
  demo: Pick<DemoResult, 'pods' | 'vip' | 'vip6' | 'ipFamilies'>,
): DemoConfigParams {
  const { pods } = demo;
  const [a, b] = DEMO_NODES;
  const dual = demo.ipFamilies === 'dual';
  return {
    nodes: { a, b },
    ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: pods.plain.ip },
    ...(dual && demo.vip6 !== undefined
      ? {
          ips6: {
            client: pods.client.ipv6!,
            echoV1: pods.echoV1.ipv6!,
            echoV2: pods.echoV2.ipv6!,
            plain: pods.plain.ipv6!,
          },
          echoVip6: demo.vip6,
        }
      : {}),
    echoVip: demo.vip,
    echoPort: 8080,
    servicePort: 80,
  };
}

/** Sends the demo traffic and fills in checks and the readable report. */
export async function runDemoTraffic(
  demo: DemoResult,
  connections = 10,
  requestsPerConnection = 2,
): Promise<void> {
  const { pods } = demo;
  if (demo.ipFamilies !== 'ipv6') {
    await runDemoRound(demo, connections, requestsPerConnection, {
      label: '',
      vip: demo.vip,
      ip: (p) => p.ip,
    });
  }
  if (demo.ipFamilies !== 'ipv4') {
    if (demo.ipFamilies === 'dual') demo.report.push('');
    await runDemoRound(demo, connections, requestsPerConnection, {
      label: ' (IPv6)',
      vip: demo.vip6 ?? demo.vip,
      ip: (p) => p.ipv6 ?? pods.client.ip,
    });
  }
}

/** One round of the scenario over one address family: service VIP, source IP, mTLS, passthrough. */
async function runDemoRound(
  demo: DemoResult,
  connections: number,
  requestsPerConnection: number,
  family: { label: string; vip: string; ip: (pod: ClusterPod) => string },
): Promise<void> {
  const requests = connections * requestsPerConnection;
  const { mesh, pods } = demo;
  const vip = family.vip;
  const ipOf = family.ip;
  const checks: DemoCheck[] = [];
  const report: string[] = [];
  // Per agent: each agent's log grows on its own, so one index into all of them would skip lines.
  const before = new Map([...mesh.agents.values()].map((a) => [a, a.events.length]));

  const viaService = (await mesh.cluster.runApp(pods.client, 'load-client', [
    '--target',
    hostPort(vip, 80),
    '--connections',
    String(connections),
    '--requests',
    String(requestsPerConnection),
  ])) as {
    ok: number;
    failed: number;
    byPod: Record<string, number>;
    peers: Record<string, number>;
    errors?: unknown;
  };
  const v1 = viaService.byPod['echo-v1'] ?? 0;
  const v2 = viaService.byPod['echo-v2'] ?? 0;
  report.push(
    `client → echo service (${hostPort(vip, 80)}), ${connections} connections x ${requestsPerConnection} HTTP requests: ` +
      `${viaService.ok} ok, ${viaService.failed} failed`,
  );
  report.push(`  answered by echo-v1 (node-a, same node): ${v1}   echo-v2 (node-b, other node): ${v2}`);
  checks.push({
    name: `service VIP load-balances over both versions${family.label}`,
    ok: viaService.failed === 0 && v1 > 0 && v2 > 0 && v1 + v2 === requests,
    detail: `v1=${v1} v2=${v2} failed=${viaService.failed}${viaService.errors ? ` errors=${JSON.stringify(viaService.errors)}` : ''}`,
  });
  const peerIps = Object.keys(viaService.peers);
  report.push(
    `  source address the echo pods saw: ${peerIps.join(', ') || '(none)'} (client pod is ${ipOf(pods.client)})`,
  );
  checks.push({
    name: `servers see the client's own pod IP (source preserved)${family.label}`,
    ok: peerIps.length === 1 && peerIps[0] === ipOf(pods.client),
    detail: `peers=${JSON.stringify(viaService.peers)}`,
  });

  const toPlain = (await mesh.cluster.runApp(pods.client, 'load-client', [
    '--target',
    hostPort(ipOf(pods.plain), 8080),
    '--requests',
    '3',
  ])) as { ok: number; failed: number; byPod: Record<string, number> };
  report.push(
    `client → plain pod ${hostPort(ipOf(pods.plain), 8080)} (namespace outside, not in the mesh): ${toPlain.ok} ok, ${toPlain.failed} failed`,
  );

  // Access logs arrive asynchronously: wait until the agents logged what we sent.
  const want = (e: Record<string, unknown>) => e.type === 'access';
  const deadline = Date.now() + 5000;
  // This round's lines: after the round started, and with addresses of this round's family (a
  // previous round's late lines from the other node do not count).
  const v6 = vip.includes(':');
  const fresh = () =>
    [...mesh.agents.values()].flatMap((a) =>
      a.events.slice(before.get(a) ?? 0).filter((e) => want(e) && String(e.src).startsWith('[') === v6),
    );
  // The agents balance connections (not requests): one access line per connection, plus the plain one.
  const expected = connections + 1;
  while (fresh().length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const logs = fresh();
  const crossNode = logs.filter((e) => e.direction === 'inbound' && e.dst_workload === 'echo-v2');
  const sameNode = logs.filter((e) => e.direction === 'inbound' && e.dst_workload === 'echo-v1');
  const passthrough = logs.filter((e) => e.direction === 'passthrough');
  const clientId = `spiffe://${mesh.trustDomain}/ns/demo/sa/client`;
  const echoId = `spiffe://${mesh.trustDomain}/ns/demo/sa/echo`;
  report.push('');
  report.push('what the agents logged (one line per connection):');
  for (const e of logs) {
    report.push(
      `  [${e.node ?? '?'}] ${String(e.direction).padEnd(11)} ${e.src} → ${e.dst}  ${e.mtls ? 'mTLS' : 'plain TCP'}  ` +
        `client=${e.src_identity ?? '-'}  server=${e.dst_identity ?? '-'}  ${e.bytes_sent}B/${e.bytes_received}B  ${e.response_flags}`,
    );
  }
  checks.push({
    name: `cross-node traffic went over mTLS with the expected identities${family.label}`,
    ok:
      crossNode.length > 0 &&
      crossNode.every(
        (e) =>
          e.mtls === true &&
          e.src_identity === clientId &&
          e.dst_identity === echoId &&
          // Logged with this round's addresses: the agents carried it over this family end to end.
          String(e.src).startsWith(hostPort(ipOf(pods.client), 0).slice(0, -1)) &&
          String(e.dst).startsWith(hostPort(ipOf(pods.echoV2), 0).slice(0, -1)),
      ),
    detail: `${crossNode.length} connection(s) to echo-v2`,
  });
  checks.push({
    name: `same-node traffic took the same decisions without leaving node-a${family.label}`,
    ok: sameNode.length > 0 && sameNode.every((e) => e.src_identity === clientId && e.response_flags === '-'),
    detail: `${sameNode.length} connection(s) to echo-v1`,
  });
  checks.push({
    name: `traffic to a pod outside the mesh passed through as plain TCP${family.label}`,
    ok:
      toPlain.ok === 3 &&
      toPlain.failed === 0 &&
      passthrough.length > 0 &&
      passthrough.every((e) => e.mtls === false),
    detail: `ok=${toPlain.ok} passthrough connections=${passthrough.length}`,
  });
  demo.checks.push(...checks);
  demo.report.push(...report);
}
