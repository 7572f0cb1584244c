// The node agent's L4 data path end to end on a two-node namespace cluster, with real agents,
// a real CA, nftables capture and HBONE between nodes (issue 4).

import type { RunningApp } from '@hypha/test';
import { type DemoResult, runDemoTraffic, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let demo: DemoResult;
let bytesServer: RunningApp;

beforeAll(async () => {
  demo = await startDemo();
  bytesServer = await demo.mesh.cluster.startApp(demo.pods.echoV2, 'bytes', [
    'serve',
    '--port',
    '9000',
    '--send',
    String(100 * 1024 * 1024),
  ]);
  await demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', '9100']);
  await demo.mesh.cluster.startApp(demo.pods.plain, 'tcp-echo', ['--port', '9100']);
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

describe('L4 mesh on a namespace cluster', () => {
  it('load-balances a service over both nodes over mTLS, preserving the client pod IP, and passes non-mesh traffic through', async () => {
    await runDemoTraffic(demo);
    const failed = demo.checks.filter((c) => !c.ok);
    expect(failed, demo.report.join('\n')).toEqual([]);
    expect(demo.checks.length).toBeGreaterThanOrEqual(5);
  });

  it('moves 100 MiB each way across nodes sha256-exact', async () => {
    const { mesh, pods } = demo;
    const size = 100 * 1024 * 1024;
    const result = (await mesh.cluster.runApp(
      pods.client,
      'bytes',
      ['send', '--target', `${pods.echoV2.ip}:9000`, '--bytes', String(size)],
      60_000,
    )) as { sent: number; sentSha256: string; received: number; receivedSha256: string };
    expect(result.sent).toBe(size);
    expect(result.received).toBe(size);
    // The server printed what it received and sent; the hashes must agree end to end.
    const serverSide = await bytesServer.waitFor(
      (e) => e.event === 'transfer' && e.received === size,
      10_000,
    );
    expect(serverSide.receivedSha256).toBe(result.sentSha256);
    expect(serverSide.sentSha256).toBe(result.receivedSha256);
  }, 90_000);

  it('carries 200 concurrent connections across nodes', async () => {
    const { mesh, pods } = demo;
    const r = (await mesh.cluster.runApp(
      pods.client,
      'load-client',
      [
        '--mode',
        'tcp',
        '--target',
        `${pods.echoV2.ip}:9100`,
        '--connections',
        '200',
        '--requests',
        '3',
        '--bytes',
        '1024',
      ],
      60_000,
    )) as { ok: number; failed: number; errors: Record<string, number> };
    expect(r.failed, JSON.stringify(r.errors)).toBe(0);
    expect(r.ok).toBe(600);
  }, 90_000);

  it('never puts plaintext on the wire between nodes, while the same capture does see non-mesh plaintext', async () => {
    const { mesh, pods } = demo;
    const marker = `hypha-marker-${Math.random().toString(36).slice(2)}`;
    const capture = await mesh.cluster.startFabricCapture('tcp');
    const send = (target: string) =>
      mesh.cluster.exec(pods.client.netns, process.execPath, [
        '-e',
        `const s=require('net').connect(${JSON.stringify(target.split(':')[1])}|0,${JSON.stringify(target.split(':')[0])},()=>{s.end(${JSON.stringify(marker.repeat(20))})});s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',e=>{console.error(e.message);process.exit(1)})`,
      ]);
    await send(`${pods.echoV2.ip}:9100`); // mesh → mesh, crosses the fabric inside HBONE
    await new Promise((r) => setTimeout(r, 300));
    let pcap = await capture.stop();
    expect(pcap.length).toBeGreaterThan(1000); // the capture really saw the tunnel
    expect(pcap.includes(Buffer.from(marker))).toBe(false);

    // Control: the same capture sees the marker when the destination is outside the mesh.
    const control = await mesh.cluster.startFabricCapture('tcp');
    await send(`${pods.plain.ip}:9100`);
    await new Promise((r) => setTimeout(r, 300));
    pcap = await control.stop();
    expect(pcap.includes(Buffer.from(marker))).toBe(true);
  }, 60_000);
});
