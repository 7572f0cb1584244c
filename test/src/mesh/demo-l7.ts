// The demo's L7 half: Service demo/echo is bound to the waypoint startDemo started, an HTTPRoute
// splits it 90/10 over echo-v1/echo-v2 and an AuthorizationPolicy denies /admin. Then, per address
// family, what a user would look for: the split the client observed, the 403 on /admin and which
// policy decided it (from the waypoint's access log: clients are never told), and the waypoint's
// request metrics for the round.
//
// Runs after the L4 checks and the agent upgrade: once the Service is bound, its pods admit only
// the waypoint, so the upgrade check's direct dials to echo-v2 would be refused.
import { DEMO_WAYPOINT, type DemoCheck, type DemoResult } from './demo.js';
import { hostPort, type LogEvent, type WaypointProcess } from './local-mesh.js';

/** What the demo's L7 config adds; the names show up in its report and checks. */
export const DEMO_L7 = {
  route: 'echo-split',
  weights: { v1: 90, v2: 10 },
  policy: 'deny-admin',
  deniedPath: '/admin',
} as const;

/** Requests of the split per family: with v2 at 10 %, outside 3–20 % is a < 1e-7 event. */
const SPLIT_REQUESTS = { connections: 20, perConnection: 20 } as const;
const SPLIT_BOUNDS = { min: 0.03, max: 0.2 } as const;

const CONFIG_HEADER = `# Hypha demo configuration (generated). Edit and save: the agents and the waypoint pick changes up live.
# L7: Service demo/echo is bound to waypoint demo/${DEMO_WAYPOINT.name} (label hypha.dev/use-waypoint);
# HTTPRoute ${DEMO_L7.route} sends ${DEMO_L7.weights.v1}% of its requests to echo-v1 and ${DEMO_L7.weights.v2}% to echo-v2;
# AuthorizationPolicy ${DEMO_L7.policy} (security.hypha.dev/v1, targetRefs) denies ${DEMO_L7.deniedPath}.
`;

/** The split check on its own (exported so a test can show it fails on a wrong split). */
export function checkSplit(r: { v1: number; v2: number; failed: number; requests: number }): boolean {
  const share = r.v2 / r.requests;
  return (
    r.failed === 0 && r.v1 + r.v2 === r.requests && share >= SPLIT_BOUNDS.min && share <= SPLIT_BOUNDS.max
  );
}

/** Binds the echo service to the waypoint with the route and policy, then runs the L7 rounds. */
export async function runL7Demo(demo: DemoResult): Promise<void> {
  const waypoint = demo.waypoint;
  if (waypoint === undefined) throw new Error('the L7 demo needs startDemo(..., { waypoint: true })');
  try {
    await applyL7Config(demo, waypoint);
  } catch (err) {
    // A check that fails, not a crash: the L4 results above still get printed.
    demo.checks.push({
      name: 'the agents and the waypoint applied the L7 config',
      ok: false,
      detail: (err as Error).message.split('\n')[0] ?? '',
    });
    return;
  }
  demo.report.push(
    '',
    `L7: service demo/echo bound to waypoint ${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name} (${waypoint.pod.ips.join(' ')}, ${waypoint.node}); ` +
      `HTTPRoute ${DEMO_L7.route} ${DEMO_L7.weights.v1}/${DEMO_L7.weights.v2} over echo-v1/echo-v2, AuthorizationPolicy ${DEMO_L7.policy} denies ${DEMO_L7.deniedPath}`,
  );
  if (demo.ipFamilies !== 'ipv6') await runL7Round(demo, waypoint, { label: '', vip: demo.vip, first: true });
  if (demo.ipFamilies !== 'ipv4') {
    await runL7Round(demo, waypoint, {
      label: ' (IPv6)',
      vip: demo.vip6 ?? demo.vip,
      first: demo.ipFamilies === 'ipv6',
    });
  }
}

/** Writes the L7 objects and resolves once every agent and the waypoint applied them. */
async function applyL7Config(demo: DemoResult, waypoint: WaypointProcess): Promise<void> {
  const { mesh } = demo;
  const base = mesh.configObjects;
  if (base === undefined) throw new Error('the demo config must be written as objects');
  const service = (name: string, version: string) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'demo' },
    spec: {
      clusterIP: mesh.cluster.allocateServiceIp(),
      selector: { app: 'echo', version },
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    },
  });
  const objects = [
    ...base.map((o) => {
      const obj = o as { kind?: string; metadata?: { name?: string; namespace?: string; labels?: object } };
      if (obj.kind !== 'Service' || obj.metadata?.name !== 'echo' || obj.metadata.namespace !== 'demo')
        return o;
      const labels = { ...obj.metadata.labels, 'hypha.dev/use-waypoint': DEMO_WAYPOINT.name };
      return { ...obj, metadata: { ...obj.metadata, labels } };
    }),
    // The route's backends: one Service per version (they need no waypoint binding of their own).
    service('echo-v1', 'v1'),
    service('echo-v2', 'v2'),
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: DEMO_L7.route, namespace: 'demo' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }],
        rules: [
          {
            backendRefs: [
              { name: 'echo-v1', port: 80, weight: DEMO_L7.weights.v1 },
              { name: 'echo-v2', port: 80, weight: DEMO_L7.weights.v2 },
            ],
          },
        ],
      },
    },
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: DEMO_L7.policy, namespace: 'demo' },
      spec: {
        targetRefs: [{ group: '', kind: 'Service', name: 'echo' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: [DEMO_L7.deniedPath, `${DEMO_L7.deniedPath}/*`] } }] }],
      },
    },
  ];
  const processes = [...mesh.agents.values(), waypoint];
  const before = processes.map((p) => p.events.length);
  await mesh.writeConfig(objects, { header: CONFIG_HEADER });
  // Each process logs `config applied` per change it applies; the first one after the write has it
  // (the file is replaced whole, so no process sees half of it).
  await Promise.all(
    processes.map((p, i) =>
      p.waitFor(
        (e) =>
          typeof e.msg === 'string' &&
          e.msg.startsWith('config applied') &&
          p.events.indexOf(e) >= (before[i] ?? 0),
        10_000,
      ),
    ),
  );
}

type LoadResult = { ok: number; failed: number; byPod: Record<string, number>; errors?: unknown };

/** One L7 round over one address family: split, denied path, metrics. */
async function runL7Round(
  demo: DemoResult,
  waypoint: WaypointProcess,
  family: { label: string; vip: string; first: boolean },
): Promise<void> {
  const { mesh, pods } = demo;
  const target = hostPort(family.vip, 80);
  const metricsUrl = `http://${hostPort(waypoint.pod.ip, 15020)}/metrics`;
  const fetchCounts = async () => requestCounts(await mesh.fetchInNode(DEMO_WAYPOINT.node, metricsUrl));
  const countsBefore = await fetchCounts();
  const logStart = waypoint.events.length;
  const report: string[] = [];
  const checks: DemoCheck[] = [];

  // The split, as the client sees it: which pod answered each request.
  const requests = SPLIT_REQUESTS.connections * SPLIT_REQUESTS.perConnection;
  const split = (await mesh.cluster.runApp(pods.client, 'load-client', [
    '--target',
    target,
    '--connections',
    String(SPLIT_REQUESTS.connections),
    '--requests',
    String(SPLIT_REQUESTS.perConnection),
  ])) as LoadResult;
  const v1 = split.byPod['echo-v1'] ?? 0;
  const v2 = split.byPod['echo-v2'] ?? 0;
  const pct = (n: number) => `${((100 * n) / requests).toFixed(1)}%`;
  report.push(
    `client → echo service (${target}) through the waypoint, ${SPLIT_REQUESTS.connections} connections x ${SPLIT_REQUESTS.perConnection} HTTP requests`,
  );
  report.push(
    `  ${requests} requests: v1 ${v1} (${pct(v1)}), v2 ${v2} (${pct(v2)})${split.failed > 0 ? `, ${split.failed} failed ${JSON.stringify(split.errors ?? {})}` : ''}`,
  );
  checks.push({
    name: `waypoint splits ${DEMO_L7.weights.v1}/${DEMO_L7.weights.v2}: v2 between ${SPLIT_BOUNDS.min * 100}% and ${SPLIT_BOUNDS.max * 100}% of ${requests} requests${family.label}`,
    ok: checkSplit({ v1, v2, failed: split.failed, requests }),
    detail: `v1=${v1} v2=${v2} failed=${split.failed}${split.failed > 0 ? ` errors=${JSON.stringify(split.errors)}` : ''}`,
  });

  // The denied path: the client gets a bare 403; the waypoint's access log names the policy.
  const url = `http://${target}${DEMO_L7.deniedPath}`;
  const denied = await fetchFromClient(demo, url);
  const deniedLine = await waypoint
    .waitFor(
      (e) =>
        e.component === 'access' && e.path === DEMO_L7.deniedPath && waypoint.events.indexOf(e) >= logStart,
      5000,
    )
    .catch((): LogEvent | undefined => undefined);
  const policy = deniedLine?.authz_policy;
  const expectedPolicy = `demo/${DEMO_L7.policy}`;
  const leaked = JSON.stringify(denied).includes(DEMO_L7.policy);
  report.push(
    `client → GET ${url}: ${denied.status ?? denied.error} ${JSON.stringify(denied.body ?? '')}${leaked ? ' (the response names the policy!)' : ' (the response does not name the policy)'}`,
  );
  report.push(
    `  the waypoint's access log: ${
      deniedLine
        ? `${deniedLine.method} ${deniedLine.path} response_code=${deniedLine.response_code} authz_policy=${String(policy ?? '-')}`
        : '(no line)'
    }`,
  );
  checks.push({
    name: `waypoint denies ${DEMO_L7.deniedPath} with 403, logged with AuthorizationPolicy ${expectedPolicy}${family.label}`,
    ok: denied.status === 403 && deniedLine?.response_code === 403 && policy === expectedPolicy && !leaked,
    detail: `status=${denied.status ?? denied.error} logged=${JSON.stringify(deniedLine ?? null)}${leaked ? ' (the response names the policy)' : ''}`,
  });

  // The waypoint's metrics for this round: every request, by response code and version.
  const want = v1 + v2 + (denied.status === 403 ? 1 : 0);
  let delta = new Map<string, number>();
  const sum = (pick: (key: string) => boolean) =>
    [...delta].filter(([k]) => pick(k)).reduce((a, [, n]) => a + n, 0);
  // Counters move when a request ends, which may be a moment after the client has its answer.
  const deadline = Date.now() + 3000;
  for (;;) {
    const now = await fetchCounts();
    delta = new Map([...now].map(([k, n]) => [k, n - (countsBefore.get(k) ?? 0)]));
    delta = new Map([...delta].filter(([, n]) => n !== 0));
    if (sum(() => true) >= want || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  report.push(`waypoint metrics for these requests (${metricsUrl}):`);
  for (const [key, n] of [...delta].sort()) {
    const [code, version] = key.split(' ');
    report.push(
      `  istio_requests_total{reporter="waypoint",response_code="${code}",destination_version="${version}"} +${n}`,
    );
  }
  // 200s by the version that answered; the 403 has no destination workload (no version to check).
  const counted =
    delta.get('200 v1') === v1 &&
    delta.get('200 v2') === v2 &&
    sum((k) => k.startsWith('403 ')) === 1 &&
    sum(() => true) === want;
  checks.push({
    name: `waypoint metrics counted every request by response code and version${family.label}`,
    ok: counted && denied.status === 403,
    detail: `expected 200 v1=${v1}, 200 v2=${v2}, 403=1; counted ${JSON.stringify(Object.fromEntries(delta))}`,
  });

  // Rounds after the first (IPv6 in a dual-stack demo) stand apart; the first follows the heading.
  demo.report.push(...(family.first ? [] : ['']), ...report);
  demo.checks.push(...checks);
}

/** `istio_requests_total` of reporter="waypoint", summed by "response_code destination_version". */
function requestCounts(metrics: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('istio_requests_total{')) continue;
    const end = line.lastIndexOf('}');
    const labels = new Map(
      [...line.slice(0, end).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (labels.get('reporter') !== 'waypoint') continue;
    const key = `${labels.get('response_code') ?? '-'} ${labels.get('destination_version') ?? 'unknown'}`;
    counts.set(key, (counts.get(key) ?? 0) + Number(line.slice(end + 1).trim()));
  }
  return counts;
}

interface Reply {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  error?: string;
}

/** One GET from the client pod: status, headers and body as the client got them. */
async function fetchFromClient(demo: DemoResult, url: string): Promise<Reply> {
  const script = `fetch(${JSON.stringify(url)}).then(async r=>{process.stdout.write(JSON.stringify({status:r.status,headers:Object.fromEntries(r.headers),body:await r.text()}))}).catch(e=>{process.stdout.write(JSON.stringify({error:String(e.cause?.code??e.message)}))})`;
  const r = await demo.mesh.cluster.exec(demo.pods.client.netns, process.execPath, ['-e', script]);
  try {
    return JSON.parse(r.stdout) as Reply;
  } catch {
    return { error: `no answer (${r.stdout.slice(0, 200)})` };
  }
}
