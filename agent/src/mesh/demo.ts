// The demo scenario: a two-node mesh with a client, two versions of an echo service on different
// nodes, and a pod outside the mesh. It sends traffic, then checks what a user would look for:
// both versions answered through the service VIP, the servers saw the client's own pod IP, the
// hops between nodes ran over mutual TLS with the expected identities, and traffic to the pod
// outside the mesh passed through as plain TCP.
import type { Logger } from '@hypha/shared';
import { demoConfigYaml } from '@hypha/shared/config';
import type { ClusterPod } from '@hypha/test';
import { LocalMesh } from './local-mesh.js';

export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoResult {
  mesh: LocalMesh;
  pods: Record<'client' | 'echoV1' | 'echoV2' | 'plain', ClusterPod>;
  vip: string;
  checks: DemoCheck[];
  report: string[];
}

export const DEMO_NODES = ['node-a', 'node-b'] as const;

/** Builds the demo mesh and starts everything; the caller stops it (mesh.stop()). */
export async function startDemo(
  logger?: Logger,
  progress: (line: string) => void = () => {},
): Promise<DemoResult> {
  progress('building a two-node cluster from network namespaces ...');
  const mesh = await LocalMesh.create({ nodes: DEMO_NODES, ...(logger ? { logger } : {}) });
  try {
    const [a, b] = DEMO_NODES;
    const pods = {
      client: await mesh.addPod(a, 'client', 'demo'),
      echoV1: await mesh.addPod(a, 'echo-v1', 'demo'),
      echoV2: await mesh.addPod(b, 'echo-v2', 'demo'),
      plain: await mesh.addPod(b, 'plain', 'outside'),
    };
    const vip = mesh.cluster.allocateServiceIp();
    await mesh.writeConfig(
      demoConfigYaml({
        nodes: { a, b },
        ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: pods.plain.ip },
        echoVip: vip,
        echoPort: 8080,
        servicePort: 80,
      }),
    );
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
      "starting the CA and one agent per node; waiting until every agent holds its pods' certificates ...",
    );
    await mesh.startAgents();
    return { mesh, pods, vip, checks: [], report: [] };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

/** Sends the demo traffic and fills in checks and the readable report. */
export async function runDemoTraffic(
  demo: DemoResult,
  connections = 10,
  requestsPerConnection = 2,
): Promise<void> {
  const requests = connections * requestsPerConnection;
  const { mesh, pods, vip } = demo;
  const checks: DemoCheck[] = [];
  const report: string[] = [];
  const before = mesh.accessLogs().length;

  const viaService = (await mesh.cluster.runApp(pods.client, 'load-client', [
    '--target',
    `${vip}:80`,
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
    `client → echo service (${vip}:80), ${connections} connections x ${requestsPerConnection} HTTP requests: ` +
      `${viaService.ok} ok, ${viaService.failed} failed`,
  );
  report.push(`  answered by echo-v1 (node-a, same node): ${v1}   echo-v2 (node-b, other node): ${v2}`);
  checks.push({
    name: 'service VIP load-balances over both versions',
    ok: viaService.failed === 0 && v1 > 0 && v2 > 0 && v1 + v2 === requests,
    detail: `v1=${v1} v2=${v2} failed=${viaService.failed}${viaService.errors ? ` errors=${JSON.stringify(viaService.errors)}` : ''}`,
  });
  const peerIps = Object.keys(viaService.peers);
  report.push(
    `  source address the echo pods saw: ${peerIps.join(', ') || '(none)'} (client pod is ${pods.client.ip})`,
  );
  checks.push({
    name: "servers see the client's own pod IP (source preserved)",
    ok: peerIps.length === 1 && peerIps[0] === pods.client.ip,
    detail: `peers=${JSON.stringify(viaService.peers)}`,
  });

  const toPlain = (await mesh.cluster.runApp(pods.client, 'load-client', [
    '--target',
    `${pods.plain.ip}:8080`,
    '--requests',
    '3',
  ])) as { ok: number; failed: number; byPod: Record<string, number> };
  report.push(
    `client → plain pod ${pods.plain.ip}:8080 (namespace outside, not in the mesh): ${toPlain.ok} ok, ${toPlain.failed} failed`,
  );

  // Access logs arrive asynchronously: wait until the agents logged what we sent.
  const want = (e: Record<string, unknown>) => e.type === 'access';
  const deadline = Date.now() + 5000;
  const fresh = () => mesh.accessLogs().slice(before).filter(want);
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
    name: 'cross-node traffic went over mTLS with the expected identities',
    ok:
      crossNode.length > 0 &&
      crossNode.every((e) => e.mtls === true && e.src_identity === clientId && e.dst_identity === echoId),
    detail: `${crossNode.length} connection(s) to echo-v2`,
  });
  checks.push({
    name: 'same-node traffic took the same decisions without leaving node-a',
    ok: sameNode.length > 0 && sameNode.every((e) => e.src_identity === clientId && e.response_flags === '-'),
    detail: `${sameNode.length} connection(s) to echo-v1`,
  });
  checks.push({
    name: 'traffic to a pod outside the mesh passed through as plain TCP',
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
