// Egress through an egress waypoint with TLS origination (issue 16 part 3, docs/egress.md) on a
// two-node namespace cluster with an outside world (TestCluster.addExternalHost with `https`): an
// HTTPS API for api.external.test with a CA of its own, and dnsmasq resolving its name.
//   - the app (mesh pod on node-a) speaks plain HTTP to http://api.external.test; its agent answers
//     the name with the entry's VIP, captures the connection and tunnels it (HBONE) to the waypoint
//     on node-b, which resolves the host upstream and calls it over HTTPS, SNI = the host, verifying
//     the server against the TrafficPolicy's CA bundle;
//   - a tcpdump on the external host's link sees the TLS connection and never the request's marker;
//   - an AuthorizationPolicy on the ServiceEntry allows only GET /v1/* from the app: /v2 is 403;
//   - a CA bundle that did not sign the server's certificate: 503 and the reason in the waypoint's
//     access log, nothing reaches the server;
//   - MUTUAL: the server sees the client certificate of a kubernetes.io/tls Secret.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type ClusterPod, type ExternalHost, LocalMesh, type WaypointProcess } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from './waypoint-fixture.js';

const NODES = ['node-a', 'node-b'] as const;
const API_HOST = 'api.external.test';

let mesh: LocalMesh;
let client: ClusterPod;
let world: ExternalHost;
let waypoint: WaypointProcess;
let resolver: ChildProcess;
let baseConfig: unknown[];

// The manifests docs/egress.md shows (manifests/examples/egress.yaml), with this run's CA.
const serviceEntry = {
  apiVersion: 'networking.hypha.dev/v1',
  kind: 'ServiceEntry',
  metadata: { name: 'external-api', namespace: 'shop', labels: { 'hypha.dev/use-waypoint': 'egress' } },
  spec: {
    hosts: [API_HOST],
    location: 'MESH_EXTERNAL',
    ports: [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 443 }],
    resolution: 'DNS',
  },
};
const tlsPolicy = (caPem: string) => ({
  apiVersion: 'traffic.hypha.dev/v1alpha1',
  kind: 'TrafficPolicy',
  metadata: { name: 'external-api-tls', namespace: 'shop' },
  spec: {
    targetRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
    tls: { mode: 'SIMPLE', sni: API_HOST, caCertificatesPem: caPem },
  },
});
const egressAuthz = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'external-api-v1-only', namespace: 'shop' },
  spec: {
    targetRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
    action: 'ALLOW',
    rules: [
      {
        from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }],
        to: [{ operation: { methods: ['GET'], paths: ['/v1/*'] } }],
      },
    ],
  },
};

/** `curl http://api.external.test<path>` from the app: status and body. */
async function curl(path: string): Promise<{ status: number; body: string }> {
  const r = await mesh.cluster
    .exec(client.netns, 'curl', [
      '-sS',
      '--max-time',
      '5',
      '-w',
      '\n%{http_code}',
      `http://${API_HOST}${path}`,
    ])
    .catch((e: { stdout?: string; stderr?: string }) => ({
      stdout: `${e.stdout ?? ''}\n000`,
      stderr: e.stderr,
    }));
  const lines = r.stdout.trimEnd().split('\n');
  return { status: Number(lines.pop()), body: lines.join('\n') };
}

beforeAll(async () => {
  mesh = await LocalMesh.create({ nodes: NODES });
  const { cluster } = mesh;
  client = await mesh.addPod('node-a', 'client', 'shop');
  world = await cluster.addExternalHost('world', { https: { hosts: [API_HOST], port: 443 } });
  await mesh.writePodResolvConf(client, cluster.allocateServiceIp()); // "kube-dns": nothing listens
  baseConfig = [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'client', namespace: 'shop', labels: { app: 'client' } },
      spec: { nodeName: 'node-a', serviceAccountName: 'client' },
      status: { podIP: client.ip, conditions: [{ type: 'Ready', status: 'True' }] },
    },
    serviceEntry,
    tlsPolicy(world.https!.caPem),
    egressAuthz,
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
      `--address=/${API_HOST}/${world.ip}`,
      '--local=/cluster.local/',
      '--log-facility=-',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const on = (d: Buffer) => {
      out += d.toString();
      if (/started, version/.test(out)) resolve();
    };
    resolver.stderr?.on('data', on);
    resolver.stdout?.on('data', on);
    resolver.once('exit', (code) => reject(new Error(`dnsmasq exited (${code}): ${out}`)));
  });
  resolver.removeAllListeners('exit');
  const dns = ['--dns-upstream', world.ip];
  await Promise.all(NODES.map((n) => mesh.startAgent(n, 30_000, { args: dns })));
  waypoint = await mesh.startWaypoint({ node: 'node-b', namespace: 'shop', name: 'egress', args: dns });
  baseConfig = [...(mesh.configObjects ?? baseConfig)];
  // Until node-a knows the waypoint (its Gateway and pod arrived with startWaypoint).
  await until(async () => (await curl('/v1/ready')).status === 200, 20_000);
}, 120_000);

afterAll(async () => {
  resolver?.kill('SIGKILL');
  world?.https?.close();
  await mesh?.stop();
});

describe('egress waypoint: TLS origination', () => {
  it('plain HTTP from the app reaches the external server as verified HTTPS (SNI = the host); no plaintext on its link', async () => {
    const marker = `egress-marker-${randomBytes(6).toString('hex')}`;
    const capture = await mesh.cluster.startCapture(world.netns, 'tcp');
    const r = await curl(`/v1/items?m=${marker}`);
    const pcap = await capture.stop();
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({
      tls: 'TLSv1.3',
      sni: API_HOST,
      path: `/v1/items?m=${marker}`,
    });
    const seen = world.https!.requests.find((q) => q.url.includes(marker));
    expect(seen).toMatchObject({
      tlsVersion: 'TLSv1.3',
      servername: API_HOST,
      host: API_HOST,
      method: 'GET',
    });
    // It came from the waypoint's pod (node-b), not from the app.
    expect(seen?.remoteAddress).toBe(waypoint.pod.ip);
    // The capture saw the exchange (port 443) but never the marker in the clear.
    expect(pcap.length).toBeGreaterThan(500);
    expect(pcap.includes(Buffer.from(marker))).toBe(false);
    // The waypoint's access log (the path without its query) names the entry and the host dialed.
    const line = await waypoint.waitFor((e) => e.path === '/v1/items' && e.response_code === 200);
    expect(line).toMatchObject({
      upstream_cluster: 'shop/external-api',
      upstream_host: API_HOST,
      authority: API_HOST,
      downstream_peer: 'spiffe://cluster.local/ns/shop/sa/client',
    });
  });

  it('L7 authorization on egress: a path outside /v1/* is 403 at the waypoint and never leaves', async () => {
    const before = world.https!.requests.length;
    const r = await curl('/v2/items');
    expect(r.status).toBe(403);
    expect(world.https!.requests.length).toBe(before);
    expect((await curl('/v1/orders')).status).toBe(200);
  });

  it('a CA bundle that did not sign the server: 503, the reason in the access log, nothing reaches the server', async () => {
    const version = (e: { msg?: unknown }) => e.msg === 'config applied';
    const applied = waypoint.events.filter(version).length;
    await mesh.writeConfig(
      baseConfig.map((o) =>
        (o as { kind?: string }).kind === 'TrafficPolicy' ? tlsPolicy(world.https!.otherCaPem) : o,
      ),
    );
    await until(() => waypoint.events.filter(version).length > applied, 10_000);
    const before = world.https!.requests.length;
    const r = await curl('/v1/items');
    expect(r.status).toBe(503);
    expect(world.https!.requests.length).toBe(before);
    const line = await waypoint.waitFor((e) => e.response_code === 503 && e.path === '/v1/items');
    expect(line.response_flags).toBe('UF');
    expect(String(line.upstream_transport_failure_reason)).toMatch(
      new RegExp(
        `^upstream TLS to ${world.ip.replaceAll('.', '\\.')}:443 \\(SNI ${API_HOST}\\): certificate verify failed`,
      ),
    );
  });

  it('MUTUAL: the waypoint presents the client certificate of a kubernetes.io/tls Secret', async () => {
    const version = (e: { msg?: unknown }) => e.msg === 'config applied';
    const applied = waypoint.events.filter(version).length;
    const b64 = (v: string) => Buffer.from(v).toString('base64');
    const https = world.https!;
    await mesh.writeConfig([
      ...baseConfig.filter((o) => (o as { kind?: string }).kind !== 'TrafficPolicy'),
      {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'kubernetes.io/tls',
        metadata: { name: 'api-client', namespace: 'shop' },
        data: { 'tls.crt': b64(https.clientCert.certificate), 'tls.key': b64(https.clientCert.privateKey) },
      },
      {
        ...tlsPolicy(https.caPem),
        spec: {
          ...tlsPolicy(https.caPem).spec,
          tls: { mode: 'MUTUAL', caCertificatesPem: https.caPem, credentialName: 'api-client' },
        },
      },
    ]);
    await until(() => waypoint.events.filter(version).length > applied, 10_000);
    const r = await curl('/v1/whoami');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ tls: 'TLSv1.3', sni: API_HOST, clientCn: 'mesh-egress' });
  });
});
