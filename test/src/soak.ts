// The soak (issue 18 part 1): the demo's two-node mesh with its waypoint, under steady mixed
// traffic for the whole run while, all at once, pods are added and removed every second, a DENY
// policy is toggled every few seconds, workload certificates live a short time (so they rotate
// under load), the CA is restarted once and one agent is upgraded mid-way. It counts what the
// clients saw, samples the memory and file descriptors of every mesh process, and compares the
// agents' and the waypoint's metric counters with the clients' own counts. Thin on purpose: each
// piece is simple; what is not measured is said in docs/reliability.md.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterPod } from './cluster/cluster.js';
import { DEMO_WAYPOINT, type DemoResult, startDemo } from './mesh/demo.js';
import { hostPort } from './mesh/local-mesh.js';

export interface SoakOptions {
  /** Duration in minutes (or `seconds`); default 2 minutes. */
  minutes?: number;
  seconds?: number;
  /** Workload certificate lifetime in seconds (agent --cert-ttl); default 60. */
  certTtlSeconds?: number;
  progress?: (line: string) => void;
}

export interface TrafficCount {
  sent: number;
  succeeded: number;
  failedUnexpectedly: number;
  deniedAsExpected: number;
  errors: Record<string, number>;
}

export interface ProcessSample {
  name: string;
  pid: number;
  rssKiB: number;
  fds: number;
}

export interface StreamResult {
  sent: number;
  received: number;
  sha256Match: boolean;
  error?: string;
}

export interface SoakResult {
  durationSeconds: number;
  certTtlSeconds: number;
  /** L4 connections client → echo-v2 (cross-node), each one round trip. */
  l4: TrafficCount;
  /** HTTP requests through the waypoint (service web, bound to waypoint demo/waypoint). */
  http: TrafficCount;
  /** The dedicated client whose connections the toggled DENY policy refuses. */
  denyClient: TrafficCount;
  /** Long-lived sha256-checked streams (about 20 s each, three at a time, cross-node). */
  streams: StreamResult[];
  churn: { podsAdded: number; podsRemoved: number; certificatesSeen: number; configWrites: number };
  denyToggles: number;
  caRestarted: boolean;
  agentUpgraded: boolean;
  /** Per identity present at start: whether its certificate's serial changed by the end. */
  certificatesRotated: Record<string, boolean>;
  processes: { start: ProcessSample[]; warm: ProcessSample[]; end: ProcessSample[] };
  /** End vs warm-up, per process name: growth in percent. */
  growthAfterWarmup: Record<string, { rssPct: number; fdPct: number }>;
  /** Metric counters (their increase over the run) against the clients' own counts. */
  metrics: {
    l4ConnectionsOpened: number;
    l4ClientConnections: number;
    httpRequests: number;
    httpClientRequests: number;
  };
}

const ECHO_TCP_PORT = 9200;
const STREAM_SECONDS = 20;
const STREAMS = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function count(): TrafficCount {
  return { sent: 0, succeeded: 0, failedUnexpectedly: 0, deniedAsExpected: 0, errors: {} };
}

function podObject(name: string, node: string, ip: string, labels: Record<string, string>): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'app', image: 'hypha-demo' }] },
    status: { podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

/** A stream script run inside a pod: writes random chunks for `seconds`, checks the echo's sha256. */
function streamScript(ip: string, port: number, seconds: number): string {
  return `const c=require('crypto');const s=require('net').connect(${port},${JSON.stringify(ip)});
const hs=c.createHash('sha256'),hr=c.createHash('sha256');let sent=0,rec=0,err;let t;
s.on('connect',()=>{t=setInterval(()=>{const b=c.randomBytes(16384);hs.update(b);sent+=b.length;s.write(b)},100);
setTimeout(()=>{clearInterval(t);s.end()},${seconds * 1000})});
s.on('data',d=>{hr.update(d);rec+=d.length});s.on('error',e=>{err=e.code||e.message});
s.on('close',()=>{clearInterval(t);process.stdout.write(JSON.stringify({sent,received:rec,sentSha256:hs.digest('hex'),receivedSha256:hr.digest('hex'),error:err})+'\\n');process.exit(0)});`;
}

async function sampleProcess(name: string, pid: number | undefined): Promise<ProcessSample | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    return { name, pid, rssKiB: rss, fds };
  } catch {
    return undefined;
  }
}

/** The CA's pid: LocalMesh keeps it private, so find `hypha ca serve --dir <mesh>/ca` in /proc. */
async function caPid(meshDir: string): Promise<number | undefined> {
  const caDir = join(meshDir, 'ca');
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (cmd.includes('serve') && cmd.includes(caDir) && !cmd.includes('netns')) return Number(entry);
    } catch {}
  }
  return undefined;
}

async function sampleAll(demo: DemoResult): Promise<ProcessSample[]> {
  const out: (ProcessSample | undefined)[] = [];
  for (const [node, a] of demo.mesh.agents) out.push(await sampleProcess(`agent ${node}`, a.process.pid));
  for (const [key, w] of demo.mesh.waypoints) out.push(await sampleProcess(`waypoint ${key}`, w.process.pid));
  out.push(await sampleProcess('ca', await caPid(demo.mesh.dir)));
  return out.filter((s): s is ProcessSample => s !== undefined);
}

/** Sum of a counter's samples whose line contains every one of `parts`. */
function sumCounter(text: string, name: string, parts: readonly string[]): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !parts.every((p) => line.includes(p))) continue;
    sum += Number(line.split(' ').pop());
  }
  return sum;
}

type CertView = { identity: string; state: string; serial?: string };

async function certs(demo: DemoResult): Promise<CertView[]> {
  const out: CertView[] = [];
  for (const node of demo.mesh.agents.keys()) {
    try {
      out.push(
        ...(JSON.parse(await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15000/certs')) as CertView[]),
      );
    } catch {}
  }
  return out;
}

export async function runSoak(options: SoakOptions = {}): Promise<SoakResult> {
  const durationMs = Math.round(
    options.seconds !== undefined ? options.seconds * 1000 : (options.minutes ?? 2) * 60_000,
  );
  const ttl = options.certTtlSeconds ?? 60;
  const progress = options.progress ?? (() => {});
  const prevTtl = process.env.HYPHA_CERT_TTL;
  // Read by every agent this process starts, the upgraded one included.
  process.env.HYPHA_CERT_TTL = `${ttl}s`;
  let demo: DemoResult | undefined;
  try {
    progress('starting the two-node mesh with a waypoint ...');
    demo = await startDemo(undefined, progress, { waypoint: true });
    return await soak(demo, durationMs, ttl, progress);
  } finally {
    await demo?.mesh.stop();
    if (prevTtl === undefined) delete process.env.HYPHA_CERT_TTL;
    else process.env.HYPHA_CERT_TTL = prevTtl;
  }
}

async function soak(
  demo: DemoResult,
  durationMs: number,
  ttl: number,
  progress: (line: string) => void,
): Promise<SoakResult> {
  const { mesh, pods } = demo;
  const cluster = mesh.cluster;
  const base = mesh.configObjects ?? [];
  const l4client = await mesh.addPod('node-a', 'l4client', 'demo');
  const hclient = await mesh.addPod('node-a', 'hclient', 'demo');
  const denier = await mesh.addPod('node-a', 'denier', 'demo');
  const web = await mesh.addPod('node-a', 'web', 'demo');
  const webVip = cluster.allocateServiceIp();
  const fixed = [
    podObject('l4client', 'node-a', l4client.ip, { app: 'l4client' }),
    podObject('hclient', 'node-a', hclient.ip, { app: 'hclient' }),
    podObject('denier', 'node-a', denier.ip, { app: 'denier' }),
    podObject('web', 'node-a', web.ip, { app: 'web' }),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'demo', labels: { 'hypha.dev/use-waypoint': DEMO_WAYPOINT.name } },
      spec: {
        clusterIP: webVip,
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      },
    },
  ];
  const denyPolicy = {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'soak-deny', namespace: 'demo' },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      action: 'DENY',
      rules: [{ from: [{ source: { principals: [`${mesh.trustDomain}/ns/demo/sa/denier`] } }] }],
    },
  };
  const churn: { pod: ClusterPod; node: string }[] = [];
  let denyOn = false;
  let configWrites = 0;
  const write = async () => {
    const churnObjects = churn.map((c) => podObject(c.pod.name, c.node, c.pod.ip, { app: 'churn' }));
    await mesh.writeConfig([...base, ...fixed, ...churnObjects, ...(denyOn ? [denyPolicy] : [])]);
    configWrites++;
  };
  await write();
  await Promise.all([
    cluster.startApp(pods.echoV2, 'tcp-echo', ['--port', String(ECHO_TCP_PORT)]),
    cluster.startApp(web, 'http-echo', ['--port', '8080', '--pod', 'web', '--namespace', 'demo']),
  ]);
  // Wait until the new pods' certificates are held and traffic flows, before counting anything.
  const ready = async (): Promise<boolean> => {
    const held = new Set((await certs(demo)).filter((c) => c.state === 'ready').map((c) => c.identity));
    return ['l4client', 'hclient', 'denier', 'web'].every((sa) =>
      held.has(`spiffe://${mesh.trustDomain}/ns/demo/sa/${sa}`),
    );
  };
  for (let i = 0; !(await ready()); i++) {
    if (i > 60) throw new Error('the soak pods got no certificates within 30 s');
    await sleep(500);
  }
  const echoTarget = hostPort(pods.echoV2.ip, ECHO_TCP_PORT);
  const webTarget = hostPort(webVip, 80);
  const wpKey = `${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name}`;
  const waypointMetricsUrl = () => `http://${hostPort(mesh.waypoints.get(wpKey)!.pod.ip, 15020)}/metrics`;
  const readCounters = async () => {
    const b = await mesh.fetchInNode('node-b', 'http://127.0.0.1:15020/metrics');
    const w = await mesh.fetchInNode(DEMO_WAYPOINT.node, waypointMetricsUrl());
    return {
      l4: sumCounter(b, 'istio_tcp_connections_opened_total', ['reporter="destination"', '"l4client"']),
      http: sumCounter(w, 'istio_requests_total', ['"hclient"']),
    };
  };
  for (let i = 0; i < 20; i++) {
    if (await cluster.tcpRoundTrip(l4client.netns, pods.echoV2.ip, ECHO_TCP_PORT)) break;
    await sleep(500);
  }
  const countersBefore = await readCounters();
  const startCerts = new Map(
    (await certs(demo)).filter((c) => !c.identity.includes('/sa/churn')).map((c) => [c.identity, c.serial]),
  );
  const start = await sampleAll(demo);
  progress(`soak running for ${Math.round(durationMs / 1000)} s (certificates live ${ttl} s) ...`);

  const t0 = Date.now();
  const endAt = t0 + durationMs;
  const running = () => Date.now() < endAt;
  const l4 = count();
  const http = count();
  const denyClient = count();
  const streams: StreamResult[] = [];
  const denyWindows: { from: number; to: number }[] = [];
  let denyToggles = 0;
  let podsAdded = 0;
  let podsRemoved = 0;
  let caRestarted = false;
  let agentUpgraded = false;
  const churnCerts = new Set<string>();
  const note = (c: TrafficCount, err: string) => {
    c.errors[err] = (c.errors[err] ?? 0) + 1;
  };

  // Fixed-rate L4: 5 connections per second, one round trip each, cross-node.
  const l4Loop = async () => {
    while (running()) {
      const tick = Date.now();
      try {
        const r = (await cluster.runApp(
          l4client,
          'load-client',
          ['--target', echoTarget, '--mode', 'tcp', '--connections', '5', '--requests', '1'],
          30_000,
        )) as { ok: number; failed: number; errors?: Record<string, number> };
        l4.sent += r.ok + r.failed;
        l4.succeeded += r.ok;
        l4.failedUnexpectedly += r.failed;
        for (const [k, v] of Object.entries(r.errors ?? {})) l4.errors[k] = (l4.errors[k] ?? 0) + v;
      } catch (err) {
        note(l4, `client: ${(err as Error).message.split('\n')[0]}`);
      }
      await sleep(Math.max(0, 1000 - (Date.now() - tick)));
    }
  };
  // HTTP through the waypoint: 2 keep-alive connections, 10 requests each, every 2 s.
  const httpLoop = async () => {
    while (running()) {
      const tick = Date.now();
      try {
        const r = (await cluster.runApp(
          hclient,
          'load-client',
          ['--target', webTarget, '--connections', '2', '--requests', '10'],
          30_000,
        )) as { ok: number; failed: number; errors?: Record<string, number> };
        http.sent += r.ok + r.failed;
        http.succeeded += r.ok;
        http.failedUnexpectedly += r.failed;
        for (const [k, v] of Object.entries(r.errors ?? {})) http.errors[k] = (http.errors[k] ?? 0) + v;
      } catch (err) {
        note(http, `client: ${(err as Error).message.split('\n')[0]}`);
      }
      await sleep(Math.max(0, 2000 - (Date.now() - tick)));
    }
  };
  // The dedicated client the DENY policy targets: one connection a second. A refusal while the
  // policy was in force (or being applied: within 3 s of a toggle) is denied as expected.
  const denyLoop = async () => {
    while (running()) {
      const from = Date.now();
      const ok = await cluster.tcpRoundTrip(denier.netns, pods.echoV2.ip, ECHO_TCP_PORT, 5000);
      const to = Date.now();
      denyClient.sent++;
      if (ok) denyClient.succeeded++;
      else if (denyOn || denyWindows.some((w) => w.from - 3000 <= to && w.to + 3000 >= from))
        denyClient.deniedAsExpected++;
      else denyClient.failedUnexpectedly++;
      await sleep(Math.max(0, 1000 - (to - from)));
    }
  };
  const streamLoop = async () => {
    while (Date.now() + STREAM_SECONDS * 1000 < endAt) {
      const child = cluster.spawn(l4client.netns, process.execPath, [
        '-e',
        streamScript(pods.echoV2.ip, ECHO_TCP_PORT, STREAM_SECONDS),
      ]);
      let out = '';
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      await new Promise((r) => child.once('exit', r));
      try {
        const r = JSON.parse(out.trim()) as {
          sent: number;
          received: number;
          sentSha256: string;
          receivedSha256: string;
          error?: string;
        };
        streams.push({
          sent: r.sent,
          received: r.received,
          sha256Match: r.sent > 0 && r.sent === r.received && r.sentSha256 === r.receivedSha256,
          ...(r.error ? { error: r.error } : {}),
        });
      } catch {
        streams.push({ sent: 0, received: 0, sha256Match: false, error: `no result: ${out.slice(0, 200)}` });
      }
    }
  };
  // Churn: every second a pod is added (alternating nodes) and the oldest beyond three removed;
  // every 5 s the DENY policy flips. Each change is one config write.
  const churnLoop = async () => {
    let n = 0;
    while (running()) {
      const tick = Date.now();
      n++;
      try {
        const node = n % 2 === 0 ? 'node-a' : 'node-b';
        churn.push({ pod: await mesh.addPod(node, `churn-${n}`, 'demo'), node });
        podsAdded++;
        while (churn.length > 3) {
          const gone = churn.shift()!;
          await cluster.removePod(gone.pod);
          podsRemoved++;
        }
        if (n % 5 === 0) {
          denyOn = !denyOn;
          denyToggles++;
          if (denyOn) denyWindows.push({ from: Date.now(), to: Number.POSITIVE_INFINITY });
          else denyWindows[denyWindows.length - 1]!.to = Date.now();
        }
        await write();
        if (n % 3 === 0) {
          for (const c of await certs(demo))
            if (c.identity.includes('/sa/churn-') && c.state === 'ready') churnCerts.add(c.identity);
        }
      } catch (err) {
        progress(`churn step ${n} failed: ${(err as Error).message.split('\n')[0]}`);
      }
      await sleep(Math.max(0, 1000 - (Date.now() - tick)));
    }
  };
  // Mid-way events: the CA restarted at 40 %, agent node-a upgraded at 60 %.
  const events = async () => {
    await sleep(durationMs * 0.4);
    progress('restarting the CA ...');
    await mesh.killCa();
    await sleep(3000);
    await mesh.restartCa();
    caRestarted = true;
    await sleep(Math.max(0, t0 + durationMs * 0.6 - Date.now()));
    progress('upgrading agent node-a ...');
    await mesh.upgradeAgent('node-a');
    agentUpgraded = true;
  };
  const warmMs = Math.min(Math.max(durationMs * 0.15, 15_000), 120_000);
  let warm: ProcessSample[] = [];
  const warmSample = async () => {
    await sleep(warmMs);
    warm = await sampleAll(demo);
  };

  await Promise.all([
    l4Loop(),
    httpLoop(),
    denyLoop(),
    churnLoop(),
    events(),
    warmSample(),
    ...Array.from({ length: STREAMS }, (_, i) => sleep(i * 2000).then(streamLoop)),
  ]);
  const end = await sampleAll(demo);
  // Let the last connections' metrics settle, then read the counters.
  await sleep(1000);
  const countersAfter = await readCounters();
  const endCerts = new Map((await certs(demo)).map((c) => [c.identity, c.serial]));
  const certificatesRotated: Record<string, boolean> = {};
  for (const [id, serial] of startCerts) {
    const now = endCerts.get(id);
    if (now !== undefined) certificatesRotated[id] = now !== serial;
  }
  const growthAfterWarmup: SoakResult['growthAfterWarmup'] = {};
  for (const e of end) {
    const w = warm.find((x) => x.name === e.name);
    if (!w) continue;
    growthAfterWarmup[e.name] = {
      rssPct: Math.round(((e.rssKiB - w.rssKiB) / w.rssKiB) * 1000) / 10,
      fdPct: Math.round(((e.fds - w.fds) / w.fds) * 1000) / 10,
    };
  }
  return {
    durationSeconds: Math.round((Date.now() - t0) / 1000),
    certTtlSeconds: ttl,
    l4,
    http,
    denyClient,
    streams,
    churn: { podsAdded, podsRemoved, certificatesSeen: churnCerts.size, configWrites },
    denyToggles,
    caRestarted,
    agentUpgraded,
    certificatesRotated,
    processes: { start, warm, end },
    growthAfterWarmup,
    metrics: {
      l4ConnectionsOpened: countersAfter.l4 - countersBefore.l4,
      // The long streams run from the same client to the same port: one connection each.
      l4ClientConnections: l4.sent + streams.length,
      httpRequests: countersAfter.http - countersBefore.http,
      httpClientRequests: http.sent,
    },
  };
}

/** The figures as lines of text, for the bench and the test's output. */
export function formatSoak(r: SoakResult): string[] {
  const t = (name: string, c: TrafficCount) =>
    `${name}: sent ${c.sent}, succeeded ${c.succeeded}, failed unexpectedly ${c.failedUnexpectedly}, denied as expected ${c.deniedAsExpected}${Object.keys(c.errors).length ? ` (errors ${JSON.stringify(c.errors)})` : ''}`;
  const exact = r.streams.filter((s) => s.sha256Match).length;
  const rotated = Object.values(r.certificatesRotated).filter(Boolean).length;
  return [
    `soak ${r.durationSeconds} s, certificates --cert-ttl ${r.certTtlSeconds}s`,
    t('L4 connections client → echo (cross-node)', r.l4),
    t('HTTP requests through the waypoint', r.http),
    t('DENY-targeted client connections', r.denyClient),
    `long streams (${STREAM_SECONDS} s each, sha256-checked): ${exact}/${r.streams.length} exact, ${r.streams.reduce((a, s) => a + s.sent, 0)} bytes sent`,
    `churn: ${r.churn.podsAdded} pods added, ${r.churn.podsRemoved} removed, ${r.churn.certificatesSeen} churn certificates seen ready, ${r.churn.configWrites} config writes; DENY toggled ${r.denyToggles} times`,
    `CA restarted: ${r.caRestarted}; agent node-a upgraded: ${r.agentUpgraded}; certificates rotated: ${rotated}/${Object.keys(r.certificatesRotated).length}`,
    ...r.processes.end.map((e) => {
      const s = r.processes.start.find((x) => x.name === e.name);
      const w = r.processes.warm.find((x) => x.name === e.name);
      const g = r.growthAfterWarmup[e.name];
      const f = (p?: ProcessSample) => (p ? `${Math.round(p.rssKiB / 1024)} MiB/${p.fds} fds` : '-');
      return `${e.name}: start ${f(s)}, warm ${f(w)}, end ${f(e)}${g ? ` (after warm-up: RSS ${g.rssPct}%, fds ${g.fdPct}%)` : ''}`;
    }),
    `metrics: istio_tcp_connections_opened_total (node-b, destination, l4client) +${r.metrics.l4ConnectionsOpened} vs client ${r.metrics.l4ClientConnections} (round trips + streams); waypoint istio_requests_total (hclient) +${r.metrics.httpRequests} vs client ${r.metrics.httpClientRequests}`,
  ];
}
