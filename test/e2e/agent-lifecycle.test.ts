// Agent lifecycle on the namespace cluster: pods leaving the mesh, an agent killed with SIGKILL
// and restarted, a graceful SIGTERM that keeps capture (issues 4 and 11).

import { demoConfigObjects } from '@hypha/shared/config';
import { type DemoResult, eventually, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let demo: DemoResult;

beforeAll(async () => {
  demo = await startDemo();
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

function configWith(filter: (o: Record<string, unknown>) => boolean): Record<string, unknown>[] {
  const { pods, vip } = demo;
  return demoConfigObjects({
    nodes: { a: 'node-a', b: 'node-b' },
    ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: pods.plain.ip },
    echoVip: vip,
    echoPort: 8080,
    servicePort: 80,
  }).filter(filter);
}

async function nftRules(node: string): Promise<{ set: string[]; rules: number }> {
  const netns = demo.mesh.cluster.node(node).netns;
  const r = await demo.mesh.cluster.exec(netns, 'nft', ['-j', 'list', 'table', 'inet', 'hypha']);
  const items = (JSON.parse(r.stdout) as { nftables: Record<string, { name?: string; elem?: unknown[] }>[] })
    .nftables;
  const set = items.find((i) => i.set?.name === 'mesh_pods')?.set?.elem ?? [];
  return { set: set.map(String), rules: items.filter((i) => i.rule !== undefined).length };
}

async function callEcho(
  times: number,
): Promise<{ ok: number; failed: number; byPod: Record<string, number> }> {
  return (await demo.mesh.cluster.runApp(demo.pods.client, 'load-client', [
    '--target',
    `${demo.vip}:80`,
    '--connections',
    String(times),
    '--requests',
    '1',
    '--timeout-ms',
    '5000',
  ])) as { ok: number; failed: number; byPod: Record<string, number> };
}

describe('agent lifecycle', () => {
  it('is ready with its start-up garbage given back to the kernel (the ready line says how much)', async () => {
    for (const agent of demo.mesh.agents.values()) {
      const ready = await agent.waitFor((e) => e.msg === 'ready');
      const before = Number(ready.rssBefore);
      const after = Number(ready.rss);
      expect(after, `${agent.node}: ${JSON.stringify(ready)}`).toBeGreaterThan(0);
      // V8 keeps freed pages resident until a memory-reducing collection (daemon/memory.ts).
      expect(after).toBeLessThan(before - 2 * 1048576);
    }
  });

  it('a pod removed from the config leaves the capture set, its certificate is dropped, and traffic avoids it', async () => {
    const { mesh, pods } = demo;
    expect((await nftRules('node-a')).set).toContain(pods.echoV1.ip);
    const certsBefore = JSON.parse(await mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/certs')) as {
      identity: string;
    }[];
    expect(certsBefore.map((c) => c.identity)).toContain('spiffe://cluster.local/ns/demo/sa/echo');

    await mesh.writeConfig(configWith((o) => (o.metadata as { name?: string }).name !== 'echo-v1'));
    const after = await eventually(
      () => nftRules('node-a'),
      (s) => !s.set.includes(pods.echoV1.ip),
    );
    expect(after.set).not.toContain(pods.echoV1.ip);
    expect(after.set).toContain(pods.client.ip);
    const certsAfter = await eventually(
      async () =>
        JSON.parse(await mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/certs')) as {
          identity: string;
        }[],
      (c) => !c.some((x) => x.identity.endsWith('/sa/echo')),
    );
    expect(certsAfter.map((c) => c.identity)).not.toContain('spiffe://cluster.local/ns/demo/sa/echo');
    const r = await callEcho(6);
    expect(r.failed).toBe(0);
    expect(r.byPod).toEqual({ 'echo-v2': 6 });

    // Back in: captured again, traffic spreads again.
    await mesh.writeConfig(configWith(() => true));
    await eventually(
      () => nftRules('node-a'),
      (s) => s.set.includes(pods.echoV1.ip),
    );
    await eventually(
      async () =>
        JSON.parse(await mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/certs')) as {
          identity: string;
          state: string;
        }[],
      (c) => c.some((x) => x.identity.endsWith('/sa/echo') && x.state !== 'fetching'),
    );
  }, 60_000);

  it('an agent killed with SIGKILL leaves its rules; the restarted agent reconciles them without duplicates and traffic flows', async () => {
    const { mesh } = demo;
    const before = await nftRules('node-a');
    const agent = mesh.agents.get('node-a')!;
    const exited = new Promise((r) => agent.process.once('exit', r));
    agent.process.kill('SIGKILL');
    await exited;
    // Crash: nothing cleaned up, rules still in place.
    const leftover = await nftRules('node-a');
    expect(leftover.rules).toBe(before.rules);

    await mesh.startAgent('node-a');
    const reconciled = await nftRules('node-a');
    expect(reconciled.rules).toBe(before.rules);
    expect(new Set(reconciled.set)).toEqual(new Set(before.set));
    const r = await callEcho(8);
    expect(r.failed).toBe(0);
    expect(r.ok).toBe(8);
  }, 60_000);

  it('SIGTERM drains and exits 0, and leaves the capture rules in place (fail closed)', async () => {
    const { mesh } = demo;
    const before = await nftRules('node-b');
    const agent = mesh.agents.get('node-b')!;
    const exited = new Promise<number | null>((r) => agent.process.once('exit', (code) => r(code)));
    agent.process.kill('SIGTERM');
    expect(await exited).toBe(0);
    await agent.waitFor((e) => e.msg === 'stopped', 5000);
    expect(
      agent.events.some((e) => typeof e.msg === 'string' && e.msg.startsWith('capture rules left in place')),
    ).toBe(true);
    expect(await nftRules('node-b')).toEqual(before);
  }, 30_000);
});
