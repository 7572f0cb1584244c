// The ingress gateway (issue 16 part 1) on the namespace cluster: an external client outside the
// mesh → `hypha gateway` (HTTPS terminated with certificates from kubernetes.io/tls Secrets, two
// hostnames by SNI, verified by curl against the test CA) → HBONE with the gateway's own identity →
// the waypoint of Service demo/echo (90/10 split over echo-v1/echo-v2) → the pods. Also: a policy
// that admits only the gateway's identity refuses a mesh client; a listener whose Secret is missing
// says so in its status while the others serve, and serves once the Secret appears (live); TLS
// passthrough by SNI to a pod that terminates TLS itself; a TCPRoute.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAYPOINT_NODE_FLAGS } from '@hypha/shared/hbone';
import { type ClusterPod, type LogEvent, trackProcess } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { getScript, startWaypointScenario, until, type WaypointScenario } from './waypoint-fixture.js';

/** manifests/examples/gateway.yaml, as docs/gateway.md shows it. */
const EXAMPLE = parseAllDocuments(
  readFileSync(join(import.meta.dirname, '..', '..', 'manifests', 'examples', 'gateway.yaml'), 'utf8'),
).map((d) => d.toJS() as Record<string, unknown>);
const CERT_DIR = mkdtempSync(join(tmpdir(), 'hypha-gw-'));
const HOSTS = ['a.example.test', 'b.example.test', 'c.example.test', 'p.example.test'] as const;

/** A test CA and one ECDSA P-256 server certificate per host (openssl). */
function makeCertificates(): void {
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: CERT_DIR, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=gateway-test-ca',
  ]);
  for (const h of HOSTS) {
    run(['req', ...ec, '-keyout', `${h}.key`, '-out', `${h}.csr`, '-subj', `/CN=${h}`]);
    writeFileSync(join(CERT_DIR, `${h}.ext`), `subjectAltName=DNS:${h}\n`);
    run([
      'x509',
      '-req',
      '-in',
      `${h}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${h}.pem`,
      '-days',
      '2',
      '-extfile',
      `${h}.ext`,
    ]);
  }
}

const b64 = (file: string) => readFileSync(join(CERT_DIR, file)).toString('base64');
const tlsSecret = (name: string, host: string) => ({
  apiVersion: 'v1',
  kind: 'Secret',
  type: 'kubernetes.io/tls',
  metadata: { name, namespace: 'demo' },
  data: { 'tls.crt': b64(`${host}.pem`), 'tls.key': b64(`${host}.key`) },
});

let s: WaypointScenario;
let gwPod: ClusterPod;
let outside: ClusterPod;
let gateway: ReturnType<typeof trackProcess>;
let objects: Record<string, unknown>[];

const split = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'echo-split', namespace: 'demo' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }],
    rules: [
      {
        backendRefs: [
          { name: 'echo-v1', port: 80, weight: 90 },
          { name: 'echo-v2', port: 80, weight: 10 },
        ],
      },
    ],
  },
};

function gatewayObjects(): Record<string, unknown>[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: gwPod.name,
        namespace: 'demo',
        labels: { 'gateway.networking.k8s.io/gateway-name': 'ingress', 'hypha.dev/dataplane-mode': 'none' },
      },
      spec: {
        nodeName: gwPod.node,
        serviceAccountName: 'ingress',
        containers: [{ name: 'gateway', image: 'x' }],
      },
      status: { podIP: gwPod.ip, conditions: [{ type: 'Ready', status: 'True' }] },
    },
    tlsSecret('a-cert', 'a.example.test'),
    tlsSecret('b-cert', 'b.example.test'),
    // c-cert is missing until the test adds it.
    split,
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'tls-app', namespace: 'demo' },
      spec: {
        clusterIP: vipTls,
        selector: { app: 'tls-app' },
        ports: [{ name: 'https', port: 8443, targetPort: 8443, appProtocol: 'tls' }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'tcp-app', namespace: 'demo' },
      spec: {
        clusterIP: vipTcp,
        selector: { app: 'tcp-app' },
        ports: [{ name: 'tcp-echo', port: 9000, targetPort: 9000 }],
      },
    },
    // Gateway, HTTPRoute web, AuthorizationPolicy only-gateway, TLSRoute and TCPRoute: the example.
    ...EXAMPLE,
  ];
}
let vipTls = '';
let vipTcp = '';

/** curl from the external client (outside the mesh), verifying the server against the test CA. */
async function curl(
  host: string,
  path: string,
  extra: string[] = [],
): Promise<{ code: number; out: string }> {
  const port = host === 'p.example.test' ? 8443 : 443;
  const r = await s.mesh.cluster
    .exec(outside.netns, 'curl', [
      '-sS',
      '--max-time',
      '10',
      '--cacert',
      join(CERT_DIR, 'ca.pem'),
      '--resolve',
      `${host}:${port}:${gwPod.ip}`,
      ...extra,
      `https://${host}:${port}${path}`,
    ])
    .then(
      (x) => ({ code: 0, out: x.stdout }),
      (err: Error & { stderr?: string; code?: number }) => ({
        code: err.code ?? 1,
        out: String(err.message),
      }),
    );
  return r;
}

async function configDump(): Promise<Record<string, unknown>> {
  const r = await s.mesh.cluster.exec(gwPod.netns, 'curl', ['-sS', 'http://127.0.0.1:15000/config_dump']);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

type ListenerStatus = {
  name: string;
  attachedRoutes: number;
  conditions: { type: string; status: string; reason: string; message: string }[];
};
async function listenerStatus(name: string): Promise<ListenerStatus> {
  const dump = (await configDump()) as { status: { listeners: ListenerStatus[] } };
  return dump.status.listeners.find((l) => l.name === name)!;
}

beforeAll(async () => {
  makeCertificates();
  s = await startWaypointScenario({
    extraPods: [
      { node: 'node-b', name: 'tls-app', labels: { app: 'tls-app' }, serviceAccount: 'tls-app' },
      { node: 'node-b', name: 'tcp-app', labels: { app: 'tcp-app' }, serviceAccount: 'tcp-app' },
    ],
  });
  vipTls = s.mesh.cluster.allocateServiceIp();
  vipTcp = s.mesh.cluster.allocateServiceIp();
  gwPod = await s.mesh.addPod('node-a', 'ingress-gw', 'demo');
  outside = await s.mesh.addPod('node-b', 'external-client', 'outside');
  s.mesh.cluster.spawn(
    s.extraPods['tls-app']!.netns,
    'openssl',
    [
      's_server',
      '-quiet',
      '-accept',
      '8443',
      '-www',
      '-cert',
      join(CERT_DIR, 'p.example.test.pem'),
      '-key',
      join(CERT_DIR, 'p.example.test.key'),
    ],
    { stdio: 'ignore' },
  );
  await s.mesh.cluster.startApp(s.extraPods['tcp-app']!, 'tcp-echo', ['--port', '9000']);
  objects = gatewayObjects();
  await s.setExtra(objects);
  gateway = trackProcess(
    s.mesh.cluster.spawnNode(
      gwPod.netns,
      s.mesh.hyphaBin,
      [
        'gateway',
        '--name',
        'ingress',
        '--namespace',
        'demo',
        '--config',
        `file:${s.mesh.configPath}`,
        '--ca-address',
        s.mesh.caAddress,
        '--ca-token-file',
        join(s.mesh.dir, `token-${gwPod.node}`),
        '--ca-root-file',
        s.mesh.rootCertPath,
        '--trust-domain',
        s.mesh.trustDomain,
        '--drain-timeout',
        '1s',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], nodeArgs: WAYPOINT_NODE_FLAGS },
    ),
    'gateway demo/ingress',
  );
  await gateway.waitFor((e) => e.msg === 'ready', 30_000);
}, 120_000);

afterAll(async () => {
  await s?.mesh.stop();
  rmSync(CERT_DIR, { recursive: true, force: true });
});

describe('ingress gateway', () => {
  it('is ready with its start-up garbage given back to the kernel (the ready line says how much)', async () => {
    const ready = await gateway.waitFor((e) => e.msg === 'ready');
    expect(Number(ready.rss), JSON.stringify(ready)).toBeGreaterThan(0);
    expect(Number(ready.rss)).toBeLessThan(Number(ready.rssBefore) - 2 * 1048576);
  });

  it('serves two hostnames by SNI with certificates the client verifies, into a waypoint-bound service with its 90/10 split', async () => {
    for (const host of ['a.example.test', 'b.example.test']) {
      const r = await curl(host, '/', ['-w', '\\n%{http_code} %{ssl_verify_result}']);
      expect(r.out).toMatch(/"pod":"echo-v[12]"/);
      expect(r.out.trim().split('\n').at(-1)).toBe('200 0');
    }
    // The certificate each name gets is its own: verified by curl against the test CA for that name.
    const wrongName = await s.mesh.cluster
      .exec(outside.netns, 'curl', [
        '-sS',
        '--cacert',
        join(CERT_DIR, 'ca.pem'),
        '--resolve',
        `x.example.test:443:${gwPod.ip}`,
        'https://x.example.test/',
      ])
      .then(
        () => 'connected',
        (e: Error) => e.message,
      );
    expect(wrongName).not.toBe('connected');

    // 200 requests on keep-alive connections, counted per backend the waypoint chose.
    const r = await curl('a.example.test', '/n/[1-200]', ['-w', '\\n']);
    const pods = r.out
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { pod: string }).pod);
    expect(pods).toHaveLength(200);
    const v2 = pods.filter((p) => p === 'echo-v2').length;
    expect(pods.filter((p) => p === 'echo-v1').length + v2).toBe(200);
    expect(v2).toBeGreaterThan(0);
    expect(v2).toBeLessThan(60);

    // The gateway's route filter reached the pod; its metrics say "gateway".
    const b = await curl('b.example.test', '/b-only');
    expect((JSON.parse(b.out) as { headers: Record<string, string> }).headers['x-entered-by']).toBe(
      'gateway',
    );
    const metrics = await s.mesh.cluster.exec(outside.netns, 'curl', [
      '-sS',
      `http://${gwPod.ip}:15020/metrics`,
    ]);
    const lines = metrics.stdout
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('istio_requests_total{') &&
          l.includes('response_code="200"') &&
          l.includes('destination_service_name="echo"'),
      );
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) {
      expect(l).toContain('reporter="gateway"');
      expect(l).toContain('source_principal="spiffe://cluster.local/ns/demo/sa/ingress"');
    }
    // a, b, 200 split requests and /b-only: every one counted.
    expect(lines.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0)).toBe(203);
    const access = gateway.events.filter((e: LogEvent) => e.component === 'access');
    expect(access.some((e) => e.authority === 'b.example.test' && e.response_code === 200)).toBe(true);
  });

  it('enters the mesh as its own identity: a policy allowing only the gateway refuses a mesh client', async () => {
    const viaGateway = await curl('a.example.test', '/', ['-w', '\\n%{http_code}']);
    expect(viaGateway.out.trim().split('\n').at(-1)).toBe('200');
    const direct = JSON.parse(await s.runInClient(getScript(`http://${s.vips.echo}/`))) as { status: number };
    expect(direct.status).toBe(403);
  });

  it('a listener whose Secret is missing says so in its status while the others serve, and serves once it appears', async () => {
    const c = await listenerStatus('https-c');
    expect(c.conditions.find((x) => x.type === 'ResolvedRefs')).toMatchObject({
      status: 'False',
      reason: 'InvalidCertificateRef',
    });
    expect(c.conditions.find((x) => x.type === 'ResolvedRefs')?.message).toContain(
      'Secret demo/c-cert not found',
    );
    expect(c.conditions.find((x) => x.type === 'Programmed')?.status).toBe('False');
    expect((await listenerStatus('https-a')).conditions.find((x) => x.type === 'Programmed')?.status).toBe(
      'True',
    );
    expect((await listenerStatus('https-a')).attachedRoutes).toBe(1);
    expect(
      gateway.events.some((e) => e.listener === 'https-c' && String(e.msg).includes('c-cert not found')),
    ).toBe(true);
    expect((await curl('c.example.test', '/')).code).not.toBe(0);
    expect((await curl('a.example.test', '/', ['-w', '\\n%{http_code}'])).out.trim().split('\n').at(-1)).toBe(
      '200',
    );

    // The Secret appears: the next handshake gets its certificate, without a restart.
    objects.push(tlsSecret('c-cert', 'c.example.test'));
    await s.setExtra(objects);
    await until(async () => (await curl('c.example.test', '/')).code === 0, 15_000);
    expect((await listenerStatus('https-c')).conditions.find((x) => x.type === 'Programmed')?.status).toBe(
      'True',
    );
  });

  it('passes TLS through by SNI to a pod that terminates it, and forwards a TCPRoute', async () => {
    let page = '';
    await until(async () => {
      const r = await curl('p.example.test', '/', ['-w', '\\n%{ssl_verify_result}']);
      page = r.out;
      return r.code === 0;
    }, 15_000);
    // openssl s_server -www answers with its own status page: the pod's TLS, not the gateway's.
    expect(page).toContain('s_server');
    expect(page.trim().split('\n').at(-1)).toBe('0');

    const echoed = await s.mesh.cluster.exec(outside.netns, process.execPath, [
      '-e',
      `const s=require('net').connect(9000,${JSON.stringify(gwPod.ip)},()=>s.write('over tcp'));s.on('data',d=>{process.stdout.write(d);s.end()});s.on('error',e=>{process.stdout.write('error '+e.message)})`,
    ]);
    expect(echoed.stdout).toBe('over tcp');
  });

  it('SIGTERM drains: it stops even while a client holds an idle keep-alive connection open', async () => {
    // One request, then the connection stays open (the server keeps HTTP/1.1 connections for 60 s).
    const holder = s.mesh.cluster.spawn(outside.netns, process.execPath, [
      '-e',
      `const c=require('net').connect(80,${JSON.stringify(gwPod.ip)},()=>c.write('GET / HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n'));c.once('data',d=>process.stdout.write(String(d).split('\\r\\n')[0]+'\\n'));c.on('error',()=>{});setTimeout(()=>{},60000)`,
    ]);
    const status = await new Promise<string>((resolve) =>
      holder.stdout?.once('data', (d: Buffer) => resolve(String(d))),
    );
    expect(status).toContain('HTTP/1.1 200');
    gateway.process.kill('SIGTERM');
    await gateway.waitFor((e) => e.msg === 'stopped', 15_000);
    holder.kill();
  });
});
