// L7 policy and fail-closed behaviour of the waypoint in the mesh (issue 6): a DENY on a path
// answers 403 from the waypoint while other paths pass, pods behind the waypoint refuse direct
// dials, and a stopped waypoint fails closed instead of letting traffic bypass it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getScript, startWaypointScenario, until, type WaypointScenario } from './waypoint-fixture.js';

let s: WaypointScenario;

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

type Reply = { status?: number; body?: { pod?: string } | string; error?: string };
const get = async (url: string): Promise<Reply> => JSON.parse(await s.runInClient(getScript(url))) as Reply;

beforeAll(async () => {
  s = await startWaypointScenario();
  await s.setExtra([denyAdmin]);
  await until(async () => (await get(`http://${s.vips.echo}/admin/x`)).status === 403, 15_000);
}, 120_000);

afterAll(async () => {
  await s?.mesh.stop();
});

describe('waypoint policy in the mesh', () => {
  it('an L7 DENY on a path answers 403 while other paths pass', async () => {
    const { vips, mesh, waypoint } = s;
    const denied = await get(`http://${vips.echo}/admin/users`);
    expect(denied.status).toBe(403);
    const allowed = await get(`http://${vips.echo}/public`);
    expect(allowed.status).toBe(200);
    expect((allowed.body as { pod: string }).pod).toMatch(/^echo-v[12]$/);
    const metrics = await mesh.fetchInNode('node-b', `http://${waypoint.pod.ip}:15020/metrics`);
    expect(metrics).toMatch(
      /istio_requests_total\{[^}]*reporter="waypoint"[^}]*response_code="403"[^}]*\} [1-9]/,
    );
  });

  it('dialing a pod behind the waypoint directly is refused (no bypass of L7 policy)', async () => {
    const { pods, vips } = s;
    for (const url of [`http://${pods.echoV1.ip}:8080/admin/users`, `http://${pods.echoV2.ip}:8080/`]) {
      const r = await get(url);
      expect(r.status, `${url} answered ${JSON.stringify(r)}`).toBeUndefined();
      expect(r.error).toBeDefined();
    }
    // The per-version Service is not bound, but its pods are: refused too.
    expect((await get(`http://${vips.v1}/admin/users`)).status).toBeUndefined();
    const refusals = s.mesh
      .accessLogs()
      .filter(
        (e) =>
          e.direction === 'inbound' &&
          String(e.dst_workload).startsWith('echo-v') &&
          e.response_flags !== '-',
      );
    expect(refusals.length).toBeGreaterThan(0);
  });

  it('a TrafficPolicy fault abort answers from the waypoint (flag FI) until it is removed', async () => {
    const { vips, setExtra, waypoint } = s;
    const fault = {
      apiVersion: 'traffic.hypha.dev/v1alpha1',
      kind: 'TrafficPolicy',
      metadata: { name: 'echo-fault', namespace: 'demo' },
      spec: {
        targetRefs: [{ kind: 'Service', name: 'echo' }],
        fault: { abort: { httpStatus: 418, percentage: 100 } },
      },
    };
    await setExtra([denyAdmin, fault]);
    await until(async () => (await get(`http://${vips.echo}/public`)).status === 418, 15_000);
    const r = await get(`http://${vips.echo}/public`);
    expect(r).toEqual({ status: 418, body: 'fault filter abort' });
    await until(
      () => waypoint.events.some((e) => e.response_flags === 'FI' || String(e.response_flags).includes('FI')),
      5000,
    );
    await setExtra([denyAdmin]);
    await until(async () => (await get(`http://${vips.echo}/public`)).status === 200, 15_000);
  }, 60_000);

  it('a stopped waypoint fails closed: requests fail, none reach the pods', async () => {
    const { mesh, vips } = s;
    await mesh.stopWaypoint('demo', 'waypoint');
    const r = (await mesh.cluster.runApp(
      s.pods.client,
      'load-client',
      ['--target', `${vips.echo}:80`, '--connections', '5', '--requests', '2', '--timeout-ms', '3000'],
      30_000,
    )) as { ok: number; failed: number; byPod: Record<string, number> };
    expect(r.ok).toBe(0);
    expect(r.failed).toBe(10);
    expect(r.byPod).toEqual({});
  }, 60_000);
});
