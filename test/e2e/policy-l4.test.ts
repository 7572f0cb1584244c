import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { demoConfigObjects } from '@hypha/shared/config';
import { type ClusterPod, type DemoResult, eventually, type LogEvent, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const ECHO_PORT = 9100;
/** A second port on echo-v1, for per-port mTLS exceptions (a health checker outside the mesh). */
const HEALTH_PORT = 9101;

let demo: DemoResult;
let client2: ClusterPod;

beforeAll(async () => {
  demo = await startDemo();
  client2 = await demo.mesh.addPod('node-a', 'client2', 'demo');
  await Promise.all([
    demo.mesh.cluster.startApp(demo.pods.echoV1, 'tcp-echo', ['--port', String(ECHO_PORT)]),
    demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]),
    demo.mesh.cluster.startApp(demo.pods.echoV1, 'tcp-echo', ['--port', String(HEALTH_PORT)]),
  ]);
  await apply([]);
  // client2 joined after the agents started: wait for its certificate before sending traffic.
  await eventually(
    async () => JSON.parse(await demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/certs')) as Cert[],
    (certs) => certs.some((c) => c.identity.endsWith('/ns/demo/sa/client2') && c.state === 'ready'),
  );
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

interface Cert {
  identity: string;
  state: string;
}

const principal = (sa: string) => `cluster.local/ns/demo/sa/${sa}`;

/** The demo objects plus client2 (service account client2), extra objects, and demo namespace labels. */
function objects(extra: object[], demoLabels: Record<string, string> = {}): object[] {
  const { pods, vip } = demo;
  const base = demoConfigObjects({
    nodes: { a: 'node-a', b: 'node-b' },
    ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: pods.plain.ip },
    echoVip: vip,
    echoPort: 8080,
    servicePort: 80,
  });
  const out = base.map((o) => {
    const meta = o.metadata as { name: string; labels?: Record<string, string> };
    if (o.kind === 'Namespace' && meta.name === 'demo') {
      return { ...o, metadata: { ...meta, labels: { ...meta.labels, ...demoLabels } } };
    }
    return o;
  });
  const clientPod = base.find((o) => o.kind === 'Pod' && (o.metadata as { name: string }).name === 'client')!;
  const c2 = structuredClone(clientPod) as {
    metadata: { name: string; labels: Record<string, string> };
    spec: { serviceAccountName: string };
    status: { podIP: string };
  };
  c2.metadata.name = 'client2';
  c2.metadata.labels = { app: 'client2' };
  c2.spec.serviceAccountName = 'client2';
  c2.status.podIP = client2.ip;
  return [...out, c2, ...extra];
}

function policy(name: string, action: 'ALLOW' | 'DENY' | 'AUDIT', principals: string[]): object {
  return {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: 'demo' },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      action,
      rules: [{ from: [{ source: { principals } }] }],
    },
  };
}

/** Writes the config and waits until every agent applied this version. */
async function apply(extra: object[], demoLabels: Record<string, string> = {}): Promise<void> {
  await demo.mesh.applyConfig(objects(extra, demoLabels));
}

/** One TCP round trip between pods: true when the echo came back. */
const roundTrip = (from: ClusterPod, to: ClusterPod): Promise<boolean> =>
  demo.mesh.cluster.tcpRoundTrip(from.netns, to.ip, ECHO_PORT);

interface Explained {
  code: number;
  json: {
    decision: string;
    targets: {
      decision: string;
      kind: string | null;
      policy: string | null;
      reason: string;
      mtls: { mode: string; rule: string } | null;
    }[];
  };
}

function explain(from: string, to: string): Promise<Explained> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, 'policy', 'explain', '--config', demo.mesh.configPath, '--from', from, '--to', to, '--json'],
      { timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: number }).code ?? 1) : 0;
        try {
          resolve({ code, json: JSON.parse(stdout) as Explained['json'] });
        } catch {
          reject(new Error(`policy explain exited ${code} without JSON: ${stderr}`));
        }
      },
    );
  });
}

/** Access-log lines of one agent whose fields match `fields`, after index `since`. */
function accessLines(node: string, fields: Record<string, unknown>, since = 0): LogEvent[] {
  return demo.mesh.agents
    .get(node)!
    .events.slice(since)
    .filter((e) => e.type === 'access' && Object.entries(fields).every(([k, v]) => e[k] === v));
}

async function metric(node: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15020/metrics');
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      sum += Number(line.split(' ').pop());
  }
  return sum;
}

describe('L4 authorization on the namespace cluster', () => {
  it('a DENY policy blocks one client and not the other, on both nodes; explain and the access log agree; AUDIT only counts', async () => {
    const { pods } = demo;
    await apply([
      policy('deny-client2', 'DENY', [principal('client2')]),
      policy('audit-client', 'AUDIT', [principal('client')]),
    ]);
    const since = demo.mesh.agents.get('node-b')!.events.length;
    // echo-v2 is on the other node (HBONE 401), echo-v1 on the same node (in-process admit).
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    expect(await roundTrip(client2, pods.echoV2)).toBe(false);
    expect(await roundTrip(pods.client, pods.echoV1)).toBe(true);
    expect(await roundTrip(client2, pods.echoV1)).toBe(false);

    const denied = await demo.mesh.agents
      .get('node-b')!
      .waitFor(
        (e) => e.type === 'access' && e.response_flags === 'DENY' && e.dst_workload === 'echo-v2',
        5000,
      );
    expect(denied).toMatchObject({
      direction: 'inbound',
      src: expect.stringContaining(client2.ip),
      src_identity: `spiffe://${principal('client2')}`,
      dst_identity: `spiffe://${principal('echo')}`,
      policy: 'demo/deny-client2',
      error: expect.stringContaining('DENY policy demo/deny-client2'),
    });
    expect(
      accessLines(
        'node-b',
        { response_flags: 'DENY', src_identity: `spiffe://${principal('client')}` },
        since,
      ),
    ).toEqual([]);
    expect(
      await metric('node-b', 'hypha_policy_denied_total', {
        policy: 'demo/deny-client2',
        reason: 'deny_policy',
      }),
    ).toBeGreaterThanOrEqual(1);
    // AUDIT matched the allowed client: logged with the policy and counted, never blocking.
    const audited = await demo.mesh.agents
      .get('node-b')!
      .waitFor((e) => e.msg === 'AUDIT policy matched' && e.audit === 'demo/audit-client', 5000);
    expect(audited.peer).toBe(`spiffe://${principal('client')}`);
    expect(
      await metric('node-b', 'hypha_policy_audit_total', { policy: 'demo/audit-client' }),
    ).toBeGreaterThanOrEqual(1);

    const [ok, no, svc] = await Promise.all([
      explain('demo/client', `demo/echo-v2:${ECHO_PORT}`),
      explain('demo/client2', `demo/echo-v2:${ECHO_PORT}`),
      explain('demo/client2', 'demo/echo:80'),
    ]);
    expect(ok.code).toBe(0);
    expect(ok.json.decision).toBe('allow');
    expect(no.code).toBe(3);
    expect(no.json.targets[0]).toMatchObject({
      decision: 'deny',
      kind: 'deny_policy',
      policy: 'demo/deny-client2',
    });
    // Through the Service, each endpoint is evaluated on its own pod at its target port.
    expect(svc.code).toBe(3);
    expect(svc.json.targets).toHaveLength(2);
  });

  it('an ALLOW-only policy admits its principal and refuses everyone else', async () => {
    const { pods } = demo;
    await apply([policy('allow-client', 'ALLOW', [principal('client')])]);
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    expect(await roundTrip(client2, pods.echoV2)).toBe(false);
    const refused = await demo.mesh.agents
      .get('node-b')!
      .waitFor(
        (e) =>
          e.type === 'access' &&
          e.response_flags === 'DENY' &&
          e.src_identity === `spiffe://${principal('client2')}` &&
          typeof e.error === 'string' &&
          e.error.includes('demo/allow-client'),
        5000,
      );
    expect(refused.error).toMatch(/ALLOW policies apply .*demo\/allow-client.* but none matched/);

    const [ok, no] = await Promise.all([
      explain('demo/client', `demo/echo-v2:${ECHO_PORT}`),
      explain('demo/client2', `demo/echo-v2:${ECHO_PORT}`),
    ]);
    expect([ok.code, ok.json.targets[0]?.policy]).toEqual([0, 'demo/allow-client']);
    expect([no.code, no.json.targets[0]?.kind]).toEqual([3, 'no_allow_match']);
  });

  it('adding a DENY closes a live connection it now covers; the close is logged with the policy and counted', async () => {
    const { mesh, pods } = demo;
    await apply([]);
    const closedBefore = await metric('node-b', 'hypha_policy_connections_closed_total', {
      policy: 'demo/deny-live',
    });
    const held = holdConnection(client2, pods.echoV2);
    try {
      expect(await held.exchange(10_000)).toBe(10_000);
      // The connection is live on the destination agent.
      const live = JSON.parse(await mesh.fetchInNode('node-b', 'http://127.0.0.1:15000/connections')) as {
        source: { identity?: string };
        bytesSent: number;
      }[];
      const mine = live.filter((c) => c.source.identity === `spiffe://${principal('client2')}`);
      expect(mine).toHaveLength(1);
      expect(mine[0]!.bytesSent).toBe(10_000);

      await apply([policy('deny-live', 'DENY', [principal('client2')])]);
      const closed = await held.waitClosed();
      expect(closed.total).toBe(10_000);
      const line = await mesh.agents
        .get('node-b')!
        .waitFor(
          (e) => e.type === 'access' && e.policy === 'demo/deny-live' && e.bytes_sent === 10_000,
          5000,
        );
      expect(line).toMatchObject({
        direction: 'inbound',
        response_flags: 'DENY',
        src_identity: `spiffe://${principal('client2')}`,
        dst_workload: 'echo-v2',
        bytes_received: 10_000,
        error: expect.stringContaining('closed on re-evaluation'),
      });
      expect(
        await metric('node-b', 'hypha_policy_connections_closed_total', {
          policy: 'demo/deny-live',
          reason: 'deny_policy',
        }),
      ).toBe(closedBefore + 1);
      // And a new connection is refused too.
      expect(await roundTrip(client2, pods.echoV2)).toBe(false);
    } finally {
      held.kill();
    }
  });

  it('STRICT refuses a client outside the mesh that PERMISSIVE admits; explain agrees both ways', async () => {
    const { pods } = demo;
    await apply([]);
    // plain (namespace outside, not in the mesh, node-b) → echo-v1 (node-a): plaintext capture, 15006.
    expect(await roundTrip(pods.plain, pods.echoV1)).toBe(true);
    const permissive = await explain('outside/plain', `demo/echo-v1:${ECHO_PORT}`);
    expect([permissive.code, permissive.json.decision]).toEqual([0, 'allow']);
    const since = demo.mesh.agents.get('node-a')!.events.length;

    await apply([], { 'hypha.dev/mtls-mode': 'strict' });
    expect(await roundTrip(pods.plain, pods.echoV1)).toBe(false);
    // Mesh clients still get in: they come over mTLS.
    expect(await roundTrip(pods.client, pods.echoV1)).toBe(true);
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    const refused = await demo.mesh.agents
      .get('node-a')!
      .waitFor(
        (e) =>
          e.type === 'access' &&
          e.direction === 'inbound_plaintext' &&
          e.response_flags === 'DENY' &&
          e.dst_workload === 'echo-v1',
        5000,
      );
    expect(refused.src).toContain(pods.plain.ip);
    expect(refused.error).toMatch(/STRICT/);
    expect(accessLines('node-a', { direction: 'inbound_plaintext', response_flags: '-' }, since)).toEqual([]);
    const strict = await explain('outside/plain', `demo/echo-v1:${ECHO_PORT}`);
    expect([strict.code, strict.json.targets[0]?.kind]).toEqual([3, 'strict_mtls']);
    expect(
      await metric('node-a', 'hypha_policy_denied_total', { reason: 'strict_mtls' }),
    ).toBeGreaterThanOrEqual(1);
    await apply([]);
  });

  it('a STRICT PeerAuthentication with one port exempt: plaintext reaches that port only', async () => {
    const { pods } = demo;
    const plainTo = (port: number) => demo.mesh.cluster.tcpRoundTrip(pods.plain.netns, pods.echoV1.ip, port);
    await apply([
      {
        apiVersion: 'security.hypha.dev/v1',
        kind: 'PeerAuthentication',
        metadata: { name: 'default', namespace: 'demo' },
        spec: { mtls: { mode: 'STRICT' }, portLevelMtls: { [HEALTH_PORT]: { mode: 'PERMISSIVE' } } },
      },
    ]);
    expect(await plainTo(HEALTH_PORT)).toBe(true);
    expect(await plainTo(ECHO_PORT)).toBe(false);
    // Mesh clients reach both ports over mTLS.
    expect(await demo.mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV1.ip, ECHO_PORT)).toBe(true);
    expect(await demo.mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV1.ip, HEALTH_PORT)).toBe(true);
    const refused = await demo.mesh.agents
      .get('node-a')!
      .waitFor(
        (e) =>
          e.type === 'access' &&
          e.direction === 'inbound_plaintext' &&
          e.response_flags === 'DENY' &&
          e.dst_workload === 'echo-v1' &&
          String(e.error).includes('set by PeerAuthentication demo/default'),
        5000,
      );
    // The log says which rule refused which port.
    expect(refused.error).toBe(
      `plaintext refused: port ${ECHO_PORT} of demo/echo-v1 requires mTLS (STRICT, set by PeerAuthentication demo/default: STRICT)`,
    );
    expect(refused.src).toContain(pods.plain.ip);
    const exempt = await explain('outside/plain', `demo/echo-v1:${HEALTH_PORT}`);
    expect([exempt.code, exempt.json.targets[0]?.decision]).toEqual([0, 'allow']);
    expect(exempt.json.targets[0]?.mtls).toEqual({
      mode: 'permissive',
      rule: `PeerAuthentication demo/default portLevelMtls ${HEALTH_PORT}: PERMISSIVE`,
    });
    const strict = await explain('outside/plain', `demo/echo-v1:${ECHO_PORT}`);
    expect([strict.code, strict.json.targets[0]?.kind]).toEqual([3, 'strict_mtls']);
    await apply([]);
    expect(await plainTo(ECHO_PORT)).toBe(true);
  });
});

/** A TCP connection from a pod to the echo port of another, held open (see TestCluster.holdTcpConnection). */
const holdConnection = (from: ClusterPod, to: ClusterPod) =>
  demo.mesh.cluster.holdTcpConnection(from.netns, to.ip, ECHO_PORT);
