// Revocation as an operator uses it: `hypha ca revoke --id` on the CA's directory, and the agents
// (polling the CA's list) cut the revoked workload's live connections and refuse its new ones, while
// other identities keep working.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ClusterPod, type DemoResult, eventually, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const ECHO_PORT = 9200;
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';

let demo: DemoResult;

beforeAll(async () => {
  // Read by the agents this test file starts (each vitest file runs in its own process).
  process.env.HYPHA_REVOCATION_POLL = '300ms';
  demo = await startDemo();
  await Promise.all([
    demo.mesh.cluster.startApp(demo.pods.echoV1, 'tcp-echo', ['--port', String(ECHO_PORT)]),
    demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]),
  ]);
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

/** One TCP round trip between pods: true when the echo came back. */
const roundTrip = (from: ClusterPod, to: ClusterPod): Promise<boolean> =>
  demo.mesh.cluster.tcpRoundTrip(from.netns, to.ip, ECHO_PORT);

/**
 * A long-lived connection from `from` to `to` that echoes a ping every 100 ms; resolves with how it
 * ended ('cut' + the echoed byte count, or 'alive' after `ms`).
 */
function longLived(from: ClusterPod, to: ClusterPod, ms: number): Promise<{ end: string; echoed: number }> {
  const script = `const s=require('net').connect(${ECHO_PORT},${JSON.stringify(to.ip)});let n=0;
const done=(end)=>{process.stdout.write(JSON.stringify({end,echoed:n}));process.exit(0)};
s.on('connect',()=>{const t=setInterval(()=>s.write('p'),100);s.on('close',()=>clearInterval(t))});
s.on('data',d=>{n+=d.length});s.on('close',()=>done('cut'));s.on('error',()=>{});
setTimeout(()=>done('alive'),${ms});`;
  return demo.mesh.cluster
    .exec(from.netns, process.execPath, ['-e', script])
    .then((r) => JSON.parse(r.stdout) as { end: string; echoed: number });
}

describe('revocation on the namespace cluster', () => {
  it('a revoked identity loses its live tunnel and new connections; others keep working', async () => {
    const { pods } = demo;
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    expect(await roundTrip(pods.echoV2, pods.echoV1)).toBe(true);

    const live = longLived(pods.client, pods.echoV2, 12_000);
    // Revoke only once the destination agent carries the tunnel.
    await eventually(
      () => demo.mesh.fetchInNode('node-b', 'http://127.0.0.1:15000/connections'),
      (conns) => conns.includes('/sa/client') && conns.includes(`${pods.echoV2.ip}:${ECHO_PORT}`),
    );
    const revoke = await run(
      process.execPath,
      [BIN, 'ca', 'revoke', '--dir', join(demo.mesh.dir, 'ca'), '--id', CLIENT_ID, '--reason', 'test'],
      { timeout: 20_000 },
    );
    expect(revoke.stdout).toContain(CLIENT_ID);

    // Both agents learn the new list; whichever polls first cuts the tunnel (the client's agent
    // for its outbound side, the destination's for its inbound side and the HTTP/2 connection).
    const updates = await Promise.all(
      [...demo.mesh.agents.values()].map((a) =>
        a.waitFor((e) => e.msg === 'revocation list updated' && Number(e.ids) >= 1, 10_000),
      ),
    );
    expect(
      updates.reduce((n, e) => n + Number(e.cut) + Number(e.closedConnections ?? 0), 0),
    ).toBeGreaterThanOrEqual(1);
    const ended = await live;
    expect(ended.end).toBe('cut');
    expect(ended.echoed).toBeGreaterThan(0);

    // New connections from the revoked identity are refused at the destination; another identity
    // across the same agents still gets through.
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(false);
    // The same-node path has no handshake to fail, but the same rule holds.
    expect(await roundTrip(pods.client, pods.echoV1)).toBe(false);
    expect(await roundTrip(pods.echoV2, pods.echoV1)).toBe(true);
  });
});
