// `hypha tap` against the mesh in the namespace cluster (issue 17 part 3): the waypoint's finished
// requests and the node agent's finished connections, as a person reads them and as JSON lines,
// filtered on the server side, stopped with Ctrl-C; bad flags and a missing agent say what to do.
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getScript, startWaypointScenario, type WaypointScenario } from './waypoint-fixture.js';

const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));

let s: WaypointScenario;

beforeAll(async () => {
  s = await startWaypointScenario();
}, 120_000);

afterAll(async () => {
  await s?.mesh.stop();
});

interface Tap {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Starts `hypha tap ARGS` inside a namespace and waits until it says it is connected. */
async function tap(netns: string, args: string[]): Promise<Tap> {
  const child = s.mesh.cluster.spawn(netns, process.execPath, [BIN, 'tap', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('connected to')) resolve();
    });
    void exited.then((code) => reject(new Error(`hypha tap exited ${code} before connecting: ${err}`)));
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

const get = (path: string) => s.runInClient(getScript(`http://${s.vips.echo}${path}`));
const waypointNetns = () => s.waypoint.pod.netns;

describe('hypha tap', () => {
  it('shows a request through the waypoint with method, path, status, latency and both identities (JSON lines)', async () => {
    const t = await tap(waypointNetns(), ['-o', 'json', '--path', '/tapped', '--max', '1']);
    await get('/other');
    await get('/tapped/one');
    expect(await t.exited).toBe(0);
    const lines = t.stdout().trim().split('\n');
    expect(lines).toHaveLength(1);
    const e = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(e).toMatchObject({
      kind: 'request',
      reporter: 'waypoint demo/waypoint',
      method: 'GET',
      path: '/tapped/one',
      status: 200,
      mtls: true,
      flags: '-',
      source: { workload: 'client', namespace: 'demo', identity: 'spiffe://cluster.local/ns/demo/sa/client' },
      destination: {
        namespace: 'demo',
        service: 'demo/echo',
        identity: 'spiffe://cluster.local/ns/demo/sa/echo',
      },
    });
    expect(e.durationMs).toEqual(expect.any(Number));
    expect(String((e.destination as { workload: string }).workload)).toMatch(/^echo-v[12]$/);
  });

  it('reads as one line per request by default; filters by method and status', async () => {
    const t = await tap(waypointNetns(), ['--method', 'GET', '--status', '2xx', '--max', '1']);
    await get('/readable');
    expect(await t.exited).toBe(0);
    expect(t.stdout()).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} GET \/readable 200 [\d.]+ms {2}demo\/client \[cluster\.local\/ns\/demo\/sa\/client\] -> demo\/echo \(demo\/echo-v[12]\) \[cluster\.local\/ns\/demo\/sa\/echo\] {2}mTLS {2}via waypoint demo\/waypoint\n$/,
    );
  });

  it("shows the node agent's finished connections, filtered by source", async () => {
    const t = await tap(s.mesh.cluster.node('node-a').netns, [
      '--kind',
      'connection',
      '--from',
      'demo/client',
      '-o',
      'json',
      '--max',
      '1',
    ]);
    await get('/conn');
    expect(await t.exited).toBe(0);
    const e = JSON.parse(t.stdout().trim()) as Record<string, unknown>;
    expect(e).toMatchObject({
      kind: 'connection',
      reporter: 'agent node-a',
      direction: 'outbound',
      source: { workload: 'client', identity: 'spiffe://cluster.local/ns/demo/sa/client' },
      flags: '-',
    });
    expect(e.bytesSent).toBeGreaterThan(0);
    expect(e.bytesReceived).toBeGreaterThan(0);
  });

  it('stops cleanly on Ctrl-C', async () => {
    const t = await tap(waypointNetns(), []);
    t.child.kill('SIGINT');
    expect(await t.exited).toBe(0);
  });

  it('a bad filter is a usage error (2); no reachable endpoint exits 1 and says where it looked', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile(process.execPath, [BIN, 'tap', ...args], { timeout: 20_000 }, (err, _out, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
        );
      });
    const bad = await run(['--status', 'teapot']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--status "teapot" must be a code \(503\) or a class \(5xx\)/);
    const none = await run(['--admin', '127.0.0.1:9']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/127\.0\.0\.1:9: cannot reach it \(ECONNREFUSED\)/);
    expect(none.stderr).toMatch(/no admin endpoint answered/);
  });
});
