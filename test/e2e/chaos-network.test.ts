// Network chaos on the namespace cluster (issue 18 part 2): packet loss on the fabric keeps every
// transfer sha256-exact, and an HBONE peer that goes silent is found by HTTP/2 PING, its streams
// failed and nothing left hanging, with traffic recovering once the peer answers again. The faults
// are nftables rules in the nodes' own namespaces (tc netem is not available on these machines).
import type { RunningApp } from '@hypha/test';
import { type DemoResult, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let demo: DemoResult;
let bytesServer: RunningApp;
const SIZE = 8 * 1024 * 1024;

beforeAll(async () => {
  demo = await startDemo();
  bytesServer = await demo.mesh.cluster.startApp(demo.pods.echoV2, 'bytes', [
    'serve',
    '--port',
    '9000',
    '--send',
    String(SIZE),
  ]);
  await demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', '9100']);
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

/** Installs (or with `rules` undefined, removes) the chaos table in a node's namespace. */
async function chaos(node: string, rules: { in: string; out: string } | undefined): Promise<void> {
  const netns = demo.mesh.cluster.node(node).netns;
  await demo.mesh.cluster.exec(
    netns,
    'nft',
    ['-f', '-'],
    'table inet hypha_chaos\ndelete table inet hypha_chaos\n',
  );
  if (rules === undefined) return;
  await demo.mesh.cluster.exec(
    netns,
    'nft',
    ['-f', '-'],
    `table inet hypha_chaos {
  chain in { type filter hook prerouting priority -400; policy accept; iifname "fab0" ${rules.in}; }
  chain out { type filter hook postrouting priority 400; policy accept; oifname "fab0" ${rules.out}; }
}
`,
  );
}

async function liveConnections(node: string): Promise<{ destination: { address: string } }[]> {
  return JSON.parse(await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15000/connections'));
}

describe('network chaos', () => {
  it('3% packet loss each way on both nodes: 4 transfers of 8 MiB each way stay sha256-exact', async () => {
    const { mesh, pods } = demo;
    const loss = {
      in: 'numgen random mod 100 < 3 counter drop',
      out: 'numgen random mod 100 < 3 counter drop',
    };
    await chaos('node-a', loss);
    await chaos('node-b', loss);
    try {
      const startedAt = Date.now();
      const results = await Promise.all(
        [0, 1, 2, 3].map(
          () =>
            mesh.cluster.runApp(
              pods.client,
              'bytes',
              ['send', '--target', `${pods.echoV2.ip}:9000`, '--bytes', String(SIZE)],
              120_000,
            ) as Promise<{ sent: number; sentSha256: string; received: number; receivedSha256: string }>,
        ),
      ).catch((err: Error) => {
        // What the agents said while the transfers ran: a failed transfer's cause is in their logs.
        for (const [node, agent] of mesh.agents) {
          const said = agent.events.filter(
            (e) =>
              Date.parse(String(e.time)) >= startedAt &&
              (['warn', 'error', 'fatal'].includes(String(e.level)) || e.error !== undefined),
          );
          console.log(
            `${node} after ${Date.now() - startedAt} ms:\n${said.map((e) => JSON.stringify(e)).join('\n')}`,
          );
        }
        throw err;
      });
      for (const r of results) {
        expect([r.sent, r.received]).toEqual([SIZE, SIZE]);
        const server = await bytesServer.waitFor(
          (e) => e.event === 'transfer' && e.receivedSha256 === r.sentSha256,
          10_000,
        );
        expect(server.sentSha256).toBe(r.receivedSha256);
      }
      // The loss was real: both nodes dropped packets on the fabric, both ways.
      for (const node of ['node-a', 'node-b']) {
        const listed = await mesh.cluster.exec(mesh.cluster.node(node).netns, 'nft', [
          'list',
          'table',
          'inet',
          'hypha_chaos',
        ]);
        const dropped = [...listed.stdout.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
        expect(dropped, listed.stdout).toHaveLength(2);
        for (const n of dropped) expect(n).toBeGreaterThan(0);
      }
    } finally {
      await chaos('node-a', undefined);
      await chaos('node-b', undefined);
    }
  }, 180_000);

  it('a silent HBONE peer is found by PING: the stream fails, nothing hangs, and traffic recovers', async () => {
    const { mesh, pods } = demo;
    const held = mesh.cluster.holdTcpConnection(pods.client.netns, pods.echoV2.ip, 9100);
    try {
      expect(await held.exchange(1000)).toBe(1000);
      const target = `${pods.echoV2.ip}:9100`;
      expect((await liveConnections('node-a')).some((c) => c.destination.address === target)).toBe(true);
      // node-b stops answering on the HBONE port: its packets to and from the fabric are dropped.
      await chaos('node-b', { in: 'tcp dport 15008 drop', out: 'tcp sport 15008 drop' });
      const silentAt = Date.now();
      // PING every 10 s, unanswered for 20 s: the client's agent gives the connection up.
      await held.waitClosed(45_000);
      const seconds = (Date.now() - silentAt) / 1000;
      const agentA = mesh.agents.get('node-a')!;
      const gaveUp = await agentA.waitFor(
        (e) => typeof e.msg === 'string' && e.msg.includes('stopped answering PINGs'),
        5000,
      );
      expect(gaveUp.level).toBeDefined();
      expect((await liveConnections('node-a')).some((c) => c.destination.address === target)).toBe(false);
      // The server side drops the silent client too (its own PINGs), so no tunnel stays open there.
      const deadline = Date.now() + 45_000;
      while ((await liveConnections('node-b')).some((c) => c.destination.address === target)) {
        if (Date.now() > deadline) throw new Error('node-b still carries the dead tunnel after 45 s');
        await new Promise((r) => setTimeout(r, 500));
      }
      await chaos('node-b', undefined);
      // Traffic recovers on a new HBONE connection.
      expect(await mesh.cluster.tcpRoundTrip(pods.client.netns, pods.echoV2.ip, 9100, 10_000)).toBe(true);
      console.log(
        `silent peer: the client's stream failed ${seconds.toFixed(1)} s after the peer went silent (PING 10 s + timeout 20 s)`,
      );
    } finally {
      held.kill();
      await chaos('node-b', undefined);
    }
  }, 150_000);
});
