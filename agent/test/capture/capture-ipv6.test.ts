// Node capture on a dual-stack namespace cluster, IPv6 side: an IPv6 connection from a mesh pod is
// redirected to the agent's `::` listener with its IPv6 original destination, the IPv6 policy
// routing for transparent sockets is installed once and removed on stop, and a transparent connect
// from a mesh pod's IPv6 address reaches a pod that sees that address.
import type { Server, Socket } from 'node:net';
import { type ClusterPod, TestCluster } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeCapture, type NodeCapture } from '../../src/capture/index.js';
import { connectTransparent, getOriginalDst } from '../../src/native/index.js';

let cluster: TestCluster;
let nodeNetns: string;
let mesh: ClusterPod; // mesh pod on node-a
let local: ClusterPod; // non-mesh pod on node-a
let remote: ClusterPod; // pod on node-b
const captures: NodeCapture[] = [];
const servers: Server[] = [];

beforeAll(async () => {
  cluster = await TestCluster.create({ nodes: ['node-a', 'node-b'], ipFamilies: 'dual' });
  nodeNetns = cluster.node('node-a').netns;
  mesh = await cluster.addPod({ node: 'node-a', name: 'mesh' });
  local = await cluster.addPod({ node: 'node-a', name: 'local' });
  remote = await cluster.addPod({ node: 'node-b', name: 'remote' });
});
afterAll(async () => {
  for (const s of servers) s.close();
  for (const c of captures) await c.stop().catch(() => {});
  await cluster?.destroy();
});

async function ip6Rules(): Promise<number> {
  const { stdout } = await cluster.exec(nodeNetns, 'ip', ['-6', 'rule', 'show']);
  return stdout.split('\n').filter((l) => l.includes('fwmark 0x111 lookup 111')).length;
}

describe('node capture with IPv6', () => {
  it('redirects an IPv6 connection from a mesh pod to the dual-stack listener with its IPv6 original destination', async () => {
    const c = createNodeCapture({ netns: nodeNetns });
    captures.push(c);
    await c.setMeshPods([mesh.ip, mesh.ipv6!]);
    await c.start();
    expect((await c.fetchState()).meshPods).toEqual(expect.arrayContaining([mesh.ip, mesh.ipv6]));
    expect(await ip6Rules()).toBe(1);
    const { stdout: table } = await cluster.exec(nodeNetns, 'ip', ['-6', 'route', 'show', 'table', '111']);
    expect(table).toMatch(/local default dev lo/);

    const listener = await cluster.listenIn(nodeNetns, { host: '::', port: 15001 });
    servers.push(listener);
    const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
    const client = cluster.exec(mesh.netns, process.execPath, [
      '-e',
      `const s=require('net').connect(9443,${JSON.stringify(remote.ipv6)},()=>s.end('x'));s.on('data',()=>{});s.on('error',()=>process.exit(0));`,
    ]);
    const sock = await accepted;
    expect(getOriginalDst(sock)).toEqual({ address: remote.ipv6, port: 9443, family: 6 });
    expect(sock.remoteAddress).toBe(mesh.ipv6);
    sock.end();
    await client;

    await c.stop();
    expect(await ip6Rules()).toBe(0);
  });

  it("connects to a pod from a mesh pod's IPv6 address (IPV6_TRANSPARENT + the IPv6 policy routing)", async () => {
    const c = createNodeCapture({ netns: nodeNetns });
    captures.push(c);
    await c.setMeshPods([mesh.ipv6!]);
    await c.start();
    const echo = await cluster.startApp(local, 'tcp-echo', ['--port', '7300']);
    const socket = await connectTransparent({
      netns: nodeNetns,
      localAddress: mesh.ipv6!,
      remoteAddress: local.ipv6!,
      remotePort: 7300,
      timeoutMs: 5000,
    });
    expect(socket.localAddress).toBe(mesh.ipv6);
    const seen = await echo.waitFor((e) => e.event === 'connection');
    expect(String(seen.peer).replace(/:\d+$/, '')).toBe(mesh.ipv6);
    const echoed = await new Promise<string>((resolve, reject) => {
      socket.once('data', (d: Buffer) => resolve(d.toString()));
      socket.once('error', reject);
      socket.write('over-ipv6');
    });
    expect(echoed).toBe('over-ipv6');
    socket.destroy();
    await echo.stop();
    await c.stop();
  });
});
