// The waypoint in the mesh (issue 6): client → agent → HBONE → `hypha waypoint` → HBONE → agent → echo,
// on a two-node namespace cluster with real agents, CA and waypoint processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getScript, startWaypointScenario, until, type WaypointScenario } from './waypoint-fixture.js';

let s: WaypointScenario;

const route = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'echo-split', namespace: 'demo' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }],
    rules: [
      {
        matches: [{ headers: [{ name: 'x-canary', value: 'yes' }] }],
        backendRefs: [{ name: 'echo-v2', port: 80 }],
      },
      {
        backendRefs: [
          { name: 'echo-v1', port: 80, weight: 90 },
          { name: 'echo-v2', port: 80, weight: 10 },
        ],
      },
    ],
  },
};

beforeAll(async () => {
  s = await startWaypointScenario();
  await s.setExtra([route]);
  // The route is live once a canary request lands on v2.
  await until(async () => {
    const r = JSON.parse(await s.runInClient(getScript(`http://${s.vips.echo}/`, { 'x-canary': 'yes' })));
    return r.body?.pod === 'echo-v2';
  }, 15_000);
}, 120_000);

afterAll(async () => {
  await s?.mesh.stop();
});

const metricValue = (text: string, name: string, labels: Record<string, string>): number => {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
};

describe('waypoint routing in the mesh', () => {
  it('is ready with its start-up garbage given back to the kernel (the ready line says how much)', async () => {
    const ready = await s.waypoint.waitFor((e) => e.msg === 'ready');
    expect(Number(ready.rss), JSON.stringify(ready)).toBeGreaterThan(0);
    expect(Number(ready.rss)).toBeLessThan(Number(ready.rssBefore) - 2 * 1048576);
  });

  it('splits 90/10 over 2000 requests within 4 sigma, and a header match goes to v2', async () => {
    const { mesh, pods, vips, waypoint } = s;
    const metricsUrl = `http://${waypoint.pod.ip}:15020/metrics`;
    const before = await mesh.fetchInNode('node-b', metricsUrl);
    const n = 2000;
    const r = (await mesh.cluster.runApp(
      pods.client,
      'load-client',
      ['--target', `${vips.echo}:80`, '--connections', '20', '--requests', String(n / 20)],
      90_000,
    )) as { ok: number; failed: number; byPod: Record<string, number>; errors?: unknown };
    expect(r.failed, JSON.stringify(r.errors)).toBe(0);
    const v1 = r.byPod['echo-v1'] ?? 0;
    const v2 = r.byPod['echo-v2'] ?? 0;
    expect(v1 + v2).toBe(n);
    const sigma = Math.sqrt(n * 0.9 * 0.1);
    expect(Math.abs(v1 - 0.9 * n), `v1=${v1} v2=${v2}`).toBeLessThanOrEqual(4 * sigma);

    const canary = JSON.parse(
      await s.runInClient(getScript(`http://${vips.echo}/`, { 'x-canary': 'yes' })),
    ) as { status: number; body: { pod: string } };
    expect(canary.status).toBe(200);
    expect(canary.body.pod).toBe('echo-v2');

    // Metrics: one istio_requests_total per request (reporter=waypoint) with both identities.
    const after = await mesh.fetchInNode('node-b', metricsUrl);
    const labels = {
      reporter: 'waypoint',
      response_code: '200',
      source_principal: `spiffe://${mesh.trustDomain}/ns/demo/sa/client`,
      destination_principal: `spiffe://${mesh.trustDomain}/ns/demo/sa/echo`,
    };
    const delta =
      metricValue(after, 'istio_requests_total', labels) -
      metricValue(before, 'istio_requests_total', labels);
    expect(delta).toBe(n + 1);
  }, 120_000);

  it("the waypoint's upstream connections reach the destination agents with the waypoint's identity", async () => {
    const { mesh } = s;
    const wpId = `spiffe://${mesh.trustDomain}/ns/demo/sa/waypoint`;
    // Pooled upstream connections stay open (access lines come at close): read the live table.
    type Conn = { direction: string; source: { identity?: string }; destination: { workload?: string } };
    const live = JSON.parse(await mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/connections')) as
      | Conn[]
      | { connections: Conn[] };
    const conns = Array.isArray(live) ? live : live.connections;
    const toV1 = conns.filter((c) => c.direction === 'inbound' && c.destination.workload === 'demo/echo-v1');
    expect(toV1.length).toBeGreaterThan(0);
    expect(toV1.filter((c) => c.source.identity !== wpId)).toEqual([]);
  });
});
