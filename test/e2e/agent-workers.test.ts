// `hypha agent --workers 2` on the namespace cluster: both agents run two worker processes that
// share the listening sockets. What a user would notice: connections are served by both workers,
// policy, config changes and revocations hold on every worker, metrics count each connection once,
// a killed worker is replaced without anything passing unchecked, and SIGTERM drains and exits.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { demoConfigObjects } from '@hypha/shared/config';
import { type AgentProcess, type DemoResult, eventually, type LogEvent, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const ECHO_PORT = 9200;
const BURST = 40;

let demo: DemoResult;

beforeAll(async () => {
  // Read by the agents this file starts (each vitest file runs in its own process).
  process.env.HYPHA_AGENT_WORKERS = '2';
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

const agent = (node: string): AgentProcess => demo.mesh.agents.get(node)!;

async function workerPids(node: string): Promise<number[]> {
  const dump = JSON.parse(await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15000/config_dump')) as {
    workers?: number[];
  };
  return dump.workers ?? [];
}

/**
 * BURST concurrent connections from the client pod to `ip`, each one echo round trip, all held open
 * for `holdMs` (so /connections sees them together). Resolves with how many were echoed.
 */
async function burst(ip: string, holdMs = 0): Promise<{ ok: number; refused: number }> {
  const script = `const net=require('net');let ok=0,refused=0,left=${BURST};const socks=[];
const fin=()=>{if(--left===0)setTimeout(()=>{for(const s of socks)s.destroy();process.stdout.write(JSON.stringify({ok,refused}));process.exit(0)},${holdMs})};
for(let i=0;i<${BURST};i++){const s=net.connect(${ECHO_PORT},${JSON.stringify(ip)});socks.push(s);let got='',done=false;
const end=(good)=>{if(done)return;done=true;good?ok++:refused++;fin()};
s.on('connect',()=>s.write('ping'));s.on('data',d=>{got+=d;if(got==='ping')end(true)});
s.on('close',()=>end(false));s.on('error',()=>end(false));setTimeout(()=>end(false),8000)}`;
  const r = await demo.mesh.cluster.exec(demo.pods.client.netns, process.execPath, ['-e', script]);
  return JSON.parse(r.stdout) as { ok: number; refused: number };
}

/** Access-log lines of a node's agent since `from`, by the worker (index) that wrote them. */
function accessByWorker(node: string, from: number, match: (e: LogEvent) => boolean): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of agent(node).events.slice(from)) {
    if (e.type !== 'access' || !match(e)) continue;
    const w = Number(e.worker);
    out.set(w, (out.get(w) ?? 0) + 1);
  }
  return out;
}

/** Sends bursts until both workers of node-a served some (the kernel picks the acceptor). */
async function burstOverBothWorkers(
  ip: string,
  match: (e: LogEvent) => boolean,
): Promise<{ ok: number; refused: number; byWorker: Map<number, number> }> {
  const from = agent('node-a').events.length;
  const total = { ok: 0, refused: 0 };
  for (let i = 0; i < 8; i++) {
    const r = await burst(ip);
    total.ok += r.ok;
    total.refused += r.refused;
    const byWorker = await eventually(
      async () => accessByWorker('node-a', from, match),
      (m) => [...m.values()].reduce((a, b) => a + b, 0) >= total.ok + total.refused,
    );
    if (byWorker.size >= 2) return { ...total, byWorker };
  }
  return { ...total, byWorker: accessByWorker('node-a', from, match) };
}

function objects(extra: object[]): object[] {
  const { pods, vip } = demo;
  return [
    ...demoConfigObjects({
      nodes: { a: 'node-a', b: 'node-b' },
      ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: pods.plain.ip },
      echoVip: vip,
      echoPort: 8080,
      servicePort: 80,
    }),
    ...extra,
  ];
}

const denyClient = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-client', namespace: 'demo' },
  spec: {
    selector: { matchLabels: { app: 'echo' } },
    action: 'DENY',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }] }],
  },
};

/** Writes the config; resolves once every worker of every agent applied it. */
async function apply(extra: object[]): Promise<void> {
  const marks = [...demo.mesh.agents.values()].map((a) => a.events.length);
  await demo.mesh.applyConfig(objects(extra));
  await Promise.all(
    [...demo.mesh.agents.values()].map((a, i) => {
      const applied = a.events
        .slice(marks[i])
        .find((e) => typeof e.msg === 'string' && e.msg.startsWith('config applied'));
      return a.waitFor(
        (e) =>
          typeof e.msg === 'string' &&
          e.msg.startsWith('every agent worker applied config') &&
          Number(e.version) >= Number(applied?.version),
        10_000,
      );
    }),
  );
}

function openedTotal(metrics: string, reporter: string): number {
  let n = 0;
  for (const line of metrics.split('\n')) {
    if (line.startsWith('istio_tcp_connections_opened_total{') && line.includes(`reporter="${reporter}"`))
      n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

describe('hypha agent --workers 2', () => {
  it('connections are spread over both workers, listed once in /connections and counted once in the metrics', async () => {
    const pids = await workerPids('node-a');
    expect(pids).toHaveLength(2);
    const metrics = () => demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
    const before = openedTotal(await metrics(), 'source');
    // Held open while /connections is read.
    const held = burst(demo.pods.echoV2.ip, 3000);
    const conns = await eventually(
      async () =>
        (
          JSON.parse(await demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/connections')) as {
            direction: string;
            worker: number;
          }[]
        ).filter((c) => c.direction === 'outbound'),
      (c) => c.length >= BURST,
    );
    expect(conns).toHaveLength(BURST);
    expect(new Set(conns.map((c) => c.worker)).size).toBeGreaterThanOrEqual(1);
    for (const c of conns) expect(pids).toContain(c.worker);
    expect(await held).toEqual({ ok: BURST, refused: 0 });
    await eventually(
      async () => openedTotal(await metrics(), 'source'),
      (n) => n >= before + BURST,
    );
    // Exactly once each, whichever worker carried it.
    expect(openedTotal(await metrics(), 'source')).toBe(before + BURST);

    const spread = await burstOverBothWorkers(demo.pods.echoV1.ip, (e) => e.dst_workload === 'echo-v1');
    expect(spread.ok).toBeGreaterThan(0);
    expect(spread.refused).toBe(0);
    expect(spread.byWorker.size).toBe(2);
  });

  it('`hypha tap` on the agent shows the connections of every worker, each once', async () => {
    // The supervisor's /tap: workers forward their finished connections while someone reads.
    const child = demo.mesh.cluster.spawn(
      demo.mesh.cluster.node('node-a').netns,
      process.execPath,
      [BIN, 'tap', '--kind', 'connection', '--from', 'demo/client', '-o', 'json'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    await eventually(
      async () => err,
      (e) => e.includes('connected to'),
    );
    const tapped = () =>
      out
        .split('\n')
        .filter(Boolean)
        .map(
          (l) =>
            JSON.parse(l) as {
              kind: string;
              direction?: string;
              reporter: string;
              flags: string;
              destination: { workload?: string };
            },
        )
        .filter((e) => e.destination.workload === 'echo-v1');

    // Each finished connection is one access-log line of the worker that carried it.
    const mark = agent('node-a').events.length;
    const toEcho = (e: LogEvent) => e.dst_workload === 'echo-v1';
    const spread = await burstOverBothWorkers(demo.pods.echoV1.ip, toEcho);
    expect(spread.refused).toBe(0);
    expect(spread.byWorker.size).toBe(2);
    const logged = () => [...accessByWorker('node-a', mark, toEcho).values()].reduce((a, b) => a + b, 0);
    await eventually(
      async () => tapped().length,
      (n) => n >= logged(),
    );
    // Let any duplicate arrive before counting: each connection is one event, whichever worker.
    await new Promise((r) => setTimeout(r, 1000));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    const events = tapped();
    expect(events.length).toBeGreaterThanOrEqual(spread.ok);
    expect(events).toHaveLength(logged());
    for (const e of events)
      expect(e).toMatchObject({ kind: 'connection', reporter: 'agent node-a', flags: '-' });
  });

  it('a DENY policy and its removal take effect on every worker', async () => {
    await apply([denyClient]);
    const denied = await burstOverBothWorkers(
      demo.pods.echoV1.ip,
      (e) => e.dst_workload === 'echo-v1' && e.direction !== 'outbound',
    );
    expect(denied.ok).toBe(0);
    expect(denied.byWorker.size).toBe(2);
    expect(await burst(demo.pods.echoV2.ip)).toEqual({ ok: 0, refused: BURST });

    await apply([]);
    const allowed = await burstOverBothWorkers(
      demo.pods.echoV1.ip,
      (e) => e.dst_workload === 'echo-v1' && e.direction !== 'outbound',
    );
    expect(allowed.refused).toBe(0);
    expect(allowed.byWorker.size).toBe(2);
  });

  it('a killed worker is replaced with the state, and nothing passes unchecked meanwhile', async () => {
    await apply([denyClient]);
    const [victim] = await workerPids('node-a');
    process.kill(victim!, 'SIGKILL');
    // While it is gone and while its successor starts, every connection is still refused.
    let passed = 0;
    const replaced = await eventually(
      async () => {
        passed += (await burst(demo.pods.echoV1.ip)).ok;
        return workerPids('node-a');
      },
      (p) => p.length === 2 && !p.includes(victim!),
    );
    expect(replaced).toHaveLength(2);
    // Ready again only once the new worker holds the state and accepts (503 until then).
    const ready = await eventually(
      () =>
        demo.mesh
          .fetchInNode('node-a', 'http://127.0.0.1:15021/healthz/ready')
          .then(() => true)
          .catch(() => false),
      (ok) => ok,
      20_000,
    );
    expect(ready).toBe(true);
    const after = await burstOverBothWorkers(
      demo.pods.echoV1.ip,
      (e) => e.dst_workload === 'echo-v1' && e.direction !== 'outbound',
    );
    passed += after.ok;
    expect(passed).toBe(0);
    expect(after.byWorker.size).toBe(2);
  });

  it('the upgrade hand-off: a new agent with workers takes the sockets; no connection is refused', async () => {
    await apply([]);
    const oldPids = await workerPids('node-a');
    let upgrading = true;
    const during = (async () => {
      const total = { ok: 0, refused: 0 };
      while (upgrading) {
        const r = await burst(demo.pods.echoV1.ip);
        total.ok += r.ok;
        total.refused += r.refused;
      }
      return total;
    })();
    const { oldExited } = await demo.mesh.upgradeAgent('node-a');
    expect(await oldExited).toBe(0);
    upgrading = false;
    const total = await during;
    expect(total.ok).toBeGreaterThan(0);
    expect(total.refused).toBe(0);
    for (const pid of oldPids) expect(() => process.kill(pid, 0)).toThrow();
    const newPids = await workerPids('node-a');
    expect(newPids).toHaveLength(2);
    expect(newPids.some((p) => oldPids.includes(p))).toBe(false);
    expect((await burst(demo.pods.echoV1.ip)).ok).toBe(BURST);
  });

  it('a revocation reaches every worker', async () => {
    expect((await burst(demo.pods.echoV2.ip)).ok).toBe(BURST);
    const revoke = await run(
      process.execPath,
      [
        BIN,
        'ca',
        'revoke',
        '--dir',
        join(demo.mesh.dir, 'ca'),
        '--id',
        'spiffe://cluster.local/ns/demo/sa/client',
        '--reason',
        'test',
      ],
      { timeout: 20_000 },
    );
    expect(revoke.stdout).toContain('sa/client');
    await eventually(
      async () => (await burst(demo.pods.echoV1.ip)).ok,
      (ok) => ok === 0,
    );
    const refused = await burstOverBothWorkers(
      demo.pods.echoV1.ip,
      (e) => e.dst_workload === 'echo-v1' && e.direction !== 'outbound',
    );
    expect(refused.ok).toBe(0);
    expect(refused.byWorker.size).toBe(2);
    expect((await burst(demo.pods.echoV2.ip)).ok).toBe(0);
  });

  it('SIGTERM drains and exits, workers included', async () => {
    const a = agent('node-b');
    const pids = await workerPids('node-b');
    expect(pids).toHaveLength(2);
    const exited = new Promise<number | null>((resolve) => a.process.once('exit', (code) => resolve(code)));
    a.process.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
