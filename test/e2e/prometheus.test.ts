// A real Prometheus (Debian's package) scrapes every agent and the waypoint of a two-node mesh;
// the test sends a known number of requests and connections, then asks Prometheus the PromQL that
// Kiali's graph and Istio's Grafana dashboards ask for these metric names. Counters must answer
// exactly what the test sent: raw counter sums, not increase() (which extrapolates). Also runs
// `promtool check metrics` on every endpoint and checks that each metric has one HELP and TYPE
// across agents and waypoints.
//
//   node-a: agent, client, echo-v1, monitoring/prometheus-0 (scrapes the agents and the waypoint
//           every 1 s with the Kubernetes job docs/operations.md documents, discovery stood in for)
//   node-b: agent, echo-v2, db (bytes server, plain L4 over mTLS), waypoint demo/waypoint
//   client → echo VIP → waypoint → echo-v1 | echo-v2        (istio_requests_total, reporter=waypoint)
//   client → db:9000 (pod IP, no waypoint)                   (istio_tcp_*, reporters source/destination)
import { readFileSync } from 'node:fs';
import {
  kubernetesPodTargets,
  meshScrapeTargets,
  type PodAnnotations,
  type PrometheusServer,
  promtoolCheckMetrics,
  startPrometheus,
} from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { startWaypointScenario, type WaypointScenario } from './waypoint-fixture.js';

const BYTES_PORT = 9000;
const CLIENT_SENDS = 30_011;
const SERVER_SENDS = 70_003;
const ECHO_SERVICE = 'echo.demo.svc.cluster.local';
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';
const DB_ID = 'spiffe://cluster.local/ns/demo/sa/db';

const denyAdmin = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-admin', namespace: 'demo' },
  spec: {
    targetRefs: [{ kind: 'Service', group: '', name: 'echo' }],
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
  },
};

/**
 * What promtool says that stays, and why. Everything else it prints fails the test.
 * - prom-client's default Node.js metrics name three gauges *_total; they are prom-client's names,
 *   which Node.js dashboards query.
 * - Istio's request duration histogram is in milliseconds by name; Istio's Grafana dashboards and
 *   Kiali query istio_request_duration_milliseconds_bucket, and reading them unchanged is the point.
 */
const EXEMPT = [
  /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/,
  /^istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"$/,
];

let s: WaypointScenario;
let prom: PrometheusServer | undefined;

beforeAll(async () => {
  s = await startWaypointScenario({
    extraPods: [{ node: 'node-b', name: 'db', labels: { app: 'db', version: 'v1' }, serviceAccount: 'db' }],
    // The DNS proxy's metrics are part of the agents' endpoint too. Names outside the mesh would go
    // to the node's loopback, where nothing answers: nothing leaves the run's namespaces.
    agentArgs: ['--dns-proxy', '--dns-upstream', '127.0.0.1'],
  });
  const version = (e: Record<string, unknown>) => (e.msg === 'config applied' ? Number(e.version) : 0);
  const before = Math.max(0, ...s.waypoint.events.map(version));
  await s.setExtra([denyAdmin]);
  await s.waypoint.waitFor((e) => version(e) > before, 15_000);
  await s.mesh.cluster.startApp(s.extraPods.db!, 'bytes', [
    'serve',
    '--port',
    String(BYTES_PORT),
    '--send',
    String(SERVER_SENDS),
  ]);
  prom = await startPrometheus(s.mesh, {
    scrapeConfigs: [documentedScrapeJob()],
    targets: meshScrapeTargets(s.mesh), // the agents and the waypoint must come up; nothing else
  });
}, 120_000);

afterAll(async () => {
  await prom?.stop();
  await s?.mesh.stop();
});

const ROOT = new URL('../../', import.meta.url);

/** `spec.template.metadata.annotations` of the first `kind` object in a manifest file. */
function podAnnotations(file: string, kind: string): PodAnnotations {
  const docs = parseAllDocuments(readFileSync(new URL(file, ROOT), 'utf8')).map((d) => d.toJS());
  const o = docs.find((d) => d?.kind === kind) as {
    spec: { template: { metadata: { annotations: PodAnnotations } } };
  };
  return o.spec.template.metadata.annotations;
}

/**
 * The scrape job docs/operations.md documents for Kubernetes, run unchanged but for discovery:
 * static targets carry what pod discovery would (pod IP, namespace, name, node, and the annotations
 * of the agent and waypoint manifests), plus the db pod, which has no annotations and must be
 * dropped. Debian's prometheus is built without Kubernetes discovery, and there is no API server.
 */
function documentedScrapeJob(): Record<string, unknown> {
  const text = readFileSync(new URL('docs/operations.md', ROOT), 'utf8');
  const block = /<!-- prometheus-kubernetes-config -->\n```yaml\n([\s\S]*?)```/.exec(text)?.[1];
  if (block === undefined) throw new Error('docs/operations.md lost its prometheus-kubernetes-config block');
  const config = parse(block) as { scrape_configs: Record<string, unknown>[] };
  const { kubernetes_sd_configs: sd, ...job } = config.scrape_configs[0]!;
  expect(sd).toEqual([{ role: 'pod' }]);
  const db = s.extraPods.db!;
  return {
    ...job,
    static_configs: [
      ...kubernetesPodTargets(s.mesh, {
        agent: podAnnotations('manifests/base/agent.yaml', 'DaemonSet'),
        waypoint: podAnnotations('manifests/waypoint/waypoint.yaml', 'Deployment'),
      }),
      {
        targets: [db.ip],
        labels: {
          __meta_kubernetes_namespace: 'demo',
          __meta_kubernetes_pod_name: db.name,
          __meta_kubernetes_pod_node_name: db.node,
        },
      },
    ],
  };
}

/** What the test sent, tallied from what the clients saw. */
const sent = { byPod: {} as Record<string, number>, denied: 0, l4: 0, dns: 0 };

async function sendHttp(connections: number, requests: number): Promise<void> {
  const r = (await s.mesh.cluster.runApp(s.pods.client, 'load-client', [
    '--target',
    `${s.vips.echo}:80`,
    '--connections',
    String(connections),
    '--requests',
    String(requests),
  ])) as { ok: number; failed: number; byPod: Record<string, number>; errors: unknown };
  expect(r.failed, JSON.stringify(r.errors)).toBe(0);
  for (const [pod, n] of Object.entries(r.byPod)) sent.byPod[pod] = (sent.byPod[pod] ?? 0) + n;
}

async function sendDenied(n: number): Promise<void> {
  const script = `(async()=>{const out=[];for(let i=0;i<${n};i++){const r=await fetch('http://${s.vips.echo}/admin/users');await r.text();out.push(r.status)}process.stdout.write(JSON.stringify(out))})()`;
  const statuses = JSON.parse(await s.runInClient(script)) as number[];
  expect(statuses).toEqual(Array(n).fill(403));
  sent.denied += n;
}

async function sendTcp(connections: number): Promise<void> {
  for (let i = 0; i < connections; i++) {
    const r = (await s.mesh.cluster.runApp(s.pods.client, 'bytes', [
      'send',
      '--target',
      `${s.extraPods.db!.ip}:${BYTES_PORT}`,
      '--bytes',
      String(CLIENT_SENDS),
    ])) as { sent: number; received: number };
    expect([r.sent, r.received]).toEqual([CLIENT_SENDS, SERVER_SENDS]);
    sent.l4++;
  }
}

/** DNS queries for the echo Service from the client pod: the agent's DNS proxy answers them. */
async function sendDns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    // The server address does not matter: the agent captures mesh pods' port 53.
    const r = await s.mesh.cluster.exec(s.pods.client.netns, 'dig', [
      '+tries=1',
      '+time=3',
      '+short',
      `@${s.vips.echo}`,
      ECHO_SERVICE,
    ]);
    expect(r.stdout.trim()).toBe(s.vips.echo);
    sent.dns++;
  }
}

/**
 * Waits until the mesh has recorded everything sent so far (agents account a connection at its
 * close, the waypoint a request at its end: both log an access line then), then until Prometheus
 * has scraped every endpoint after that.
 */
async function settleAndScrape(): Promise<void> {
  const requests = Object.values(sent.byPod).reduce((a, b) => a + b, 0) + sent.denied;
  const dbLines = () => s.mesh.accessLogs().filter((e) => e.dst === `${s.extraPods.db!.ip}:${BYTES_PORT}`);
  const waypointLines = () =>
    s.waypoint.events.filter((e) => e.component === 'access' && typeof e.response_code === 'number');
  const deadline = Date.now() + 15_000;
  while (dbLines().length < 2 * sent.l4 || waypointLines().length < requests) {
    if (Date.now() > deadline) {
      throw new Error(
        `the mesh logged ${dbLines().length} of ${2 * sent.l4} L4 access lines and ${waypointLines().length} of ${requests} waypoint requests`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await prom!.waitForScrapesAfter(Date.now());
}

describe('a real Prometheus scraping the mesh', () => {
  it('The PromQL answers of a real Prometheus scrape match the counts the test sent', async () => {
    const p = prom!;
    // Two rounds with a scrape between, so rate() over the window sees the counters grow, as it
    // does on a dashboard watching live traffic.
    await sendHttp(4, 5);
    await sendTcp(1);
    await settleAndScrape();
    await sendHttp(4, 5);
    await sendDenied(3);
    await sendTcp(2);
    await sendDns(2);
    await settleAndScrape();

    const total200 = Object.values(sent.byPod).reduce((a, b) => a + b, 0);
    expect(total200).toBe(40);
    expect(Object.keys(sent.byPod).sort()).toEqual(['echo-v1', 'echo-v2']);

    // The documented job found the agents and the waypoint (not the db pod, which has no
    // annotations) at :15020/metrics; every target is up, and Prometheus kept every sample.
    const up = await p.query('up');
    expect(
      up
        .map((u) => `${u.metric.job} ${u.metric.namespace}/${u.metric.pod} ${u.metric.instance} ${u.value}`)
        .sort(),
    ).toEqual(
      [
        `hypha hypha-system/hypha-agent-node-a ${s.mesh.cluster.node('node-a').ip}:15020 1`,
        `hypha hypha-system/hypha-agent-node-b ${s.mesh.cluster.node('node-b').ip}:15020 1`,
        `hypha demo/${s.waypoint.pod.name} ${s.waypoint.pod.ip}:15020 1`,
      ].sort(),
    );
    const own = (await p.fetchText('/metrics')).split('\n');
    for (const rejected of [
      'prometheus_target_scrapes_sample_duplicate_timestamp_total',
      'prometheus_target_scrapes_sample_out_of_order_total',
      'prometheus_target_scrapes_sample_out_of_bounds_total',
      'prometheus_target_scrapes_exceeded_sample_limit_total',
    ]) {
      expect(own, rejected).toContain(`${rejected} 0`);
    }

    // Kiali's graph (ambient, waypoint-reported edges): requests by source, destination and code.
    const edges = await p.query(
      `sum by (source_workload, destination_workload, response_code) (istio_requests_total{reporter="waypoint",destination_service="${ECHO_SERVICE}"})`,
    );
    const byEdge = Object.fromEntries(
      edges.map((e) => [
        `${e.metric.source_workload} -> ${e.metric.destination_workload} ${e.metric.response_code}`,
        e.value,
      ]),
    );
    expect(byEdge).toEqual({
      'client -> echo-v1 200': sent.byPod['echo-v1'],
      'client -> echo-v2 200': sent.byPod['echo-v2'],
      'client -> unknown 403': sent.denied,
    });

    // Istio service dashboard: request volume (as a raw count), success rate, latency quantiles.
    const svc = `reporter="waypoint",destination_service="${ECHO_SERVICE}"`;
    expect(await p.value(`sum(istio_requests_total{${svc}})`)).toBe(total200 + sent.denied);
    expect(
      await p.value(`sum(istio_requests_total{${svc},destination_workload=~"echo-v.*",response_code="200"})`),
    ).toBe(total200);
    expect(
      await p.value(
        `sum(istio_requests_total{${svc},response_code!~"5.*"}) / sum(istio_requests_total{${svc}})`,
      ),
    ).toBe(1);
    expect(await p.value(`sum(istio_request_duration_milliseconds_count{${svc}})`)).toBe(
      total200 + sent.denied,
    );
    expect(await p.value(`sum(rate(istio_requests_total{${svc}}[1m]))`)).toBeGreaterThan(0);
    for (const q of [0.5, 0.9, 0.99]) {
      const v = await p.value(
        `histogram_quantile(${q}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{${svc}}[1m])))`,
      );
      expect(Number.isFinite(v) && v! > 0, `p${q * 100} = ${v}`).toBe(true);
    }
    expect(await p.value(`sum(istio_response_bytes_count{${svc},response_code="200"})`)).toBe(total200);

    // Istio workload dashboard and Kiali's TCP edges: connections and bytes, both reporters, exact.
    for (const reporter of ['source', 'destination']) {
      const tcp = `reporter="${reporter}",source_workload="client",destination_workload="db",destination_workload_namespace="demo"`;
      const exact = async (name: string) => p.value(`sum(${name}{${tcp}})`);
      expect(await exact('istio_tcp_connections_opened_total'), reporter).toBe(sent.l4);
      expect(await exact('istio_tcp_connections_closed_total'), reporter).toBe(sent.l4);
      // Istio's names: received = request direction (client → server), sent = response direction.
      expect(await exact('istio_tcp_received_bytes_total'), reporter).toBe(sent.l4 * CLIENT_SENDS);
      expect(await exact('istio_tcp_sent_bytes_total'), reporter).toBe(sent.l4 * SERVER_SENDS);
      expect(await exact('istio_tcp_connections_failed_total'), reporter).toBeUndefined();
      expect(await p.value(`sum(rate(istio_tcp_sent_bytes_total{${tcp}}[1m]))`)).toBeGreaterThan(0);
    }
    // The agents' DNS proxy: answers from mesh state, by query type and response code.
    expect(await p.query('sum by (type, rcode) (hypha_dns_requests_total{source="mesh"})')).toEqual([
      { metric: { type: 'A', rcode: 'NOERROR' }, value: sent.dns },
    ]);

    // One pod, one workload name, whoever reports it: the waypoint's request metrics and the
    // agents' connection metrics for the waypoint's upstream connections name echo-v1 and echo-v2
    // alike (Kiali joins them into one graph node per workload).
    const names = async (expr: string) =>
      (await p.query(expr)).map((r) => r.metric.destination_workload).sort();
    expect(
      await names(`group by (destination_workload) (istio_requests_total{${svc},response_code="200"})`),
    ).toEqual(['echo-v1', 'echo-v2']);
    expect(
      await names(
        'group by (destination_workload) (istio_tcp_connections_opened_total{reporter="destination",destination_app="echo"})',
      ),
    ).toEqual(['echo-v1', 'echo-v2']);

    // The waypoint's hop to the pods is an edge from the waypoint's workload (the agents report
    // it as the source, with its identity), not from "unknown".
    const hops = await p.query(
      'sum by (source_workload, source_workload_namespace, source_principal, destination_workload) (istio_tcp_connections_opened_total{reporter="destination",destination_app="echo"})',
    );
    expect(
      hops
        .map(
          (h) =>
            `${h.metric.source_workload_namespace}/${h.metric.source_workload} ${h.metric.source_principal} -> ${h.metric.destination_workload}`,
        )
        .sort(),
    ).toEqual(
      ['echo-v1', 'echo-v2'].map(
        (pod) => `demo/${s.waypoint.pod.name} spiffe://cluster.local/ns/demo/sa/waypoint -> ${pod}`,
      ),
    );

    // Kiali's mTLS lock on the edge, and the identities on it.
    const security = await p.query(
      'sum by (connection_security_policy, source_principal, destination_principal) (istio_tcp_connections_opened_total{reporter="destination",destination_workload="db"})',
    );
    expect(security).toEqual([
      {
        metric: {
          connection_security_policy: 'mutual_tls',
          source_principal: CLIENT_ID,
          destination_principal: DB_ID,
        },
        value: sent.l4,
      },
    ]);
  });

  it('every metric has one HELP and TYPE across agents and waypoints, and says which way bytes go', async () => {
    const p = prom!;
    const body = JSON.parse(await p.fetchText('/api/v1/metadata')) as {
      data: Record<string, { type: string; help: string }[]>;
    };
    const ours = Object.entries(body.data).filter(([name]) => /^(istio|hypha)_/.test(name));
    expect(ours.length).toBeGreaterThan(10);
    const conflicting = ours.filter(([, entries]) => entries.length !== 1);
    expect(conflicting).toEqual([]);
    // Istio: sent bytes are the response (server → client), received bytes the request.
    expect(body.data.istio_tcp_sent_bytes_total?.[0]?.help).toMatch(/response.*server to client/);
    expect(body.data.istio_tcp_received_bytes_total?.[0]?.help).toMatch(/request.*client to server/);
  });

  it('promtool check metrics finds nothing wrong in any endpoint', async () => {
    const endpoints = [
      ...['node-a', 'node-b'].map((node) => ({ name: `agent ${node}`, node, host: '127.0.0.1' })),
      { name: 'waypoint demo/waypoint', node: 'node-b', host: s.waypoint.pod.ip },
    ];
    for (const e of endpoints) {
      const text = await s.mesh.fetchInNode(e.node, `http://${e.host}:15020/metrics`);
      // The families under test are in the exposition: L4 and DNS (agents), L7 (waypoint).
      for (const family of e.name.startsWith('agent')
        ? ['istio_tcp_sent_bytes_total', 'hypha_dns_requests_total', 'hypha_authz_dry_run_total']
        : ['istio_requests_total', 'istio_request_duration_milliseconds', 'hypha_authz_dry_run_total']) {
        expect(text, e.name).toContain(`# TYPE ${family} `);
      }
      const complaints = await promtoolCheckMetrics(text);
      expect(
        complaints.filter((c) => !EXEMPT.some((x) => x.test(c))),
        e.name,
      ).toEqual([]);
    }
  });
});
