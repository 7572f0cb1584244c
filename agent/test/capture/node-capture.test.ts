import type { Server, Socket } from 'node:net';
import { type ClusterPod, TestCluster } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CaptureError,
  createNodeCapture,
  EXPECTED_RULES,
  type NodeCapture,
} from '../../src/capture/index.js';
import { connectTransparent, getOriginalDst } from '../../src/native/index.js';

// A two-node namespace cluster; capture runs in node-a's namespace as the agent would.
let cluster: TestCluster;
let nodeNetns: string;
let meshA: ClusterPod; // mesh pod on node-a
let meshB: ClusterPod; // second mesh pod on node-a
let plain: ClusterPod; // non-mesh pod on node-a
let remote: ClusterPod; // pod on node-b
const captures: NodeCapture[] = [];

beforeAll(async () => {
  cluster = await TestCluster.create({ nodes: ['node-a', 'node-b'] });
  nodeNetns = cluster.node('node-a').netns;
  meshA = await cluster.addPod({ node: 'node-a', name: 'mesh-a' });
  meshB = await cluster.addPod({ node: 'node-a', name: 'mesh-b' });
  plain = await cluster.addPod({ node: 'node-a', name: 'plain' });
  remote = await cluster.addPod({ node: 'node-b', name: 'remote' });
});
afterAll(async () => {
  for (const c of captures) await c.stop().catch(() => {});
  await cluster?.destroy();
});

function capture(): NodeCapture {
  const c = createNodeCapture({ netns: nodeNetns });
  captures.push(c);
  return c;
}

async function nft(args: string[]): Promise<string> {
  return (await cluster.exec(nodeNetns, 'nft', args)).stdout;
}

async function fwmarkRules(): Promise<number> {
  const { stdout } = await cluster.exec(nodeNetns, 'ip', ['rule', 'show']);
  return stdout.split('\n').filter((l) => l.includes('fwmark 0x111 lookup 111')).length;
}

describe('node capture', () => {
  it('installs idempotently: starting twice leaves one copy of every rule', async () => {
    const c = capture();
    await c.setMeshPods([meshA.ip]);
    await c.start();
    await c.start();
    const state = await c.fetchState();
    expect(state).toMatchObject({
      installed: true,
      healthy: true,
      ruleCount: EXPECTED_RULES,
      meshPods: [meshA.ip],
    });
    const ruleset = await nft(['list', 'ruleset']);
    expect(ruleset.match(/redirect to :15001/g)).toHaveLength(2); // ip + ip6
    expect(ruleset).toContain('priority dstnat - 10');
    expect(await fwmarkRules()).toBe(1);
    const { stdout } = await cluster.exec(nodeNetns, 'ip', ['route', 'show', 'table', '111']);
    expect(stdout).toMatch(/local default dev lo/);
    await c.stop();
  });

  it("reconciles a crashed agent's leftovers instead of duplicating them", async () => {
    const crashed = capture();
    await crashed.setMeshPods([meshA.ip, remote.ip]);
    await crashed.start();
    // The crashed agent also left drift: a stray rule and a duplicate policy-routing rule.
    await nft([
      'add',
      'rule',
      'inet',
      'hypha',
      'prerouting_nat',
      'tcp',
      'dport',
      '9999',
      'redirect',
      'to',
      ':9999',
    ]);
    await cluster.exec(nodeNetns, 'ip', ['rule', 'add', 'fwmark', '0x111', 'lookup', '111']);
    expect((await crashed.fetchState()).healthy).toBe(false);

    const restarted = capture();
    await restarted.setMeshPods([meshB.ip]);
    await restarted.start();
    const state = await restarted.fetchState();
    expect(state).toMatchObject({
      healthy: true,
      ruleCount: EXPECTED_RULES,
      meshPods: [meshB.ip],
      policyRouting: { rules: 1, route: true },
    });
    expect(await nft(['list', 'ruleset'])).not.toContain('9999');
    await restarted.stop();
  });

  it('reflects membership changes in the set without touching the rules', async () => {
    const c = capture();
    await c.start();
    const handlesBefore = await nft(['-a', 'list', 'chain', 'inet', 'hypha', 'prerouting_nat']);
    await c.addPod(meshA.ip);
    await c.addPod(meshB.ip);
    await c.addPod(meshB.ip);
    await c.addPod('fd00::42');
    expect((await c.fetchState()).meshPods).toEqual([meshA.ip, meshB.ip, 'fd00::42'].sort());
    await c.removePod(meshA.ip);
    await c.removePod(meshA.ip);
    expect((await c.fetchState()).meshPods).toEqual([meshB.ip, 'fd00::42'].sort());
    await c.setMeshPods([plain.ip]);
    expect((await c.fetchState()).meshPods).toEqual([plain.ip]);
    expect(c.findState()).toMatchObject({ started: true, meshPods: [plain.ip] });
    expect(await nft(['-a', 'list', 'chain', 'inet', 'hypha', 'prerouting_nat'])).toBe(handlesBefore);
    await expect(c.addPod('10.1.2')).rejects.toThrow(/not an IPv4 or IPv6 address/);

    // The table vanished under a running agent: the next update puts everything back.
    await nft(['delete', 'table', 'inet', 'hypha']);
    await c.addPod(meshA.ip);
    expect(await c.fetchState()).toMatchObject({ healthy: true, meshPods: [meshA.ip, plain.ip].sort() });
    await c.stop();
  });

  it('stop removes the table and the policy routing, and may run twice', async () => {
    const c = capture();
    await c.setMeshPods([meshA.ip]);
    await c.start();
    await c.stop();
    await c.stop();
    expect(await nft(['list', 'ruleset'])).not.toContain('hypha');
    expect(await fwmarkRules()).toBe(0);
    const { stdout } = await cluster
      .exec(nodeNetns, 'ip', ['route', 'show', 'table', '111'])
      .catch(() => ({ stdout: '' }));
    expect(stdout).toBe('');
    expect(await c.fetchState()).toMatchObject({ installed: false, healthy: false, meshPods: [] });
  });

  it('redirects real connections to the agent ports with the original destination intact', async () => {
    const listeners = new Map<number, Server>();
    for (const port of [15001, 15006, 15008])
      listeners.set(port, await cluster.listenIn(nodeNetns, { port }));
    const next = (port: number): Promise<Socket> =>
      new Promise((resolve) => listeners.get(port)!.once('connection', resolve));
    const c = capture();
    await c.setMeshPods([meshA.ip, meshB.ip]);
    await c.start();

    const dial = (from: ClusterPod, host: string, port: number): Promise<unknown> =>
      cluster.exec(from.netns, process.execPath, [
        '-e',
        `const s = require('net').connect(${port}, '${host}', () => s.end()); s.on('error', () => {}); s.resume();`,
      ]);
    const expectCaptured = async (
      listen: number,
      from: ClusterPod,
      host: string,
      port: number,
    ): Promise<void> => {
      const accepted = next(listen);
      const done = dial(from, host, port);
      const sock = await accepted;
      expect(getOriginalDst(sock)).toEqual({ address: host, port, family: 4 });
      expect(sock.remoteAddress).toBe(from.ip);
      sock.destroy();
      await done;
    };

    // Outbound: a mesh pod to a pod on another node.
    await expectCaptured(15001, meshA, remote.ip, 8080);
    // Mesh pod to mesh pod on the same node: outbound wins, the agent decides.
    await expectCaptured(15001, meshA, meshB.ip, 8080);
    // Inbound plaintext: a non-mesh pod to a mesh pod.
    await expectCaptured(15006, plain, meshA.ip, 8080);
    // HBONE to a mesh pod's 15008 from another node.
    await expectCaptured(15008, remote, meshB.ip, 15008);

    // Not captured: a non-mesh pod to a non-mesh destination, and the node's own connections.
    const echo = await cluster.startApp(remote, 'tcp-echo', ['--port', '7000']);
    await dial(plain, remote.ip, 7000);
    expect((await echo.waitFor((e) => e.event === 'connection')).peer).toMatch(new RegExp(`^${plain.ip}:`));
    const direct = await cluster.startApp(meshA, 'tcp-echo', ['--port', '7001']);
    await cluster.exec(nodeNetns, process.execPath, [
      '-e',
      `const s = require('net').connect(7001, '${meshA.ip}', () => s.end()); s.resume();`,
    ]);
    expect((await direct.waitFor((e) => e.event === 'connection')).peer).toMatch(
      new RegExp(`^${cluster.node('node-a').podGateway}:`),
    );
    for (const l of listeners.values()) l.close();
    await c.stop();
  });

  it("routes a mesh pod's replies back to the agent's transparent socket (client IP preserved)", async () => {
    const c = capture();
    await c.setMeshPods([meshA.ip, meshB.ip]);
    await c.start();
    const echo = await cluster.startApp(meshA, 'http-echo', ['--port', '0', '--pod', 'mesh-a']);
    // The inbound path: the agent on node-a connects to its pod as the client on node-b would.
    for (const client of [remote, meshB]) {
      const socket = await connectTransparent({
        netns: nodeNetns,
        localAddress: client.ip,
        remoteAddress: meshA.ip,
        remotePort: echo.port,
        timeoutMs: 5000,
      });
      const sourcePort = socket.localPort;
      const reply = await new Promise<string>((resolve, reject) => {
        let data = '';
        socket.on('data', (d: Buffer) => {
          data += d.toString();
        });
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
        socket.end('GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n');
      });
      expect(reply).toContain(`"peer":"${client.ip}:${sourcePort}"`);
    }
    await echo.stop();
    await c.stop();
    // Without capture's policy routing the same connect cannot complete.
    await expect(
      connectTransparent({
        netns: nodeNetns,
        localAddress: remote.ip,
        remoteAddress: meshA.ip,
        remotePort: 7001,
        timeoutMs: 300,
      }),
    ).rejects.toMatchObject({ code: 'CONNECT_TIMEOUT' });
  });

  it('explains a missing nft binary with the install command', async () => {
    const c = createNodeCapture({ netns: nodeNetns, nftPath: '/nonexistent/nft' });
    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaptureError);
    expect(err).toMatchObject({ code: 'NFT_MISSING' });
    expect((err as Error).message).toContain('apt-get install -y nftables');
    expect(() => createNodeCapture({ tableName: 'bad name' })).toThrow(/tableName/);
  });
});
