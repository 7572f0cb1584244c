import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterError, cleanupStale, listNetns, runCommand, TestCluster } from '../src/index.js';

const clusters: TestCluster[] = [];
afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

async function create(nodes: string[]): Promise<TestCluster> {
  const cluster = await TestCluster.create({ nodes });
  clusters.push(cluster);
  return cluster;
}

async function netnsOf(prefix: string): Promise<string[]> {
  return (await listNetns()).filter((n) => n.startsWith(`${prefix}-`));
}

describe('TestCluster', () => {
  it('connects pods on different nodes through their nodes and the fabric', async () => {
    const cluster = await create(['node-a', 'node-b']);
    const client = await cluster.addPod({ node: 'node-a', name: 'client', namespace: 'demo' });
    const server = await cluster.addPod({ node: 'node-b', name: 'echo', namespace: 'demo' });
    const sameNode = await cluster.addPod({ node: 'node-a', name: 'neighbour', namespace: 'demo' });
    expect(client.ip).not.toBe(server.ip);

    const echo = await cluster.startApp(server, 'tcp-echo', ['--port', '7000']);
    const result = await cluster.runApp(client, 'load-client', [
      '--mode',
      'tcp',
      '--target',
      `${server.ip}:7000`,
      '--connections',
      '3',
      '--requests',
      '5',
      '--bytes',
      '2000',
    ]);
    expect(result).toMatchObject({ ok: 15, failed: 0 });
    // The echo server saw the client's own pod IP: routed, not NATed.
    const conn = await echo.waitFor((e) => e.event === 'connection');
    expect(String(conn.peer)).toMatch(new RegExp(`^${client.ip.replaceAll('.', '\\.')}:`));

    // The path crosses node A, the fabric and node B: traceroute-like check through TTLs.
    const nodeB = cluster.node('node-b');
    const hop = async (ttl: number): Promise<string> =>
      (await cluster.exec(client.netns, 'sh', ['-c', `ping -n -c1 -W2 -t${ttl} ${server.ip} || true`]))
        .stdout;
    expect(await hop(1)).toContain(`From ${cluster.node('node-a').podGateway}`);
    expect(await hop(2)).toContain(`From ${nodeB.ip}`);
    expect(await hop(3)).toContain('1 received');

    // Same-node pods reach each other through their node.
    await cluster.startApp(sameNode, 'http-echo', [
      '--port',
      '8080',
      '--pod',
      'neighbour',
      '--namespace',
      'demo',
    ]);
    const http = await cluster.runApp(client, 'load-client', [
      '--target',
      `${sameNode.ip}:8080`,
      '--requests',
      '3',
    ]);
    expect(http).toMatchObject({ ok: 3, failed: 0, byPod: { neighbour: 3 }, peers: { [client.ip]: 3 } });
  });

  it('carries a sha256-exact transfer both ways, and the fabric capture sees traffic between nodes', async () => {
    const cluster = await create(['n1', 'n2']);
    const a = await cluster.addPod({ node: 'n1', name: 'a' });
    const b = await cluster.addPod({ node: 'n2', name: 'b' });
    const wire = await cluster.startFabricCapture();
    const echo = await cluster.startApp(b, 'http-echo', ['--port', '8080', '--pod', 'b']);
    await cluster.runApp(a, 'load-client', ['--target', `${b.ip}:8080`, '--path', '/marker-7f3a9c']);
    await echo.stop();
    expect((await wire.stop()).includes('/marker-7f3a9c')).toBe(true);

    const sink = await cluster.startApp(b, 'bytes', [
      'serve',
      '--port',
      '9000',
      '--send',
      String(3 * 1024 * 1024),
    ]);
    const sent = await cluster.runApp(a, 'bytes', [
      'send',
      '--target',
      `${b.ip}:9000`,
      '--bytes',
      String(5 * 1024 * 1024),
    ]);
    const seen = await sink.waitFor((e) => e.event === 'transfer');
    expect(sent.sent).toBe(5 * 1024 * 1024);
    expect(seen.receivedSha256).toBe(sent.sentSha256);
    expect(sent.received).toBe(3 * 1024 * 1024);
    expect(sent.receivedSha256).toBe(seen.sentSha256);
    expect(sent.sentSha256).not.toBe(createHash('sha256').digest('hex'));
  });

  it('hands out a listening socket that lives inside a namespace', async () => {
    const cluster = await create(['solo']);
    const pod = await cluster.addPod({ node: 'solo', name: 'caller' });
    const server = await cluster.listenIn(cluster.node('solo').netns, { port: 15001 });
    const peers: string[] = [];
    server.on('connection', (s) => {
      peers.push(String(s.remoteAddress));
      s.end('hi\n');
    });
    const { stdout } = await cluster.exec(pod.netns, process.execPath, [
      '-e',
      `require('net').connect(15001, '${cluster.node('solo').podGateway}').on('data', (d) => process.stdout.write(d))`,
    ]);
    server.close();
    expect(stdout).toBe('hi\n');
    expect(peers).toEqual([pod.ip]);
  });

  it('gives parallel clusters distinct prefixes and address blocks, and keeps them isolated', async () => {
    const [one, two] = await Promise.all([create(['x', 'y']), create(['x', 'y'])]);
    expect(one.prefix).not.toBe(two.prefix);
    expect(one.addressBlock).not.toBe(two.addressBlock);
    const p1 = await one.addPod({ node: 'x', name: 'p' });
    const p2 = await two.addPod({ node: 'y', name: 'p' });
    // No route between runs: a pod of one cluster cannot reach a pod of the other.
    await expect(one.exec(p1.netns, 'ping', ['-c1', '-W1', p2.ip])).rejects.toThrow(ClusterError);
    // And nothing reaches the outside world.
    const { stdout } = await one.exec(one.node('x').netns, 'ip', ['route', 'show']);
    expect(stdout).not.toContain('default');
  });

  it('removes every namespace on destroy, also after a failed step, and is idempotent', async () => {
    const cluster = await create(['a', 'b']);
    const pod = await cluster.addPod({ node: 'a', name: 'web' });
    const proc = cluster.spawn(pod.netns, 'sleep', ['60']);
    // A failing step (duplicate pod) must not leave anything half-built behind.
    await expect(cluster.addPod({ node: 'a', name: 'web' })).rejects.toThrow(/already exists/);
    await expect(cluster.addPod({ node: 'nope', name: 'x' })).rejects.toThrow(/no node "nope"/);
    expect(await netnsOf(cluster.prefix)).toHaveLength(4);

    await cluster.removePod(pod);
    expect(await netnsOf(cluster.prefix)).toHaveLength(3);
    const { stdout } = await runCommand('ip', ['-n', cluster.node('a').netns, '-o', 'link', 'show']);
    expect(stdout).not.toContain(pod.hostInterface);
    await new Promise((r) => setTimeout(r, 50));
    expect(proc.signalCode).toBe('SIGKILL');

    await cluster.destroy();
    await cluster.destroy();
    expect(await netnsOf(cluster.prefix)).toEqual([]);
    await expect(cluster.addPod({ node: 'a', name: 'late' })).rejects.toThrow(/destroyed/);
  });

  it('cleans up after a crashed run but never touches a live one', async () => {
    const liveCluster = await create(['live']);
    // A "crashed" run: a child process builds a cluster and is SIGKILLed before teardown.
    // (The child uses the built package: npm test builds before running tests.)
    const script = `
      const { TestCluster } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)});
      const c = await TestCluster.create({ nodes: ['a'], handleSignals: false });
      await c.addPod({ node: 'a', name: 'orphan' });
      console.log(c.prefix);
      setInterval(() => {}, 1000);
    `;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const prefix = await new Promise<string>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (code) => reject(new Error(`cluster child exited early with ${code}`)));
    });
    expect(await netnsOf(prefix)).toHaveLength(3);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(await netnsOf(prefix)).toHaveLength(3);

    const result = await cleanupStale();
    expect(result.removed).toEqual(expect.arrayContaining([`${prefix}-fabric`, `${prefix}-a`]));
    expect(await netnsOf(prefix)).toEqual([]);
    expect(result.kept).toContain(liveCluster.fabricNetns);
    expect(await netnsOf(liveCluster.prefix)).toHaveLength(2);
  });

  it('tears down on SIGTERM and still exits by that signal', async () => {
    const script = `
      const { TestCluster } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)});
      const c = await TestCluster.create({ nodes: ['a', 'b'] });
      const pod = await c.addPod({ node: 'b', name: 'p' });
      c.spawn(pod.netns, 'sleep', ['60']);
      console.log(c.prefix);
      setInterval(() => {}, 1000);
    `;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const prefix = await new Promise<string>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (code) => reject(new Error(`cluster child exited early with ${code}`)));
    });
    expect(await netnsOf(prefix)).toHaveLength(4);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    child.kill('SIGTERM');
    expect(await exited).toBe('SIGTERM');
    expect(await netnsOf(prefix)).toEqual([]);
  });

  it('rejects bad names with a precise message', async () => {
    await expect(TestCluster.create({ nodes: ['Bad_Name'] })).rejects.toThrow(/lowercase DNS label/);
    await expect(TestCluster.create({ nodes: [] })).rejects.toThrow(/1 to 14 nodes/);
  });
});
