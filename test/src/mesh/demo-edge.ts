// The demo's north-south part (issue 16): traffic that crosses the mesh's edge, both ways, with an
// outside world beyond the cluster (LocalMesh `outsideWorld`: external host `world`, the agents'
// DNS upstream) running a resolver for its names and an external HTTPS API with its own CA.
//   - Ingress: an external client (in the outside world) → HTTPS to Gateway demo/ingress (class
//     hypha, a certificate from a kubernetes.io/tls Secret, issued by the demo's ingress CA) →
//     HBONE with the gateway's own identity → echo's waypoint (its 90/10 split) → echo.
//   - Egress: the client pod calls http://api.external.test by name, in plain HTTP; the agent's DNS
//     proxy answers the ServiceEntry's allocated VIP and captures the connection; the entry is bound
//     to echo's waypoint (demo/waypoint), which resolves the host with the outside world's resolver
//     and calls the external API over HTTPS (TLS origination, TrafficPolicy tls), verifying it
//     against the outside world's CA.
// Runs after the L7 part (echo is bound to the waypoint then), on IPv4 demos.
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { type Agent, request } from 'node:https';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority, parseSpiffeId } from '@hypha/shared/identity';
import type { ExternalHost } from '../cluster/cluster.js';
import { DEMO_WAYPOINT, type DemoCheck, type DemoResult } from './demo.js';
import { exposeInNetns } from './expose.js';
import type { WaypointProcess } from './local-mesh.js';

/** Names the edge part uses; they show up in its report, checks and config. */
export const DEMO_EDGE = {
  gateway: { node: 'node-a', namespace: 'demo', name: 'ingress' },
  /** The hostname the gateway serves echo under (its HTTPS listener, SNI, certificate). */
  host: 'echo.demo.test',
  secret: 'echo-demo-test-tls',
  route: 'echo-from-outside',
  /**
   * The external API: ServiceEntry demo/external-api (the app's plain HTTP port 80, the server's
   * HTTPS 443), TrafficPolicy external-api-tls; served in the outside world.
   */
  api: {
    host: 'api.external.test',
    entry: 'external-api',
    policy: 'external-api-tls',
    port: 80,
    serverPort: 443,
    path: '/v1/hello',
  },
} as const;

/** Requests the ingress check sends (keep-alive, from this machine through the outside world). */
const INGRESS_REQUESTS = 20;

export interface EdgeDemo {
  world: ExternalHost;
  gateway: WaypointProcess;
  /** Port on 127.0.0.1 of this machine that reaches the gateway's HTTPS listener from the outside world. */
  localPort: number;
  /** Trusts the gateway's certificate (the demo's ingress CA). */
  ingressCaPath: string;
  /** Trusts the external API's certificate (the outside world's CA). */
  outsideCaPath: string;
  /** Stops what runs on this machine (the local port); the rest ends with the mesh. */
  close(): Promise<void>;
}

const CONFIG_HEADER = `# Hypha demo configuration (generated). Edit and save: the agents, the waypoint and the gateway pick changes up live.
# L7: Service demo/echo is bound to waypoint demo/waypoint; HTTPRoute echo-split 90/10; AuthorizationPolicy deny-admin.
# Ingress: Gateway demo/${DEMO_EDGE.gateway.name} (class hypha) serves https://${DEMO_EDGE.host}/ with Secret ${DEMO_EDGE.secret}; HTTPRoute ${DEMO_EDGE.route} → echo.
# Egress: ServiceEntry demo/${DEMO_EDGE.api.entry} names ${DEMO_EDGE.api.host} (port ${DEMO_EDGE.api.port}, resolution DNS: the outside world's resolver), bound to
# waypoint demo/waypoint, which calls it over HTTPS on ${DEMO_EDGE.api.serverPort} (TrafficPolicy ${DEMO_EDGE.api.policy}: TLS origination, the outside world's CA).
`;

const APP = fileURLToPath(
  new URL(`./outside-world-app${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url),
);

/**
 * Starts the outside world's resolver and API, the ingress gateway and the ServiceEntry, then
 * checks both directions. Undefined (with a report line) when the demo has no outside world.
 */
export async function runEdgeDemo(
  demo: DemoResult,
  progress: (line: string) => void = () => {},
): Promise<EdgeDemo | undefined> {
  const world = demo.mesh.world;
  if (world === undefined) {
    demo.report.push(
      '',
      'north-south (ingress gateway, egress to an external API): shown on IPv4 demos only (the outside world is IPv4)',
    );
    return undefined;
  }
  const { api, gateway: gw } = DEMO_EDGE;
  progress(
    `north-south: an outside world beyond the cluster (${world.ip}) with a resolver and an HTTPS API; Gateway ${gw.namespace}/${gw.name} (HTTPS ${DEMO_EDGE.host}); ServiceEntry ${api.host} through waypoint ${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name} ...`,
  );
  let edge: EdgeDemo;
  try {
    edge = await startEdge(demo, world);
  } catch (err) {
    // A check that fails, not a crash: what ran before still gets printed.
    demo.checks.push({
      name: 'the outside world, the ingress gateway and the ServiceEntry started',
      ok: false,
      detail: (err as Error).message.split('\n')[0] ?? '',
    });
    return undefined;
  }
  try {
    await checkIngress(demo, edge);
    await checkEgress(demo);
  } catch (err) {
    await edge.close();
    throw err;
  }
  return edge;
}

/** Certificates, the outside world's processes, the gateway and its config, the local port. */
async function startEdge(demo: DemoResult, world: ExternalHost): Promise<EdgeDemo> {
  const { mesh, pods } = demo;
  const { api, gateway: gw } = DEMO_EDGE;
  // Two CAs that are not the mesh's: the one the gateway's certificate comes from, and the outside world's.
  const [ingressCa, outsideCa] = await Promise.all([
    CertificateAuthority.init({ trustDomain: 'demo.test', commonName: 'Hypha demo ingress CA' }),
    CertificateAuthority.init({ trustDomain: 'external.test', commonName: 'outside world CA' }),
  ]);
  const day = 86_400;
  const [gwCert, apiCert] = await Promise.all([
    ingressCa.issue(parseSpiffeId('spiffe://demo.test/ns/demo/sa/ingress'), {
      dnsNames: [DEMO_EDGE.host],
      ttlSeconds: 30 * day,
    }),
    outsideCa.issue(parseSpiffeId('spiffe://external.test/ns/world/sa/api'), {
      dnsNames: [api.host],
      ttlSeconds: 30 * day,
    }),
  ]);
  const file = (name: string) => join(mesh.dir, name);
  await Promise.all([
    writeFile(file('ingress-ca.pem'), ingressCa.trustBundlePem),
    writeFile(file('outside-ca.pem'), outsideCa.trustBundlePem),
    writeFile(file('external-api.pem'), apiCert.certChainPem),
    writeFile(file('external-api.key'), apiCert.keyPem, { mode: 0o600 }),
  ]);
  const outsideWorld = startOutsideWorld(demo, world, [
    '--ip',
    world.ip,
    '--cert',
    file('external-api.pem'),
    '--key',
    file('external-api.key'),
    '--name',
    `${api.host}=${world.ip}`,
  ]);
  // The mesh pod's resolv.conf names the cluster DNS, as a pod's does; nothing listens there: the
  // agent captures port 53 whatever address is asked.
  await mesh.writePodResolvConf(pods.client, mesh.cluster.allocateServiceIp());

  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const objects = [
    {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: { name: DEMO_EDGE.secret, namespace: gw.namespace },
      data: { 'tls.crt': b64(gwCert.certChainPem), 'tls.key': b64(gwCert.keyPem) },
    },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: gw.name, namespace: gw.namespace },
      spec: {
        gatewayClassName: 'hypha',
        listeners: [
          {
            name: 'https',
            port: 443,
            protocol: 'HTTPS',
            hostname: DEMO_EDGE.host,
            tls: { mode: 'Terminate', certificateRefs: [{ kind: 'Secret', name: DEMO_EDGE.secret }] },
          },
        ],
      },
    },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: DEMO_EDGE.route, namespace: gw.namespace },
      spec: {
        parentRefs: [{ name: gw.name }],
        hostnames: [DEMO_EDGE.host],
        rules: [{ backendRefs: [{ name: 'echo', port: 80 }] }],
      },
    },
    {
      apiVersion: 'networking.hypha.dev/v1',
      kind: 'ServiceEntry',
      metadata: {
        name: api.entry,
        namespace: 'demo',
        labels: { 'hypha.dev/use-waypoint': DEMO_WAYPOINT.name },
      },
      spec: {
        hosts: [api.host],
        location: 'MESH_EXTERNAL',
        ports: [{ number: api.port, name: 'http', protocol: 'HTTP', targetPort: api.serverPort }],
        resolution: 'DNS',
      },
    },
    {
      apiVersion: 'traffic.hypha.dev/v1alpha1',
      kind: 'TrafficPolicy',
      metadata: { name: api.policy, namespace: 'demo' },
      spec: {
        targetRefs: [{ kind: 'ServiceEntry', group: 'networking.hypha.dev', name: api.entry }],
        tls: { mode: 'SIMPLE', sni: api.host, caCertificatesPem: outsideCa.trustBundlePem },
      },
    },
  ];
  // The agents and the waypoint have the ServiceEntry before the mesh app asks for it.
  const agents = [...mesh.agents.values(), ...(demo.waypoint ? [demo.waypoint] : [])];
  const before = agents.map((a) => a.events.length);
  const [gateway] = await Promise.all([
    mesh.startGateway({ ...gw, objects, header: CONFIG_HEADER }),
    outsideWorld,
  ]);
  await Promise.all(
    agents.map((a, i) =>
      a.waitFor(
        (e) =>
          typeof e.msg === 'string' &&
          e.msg.startsWith('config applied') &&
          a.events.indexOf(e) >= (before[i] ?? 0),
        10_000,
      ),
    ),
  );

  // This machine reaches the gateway as an outside client would: a forwarder in the outside world
  // (a unix socket the host can open) and a port on 127.0.0.1 that pipes into it.
  const sock = await exposeInNetns(
    mesh.cluster,
    world.netns,
    { host: gateway.pod.ip, port: 443 },
    file('gateway-https.sock'),
  );
  const sockets = new Set<Socket>();
  const local = createServer((c) => {
    const u = connect(sock.address.slice('unix:'.length));
    sockets.add(c).add(u);
    const done = () => {
      c.destroy();
      u.destroy();
      sockets.delete(c);
      sockets.delete(u);
    };
    for (const s of [c, u]) {
      s.on('error', done);
      s.on('close', done);
    }
    c.pipe(u).pipe(c);
  });
  local.listen(0, '127.0.0.1');
  await once(local, 'listening');
  const localPort = (local.address() as { port: number }).port;
  const edge: EdgeDemo = {
    world,
    gateway,
    localPort,
    ingressCaPath: file('ingress-ca.pem'),
    outsideCaPath: file('outside-ca.pem'),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => local.close(() => resolve()));
      sock.stop();
    },
  };
  return edge;
}

/** The outside world's resolver and API (outside-world-app), once both serve. */
async function startOutsideWorld(demo: DemoResult, world: ExternalHost, args: string[]): Promise<void> {
  const child = demo.mesh.cluster.spawnNode(world.netns, APP, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('"listening"')) resolve();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) =>
      reject(new Error(`the outside world's resolver and API exited (${code}): ${out}`)),
    );
  });
  child.removeAllListeners('exit');
}

/** GET https://echo.demo.test/ through 127.0.0.1:localPort, verifying the gateway against the ingress CA. */
export async function getThroughGateway(
  edge: Pick<EdgeDemo, 'localPort' | 'ingressCaPath'>,
  path: string,
  agent?: Agent,
): Promise<{ status: number; body: string }> {
  const { readFile } = await import('node:fs/promises');
  const ca = await readFile(edge.ingressCaPath, 'utf8');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: edge.localPort,
        servername: DEMO_EDGE.host,
        headers: { host: DEMO_EDGE.host },
        path,
        ca,
        ...(agent ? { agent } : {}),
        // The certificate names echo.demo.test, the name asked for (SNI), not the address dialled.
        checkServerIdentity: (_host, cert) =>
          (cert.subjectaltname ?? '').split(', ').includes(`DNS:${DEMO_EDGE.host}`)
            ? undefined
            : new Error(`certificate does not name ${DEMO_EDGE.host}: ${cert.subjectaltname}`),
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function checkIngress(demo: DemoResult, edge: EdgeDemo): Promise<void> {
  const { gateway: gw } = DEMO_EDGE;
  const waypoint = demo.waypoint;
  const logStart = waypoint?.events.length ?? 0;
  const { Agent: HttpsAgent } = await import('node:https');
  const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
  const byPod = new Map<string, number>();
  let failed = 0;
  let firstError = '';
  for (let i = 0; i < INGRESS_REQUESTS; i++) {
    try {
      const r = await getThroughGateway(edge, `/from-outside/${i}`, agent);
      const pod = r.status === 200 ? (JSON.parse(r.body) as { pod?: string }).pod : undefined;
      if (pod === undefined) throw new Error(`HTTP ${r.status} ${r.body.slice(0, 120)}`);
      byPod.set(pod, (byPod.get(pod) ?? 0) + 1);
    } catch (err) {
      failed++;
      firstError ||= (err as Error).message;
    }
  }
  agent.destroy();
  const ok = INGRESS_REQUESTS - failed;
  const identity = `spiffe://${demo.mesh.trustDomain}/ns/${gw.namespace}/sa/${gw.name}`;
  // The waypoint saw the gateway's own identity on every request (its access log, downstream_peer).
  const deadline = Date.now() + 3000;
  const fromGateway = () =>
    (waypoint?.events ?? [])
      .slice(logStart)
      .filter(
        (e) =>
          e.component === 'access' &&
          String(e.path).startsWith('/from-outside/') &&
          e.downstream_peer === identity,
      ).length;
  while (fromGateway() < ok && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const seen = fromGateway();
  const v1 = byPod.get('echo-v1') ?? 0;
  const v2 = byPod.get('echo-v2') ?? 0;
  demo.report.push(
    '',
    `north-south: the outside world ${edge.world.ip} (netns ${edge.world.netns}) lies beyond the cluster, on the fabric`,
    `outside client → https://${DEMO_EDGE.host}/ → gateway ${gw.namespace}/${gw.name} (${edge.gateway.pod.ip}:443, ${edge.gateway.node}; certificate from Secret ${DEMO_EDGE.secret}, verified against the demo's ingress CA)`,
    `  ${INGRESS_REQUESTS} requests: ${ok} ok (answered by echo-v1 ${v1}, echo-v2 ${v2}: echo's waypoint and its 90/10 route decide), ${failed} failed${firstError ? ` (${firstError})` : ''}`,
    `  the waypoint's access log: ${seen} of them from ${identity} (the gateway enters the mesh with its own identity)`,
  );
  const check: DemoCheck = {
    name: `outside client reaches echo through gateway ${gw.namespace}/${gw.name} over HTTPS (${DEMO_EDGE.host}, certificate verified), entering the mesh as the gateway's identity`,
    ok: failed === 0 && v1 + v2 === INGRESS_REQUESTS && seen >= INGRESS_REQUESTS,
    detail: `ok=${ok} failed=${failed}${firstError ? ` (${firstError})` : ''}; waypoint saw ${seen} from ${identity}`,
  };
  demo.checks.push(check);
}

async function checkEgress(demo: DemoResult): Promise<void> {
  const { mesh, pods, waypoint } = demo;
  const { api } = DEMO_EDGE;
  const url = `http://${api.host}${api.path}`;
  const wpStart = waypoint?.events.length ?? 0;
  // The mesh app resolves the name as any program does (getaddrinfo, its resolv.conf), then calls
  // the API in plain HTTP.
  const script = `const dns=require('dns'),http=require('http');
dns.lookup(${JSON.stringify(api.host)},{family:4},(err,address)=>{
if(err){process.stdout.write(JSON.stringify({error:'lookup '+err.code}));return}
http.get(${JSON.stringify(url)},{timeout:10000},res=>{let b='';res.on('data',d=>b+=d);res.on('end',()=>process.stdout.write(JSON.stringify({address,status:res.statusCode,body:b})))})
.on('error',e=>process.stdout.write(JSON.stringify({address,error:e.code||e.message})))})`;
  const r = await mesh.cluster.exec(pods.client.netns, process.execPath, ['-e', script]);
  let out: { address?: string; status?: number; body?: string; error?: string };
  try {
    out = JSON.parse(r.stdout) as typeof out;
  } catch {
    out = { error: `no answer (${r.stdout.slice(0, 200)}${r.stderr.slice(0, 200)})` };
  }
  let body: { tls?: string; sni?: string; from?: string } = {};
  try {
    body = JSON.parse(out.body ?? '{}') as typeof body;
  } catch {}
  const entry = `demo/${api.entry}`;
  const logged = await waypoint
    ?.waitFor(
      (e) => e.component === 'access' && e.path === api.path && waypoint.events.indexOf(e) >= wpStart,
      3000,
    )
    .catch(() => undefined);
  const vip = out.address ?? '-';
  const wpName = `${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name}`;
  demo.report.push(
    `mesh app (demo/client) → ${url} by name, in plain HTTP`,
    `  the agent's DNS proxy answered ${api.host} = ${vip} (an allocated VIP of ServiceEntry ${entry}; the pod's resolv.conf names the cluster DNS)`,
    `  ServiceEntry ${entry} is bound to waypoint ${wpName}: the agent carried the request there over mTLS (HBONE)`,
    `  the waypoint's access log: ${logged ? `${logged.method} ${logged.path} response_code=${logged.response_code} upstream_host=${String(logged.upstream_host ?? '-')}` : '(no line)'}`,
    `  answer: ${out.status ?? out.error}${body.tls ? `; the API was called over ${body.tls} with SNI ${body.sni} from ${body.from} (the waypoint: TLS origination, TrafficPolicy ${api.policy}, verified against the outside world's CA)` : ''}`,
  );
  demo.checks.push({
    name: `mesh app calls http://${api.host} by name: DNS proxy VIP, ServiceEntry ${entry}, waypoint ${wpName} originates HTTPS to the outside world's API`,
    ok:
      out.status === 200 &&
      vip.startsWith('240.240.') &&
      body.sni === api.host &&
      typeof body.tls === 'string' &&
      body.tls.startsWith('TLS') &&
      body.from === waypoint?.pod.ip &&
      logged?.response_code === 200,
    detail: `address=${vip} status=${out.status ?? out.error} tls=${body.tls ?? '-'} from=${body.from ?? '-'} waypoint logged=${logged ? String(logged.response_code) : 'no'}`,
  });
}
