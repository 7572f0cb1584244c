// The agent's lifecycle as a zero-trust mesh must have it (issue 11), on the namespace cluster:
// - stopping an agent (SIGTERM or SIGKILL) fails closed: a client that policy denies is still
//   refused, nothing it sends reaches the wire, and a restarted agent adopts the rules;
// - an upgrade hands the listening sockets to the new agent: under steady load no connection fails
//   and no long-lived stream is cut;
// - a new agent that dies mid-hand-off leaves the old one serving;
// - `hypha agent cleanup` removes every rule.
import { randomBytes } from 'node:crypto';
import { demoConfigObjects } from '@hypha/shared/config';
import type { ClusterPod } from '@hypha/test';
import { eventually, type LocalMesh, LocalMesh as Mesh } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const NODES = ['node-a', 'node-b'] as const;
let mesh: LocalMesh;
let pods: Record<'client' | 'echoV1' | 'echoV2', ClusterPod>;
let vip: string;

function config(extra: Record<string, unknown>[] = []): Record<string, unknown>[] {
  return [
    ...demoConfigObjects({
      nodes: { a: 'node-a', b: 'node-b' },
      ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: '192.0.2.1' },
      echoVip: vip,
      echoPort: 8080,
      servicePort: 80,
    }),
    ...extra,
  ];
}

const DENY_CLIENT = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-client', namespace: 'demo' },
  spec: {
    selector: { matchLabels: { app: 'echo' } },
    action: 'DENY',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }] }],
  },
};

beforeAll(async () => {
  mesh = await Mesh.create({ nodes: NODES, drainTimeout: '60s' });
  pods = {
    client: await mesh.addPod('node-a', 'client', 'demo'),
    echoV1: await mesh.addPod('node-a', 'echo-v1', 'demo'),
    echoV2: await mesh.addPod('node-b', 'echo-v2', 'demo'),
  };
  vip = mesh.cluster.allocateServiceIp();
  await mesh.writeConfig(config());
  await Promise.all([
    mesh.cluster.startApp(pods.echoV1, 'tcp-echo', ['--port', '8080']),
    mesh.cluster.startApp(pods.echoV2, 'tcp-echo', ['--port', '8080']),
  ]);
  await mesh.startAgents();
}, 120_000);

afterAll(async () => {
  await mesh?.stop();
});

/** From the client pod: connect, send `marker`, and say whether it came back (served) or why not. */
async function sendMarker(
  ip: string,
  port: number,
  marker: string,
): Promise<{ echoed: boolean; error?: string }> {
  const script = `
    const s = require('node:net').connect({ host: ${JSON.stringify(ip)}, port: ${port} });
    let got = '';
    const done = (r) => { process.stdout.write(JSON.stringify(r)); s.destroy(); process.exit(0); };
    setTimeout(() => done({ echoed: false, error: 'TIMEOUT' }), 3000);
    s.on('connect', () => s.write(${JSON.stringify(marker)}));
    s.on('data', (d) => { got += d; if (got.includes(${JSON.stringify(marker)})) done({ echoed: true }); });
    s.on('error', (e) => done({ echoed: false, error: e.code || e.message }));
    s.on('close', () => done({ echoed: false, error: 'CLOSED' }));`;
  const r = await mesh.cluster.exec(pods.client.netns, process.execPath, ['-e', script]);
  return JSON.parse(r.stdout) as { echoed: boolean; error?: string };
}

async function captureRules(
  node: string,
): Promise<{ tables: number; rules: number; set: string[]; ipRules: number }> {
  const netns = mesh.cluster.node(node).netns;
  const tables = (await mesh.cluster.exec(netns, 'nft', ['list', 'tables'])).stdout
    .split('\n')
    .filter((l) => l.trim() === 'table inet hypha').length;
  const ipRules = (await mesh.cluster.exec(netns, 'ip', ['-4', 'rule', 'show'])).stdout
    .split('\n')
    .filter((l) => /fwmark 0x111 lookup 111/.test(l)).length;
  if (tables === 0) return { tables, rules: 0, set: [], ipRules };
  const r = await mesh.cluster.exec(netns, 'nft', ['-j', 'list', 'table', 'inet', 'hypha']);
  const items = (JSON.parse(r.stdout) as { nftables: Record<string, { name?: string; elem?: unknown[] }>[] })
    .nftables;
  const set = items.find((i) => i.set?.name === 'mesh_pods')?.set?.elem ?? [];
  return { tables, rules: items.filter((i) => i.rule !== undefined).length, set: set.map(String), ipRules };
}

async function writeAndWait(
  objects: Record<string, unknown>[],
  probe: () => Promise<boolean>,
): Promise<void> {
  await mesh.writeConfig(objects);
  await eventually(probe, (ok) => ok, 15_000);
}

describe('agent stop fails closed', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`${signal} to node-a's agent: the denied client stays refused, nothing reaches the wire, the restarted agent adopts the rules`, async () => {
      const marker = `HYPHA-MARKER-${signal}-${randomBytes(6).toString('hex')}`;
      await writeAndWait(
        config([DENY_CLIENT]),
        async () => !(await sendMarker(pods.echoV2.ip, 8080, 'probe')).echoed,
      );
      expect((await sendMarker(vip, 80, marker)).echoed).toBe(false);
      const before = await captureRules('node-a');
      expect(before.set).toContain(pods.client.ip);

      const fabric = await mesh.cluster.startFabricCapture('tcp');
      const nodeLinks = await mesh.cluster.startCapture(mesh.cluster.node('node-a').netns, 'tcp');
      const agent = mesh.agents.get('node-a')!;
      const exited = new Promise<void>((r) => agent.process.once('exit', () => r()));
      agent.process.kill(signal);
      await exited;

      // No agent on node-a: its pods' connections are refused, to every kind of destination.
      const attempts = [
        await sendMarker(vip, 80, marker),
        await sendMarker(pods.echoV1.ip, 8080, marker),
        await sendMarker(pods.echoV2.ip, 8080, marker),
      ];
      for (const a of attempts) expect(a).toMatchObject({ echoed: false });
      const during = await captureRules('node-a');
      expect(during).toEqual(before);
      const wire = Buffer.concat([await fabric.stop(), await nodeLinks.stop()]);
      expect(wire.includes(marker)).toBe(false);

      // Back: the new agent adopts the table (one copy, same members), policy still holds.
      await mesh.startAgent('node-a');
      const after = await captureRules('node-a');
      expect(after).toEqual({ ...before, tables: 1, ipRules: 1 });
      expect((await sendMarker(vip, 80, marker)).echoed).toBe(false);

      // Allowed again: served, and the capture does see the marker when it flows (the check above
      // could have failed).
      await writeAndWait(config(), async () => (await sendMarker(pods.echoV2.ip, 8080, 'probe')).echoed);
      const control = await mesh.cluster.startCapture(mesh.cluster.node('node-a').netns, 'tcp');
      expect(await sendMarker(pods.echoV2.ip, 8080, marker)).toEqual({ echoed: true });
      expect((await control.stop()).includes(marker)).toBe(true);
    }, 90_000);
  }
});

/**
 * churn-client from the client pod against the echo VIP. A connection is failed when refused, reset
 * or cut; a slow one on a busy machine is not (the bench reports stalls): hence the generous
 * per-connection timeout.
 */
function churn(rate: number, long: number, durationMs: number, timeoutMs: number) {
  return mesh.cluster.runApp(
    pods.client,
    'churn-client',
    [
      '--target',
      `${vip}:80`,
      '--rate',
      String(rate),
      '--long',
      String(long),
      '--duration-ms',
      String(durationMs),
      '--timeout-ms',
      '20000',
    ],
    timeoutMs,
  );
}

describe('agent upgrade (socket hand-off)', () => {
  it('replacing both agents under 200 new connections/s and 20 long-lived streams fails nothing', async () => {
    const run = churn(200, 20, 12000, 90_000);
    await new Promise((r) => setTimeout(r, 2500));
    const a = await mesh.upgradeAgent('node-a');
    const b = await mesh.upgradeAgent('node-b');
    const result = (await run) as {
      short: { started: number; ok: number; failed: number; maxConnectMs: number };
      long: { count: number; ok: number; failed: number; mismatched: number; unfinished: number };
      errors: Record<string, number>;
    };
    expect(result.errors).toEqual({});
    expect(result.short.failed).toBe(0);
    expect(result.short.ok).toBeGreaterThanOrEqual(2300);
    expect(result.long).toMatchObject({ count: 20, ok: 20, failed: 0, mismatched: 0, unfinished: 0 });

    // The old agents carried their streams to the end, said so while draining, and exited cleanly.
    for (const { old, next, oldExited } of [a, b]) {
      expect(await oldExited).toBe(0);
      expect(
        old.events.some(
          (e) => e.msg === 'hand-off: the new agent takes the sockets; stopped accepting, draining',
        ),
      ).toBe(true);
      expect(old.events.some((e) => e.msg === 'drain deadline reached; closed remaining connections')).toBe(
        false,
      );
      expect(next.events.some((e) => e.msg === 'the previous agent has exited')).toBe(true);
    }
    // node-a's old agent held the 20 long streams (opened before its hand-off) to their end, and
    // said what it was still carrying while it drained (node-b's, replaced later, may have had none
    // left on a slow machine).
    expect(
      a.old.events
        .filter((e) => e.msg === 'draining: still carrying connections')
        .map((e) => Number(e.live) >= 20),
    ).toContain(true);
    // Each node still has exactly one copy of the rules.
    for (const node of NODES) expect((await captureRules(node)).tables).toBe(1);
  }, 120_000);

  it('a new agent that dies mid-hand-off leaves the old one serving, with no failed connection', async () => {
    const old = mesh.agents.get('node-a')!;
    const run = churn(100, 4, 6000, 60_000);
    process.env.HYPHA_FAULT_HANDOFF_DELAY_MS = '5000';
    const dying = mesh
      .startAgent('node-a', 30_000, {
        args: ['--takeover'],
        waitFor: (e) => e.msg === 'HYPHA_FAULT_HANDOFF_DELAY_MS: pausing the hand-off (fault injection)',
      })
      .finally(() => {
        delete process.env.HYPHA_FAULT_HANDOFF_DELAY_MS;
      });
    const next = await dying;
    next.process.kill('SIGKILL');
    mesh.agents.set('node-a', old);
    await old.waitFor((e) => typeof e.msg === 'string' && e.msg.startsWith('hand-off failed'), 10_000);
    const result = (await run) as {
      short: { failed: number; ok: number };
      long: { ok: number };
      errors: object;
    };
    expect(result.errors).toEqual({});
    expect(result.short.failed).toBe(0);
    expect(result.long.ok).toBe(4);
    expect(old.process.exitCode).toBeNull();
    // And it can still be upgraded afterwards.
    await mesh.upgradeAgent('node-a');
    expect((await sendMarker(pods.echoV1.ip, 8080, 'after')).echoed).toBe(true);
  }, 90_000);
});

describe('agent stopped before its successor is ready (Kubernetes order)', () => {
  it('SIGTERM with --handoff-wait keeps serving until a new agent takes over, then drains and exits', async () => {
    const { next: patient } = await mesh.upgradeAgent('node-a', 60_000, ['--handoff-wait', '30s']);
    const exited = new Promise<number | null>((r) => patient.process.once('exit', (c) => r(c)));
    patient.process.kill('SIGTERM');
    await patient.waitFor((e) => e.msg === 'waiting for a new agent to take over; still serving', 10_000);
    expect(await sendMarker(pods.echoV2.ip, 8080, 'still-served')).toEqual({ echoed: true });
    // The successor: a plain start, which takes over because an agent answers on the socket.
    const successor = await mesh.startAgent('node-a', 60_000, {
      waitFor: (e) => typeof e.msg === 'string' && e.msg.startsWith('took over the listening sockets'),
    });
    expect(await exited).toBe(0);
    expect(successor.process.exitCode).toBeNull();
    expect(await sendMarker(pods.echoV2.ip, 8080, 'served-by-successor')).toEqual({ echoed: true });
  }, 90_000);
});

describe('hypha agent cleanup', () => {
  it('refuses while an agent runs, and once it stopped removes every rule it installed', async () => {
    const netns = mesh.cluster.node('node-b').netns;
    const cli = (args: string[]) =>
      mesh.cluster
        .exec(netns, process.execPath, [
          mesh.hyphaBin,
          'agent',
          'cleanup',
          '--handoff-dir',
          mesh.handoffDir('node-b'),
          ...args,
        ])
        .then(
          (r) => ({ code: 0, out: r.stdout }),
          (e: Error & { stdout?: string; stderr?: string }) => ({
            code: 1,
            out: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`,
          }),
        );
    const refused = await cli([]);
    expect(refused.code).not.toBe(0);
    expect(refused.out).toContain('an agent is running on this node');
    expect((await captureRules('node-b')).tables).toBe(1);

    const agent = mesh.agents.get('node-b')!;
    const exited = new Promise<void>((r) => agent.process.once('exit', () => r()));
    agent.process.kill('SIGTERM');
    await exited;
    expect((await captureRules('node-b')).tables).toBe(1);
    const done = await cli([]);
    expect(done.code).toBe(0);
    expect(done.out).toMatch(/removed capture: table inet hypha \(\d+ rules, \d+ pods\)/);
    expect(await captureRules('node-b')).toEqual({ tables: 0, rules: 0, set: [], ipRules: 0 });
    const routes = (await mesh.cluster.exec(netns, 'ip', ['-4', 'route', 'show', 'table', '111'])).stdout;
    expect(routes.trim()).toBe('');
    expect((await cli([])).out).toContain('nothing to remove');
  }, 60_000);
});
