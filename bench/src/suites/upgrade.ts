// `npm run bench -- upgrade [--json] [--quick]`: what replacing the node agents does to live
// traffic, Hypha's socket hand-off side by side with the plain restart other meshes do, under the
// same steady load in one run on one namespace cluster (ARCHITECTURE.md section 9, "agent upgrade").
//
//   client (mesh pod, node-a) ─> agent node-a ══ HBONE mTLS ══> agent node-b ─> echo-v2 (node-b)
//                                            └──────────────────────────────> echo-v1 (node-a)
//   load: test/src/apps/churn-client.ts against the echo service's VIP:80 (tcp-echo on 8080):
//         `rate` new connections/s, each one byte-checked round trip, and `long` long-lived streams
//         written every 50 ms for the whole run, checked by sha256 at the end.
//
// Two phases, the same load each, both agents replaced (node-a, then node-b) during the load:
//   restart:  SIGTERM the agent, wait until it stopped (it stops accepting, drains for its
//             --drain-timeout of 1s, closes what is left, logs "stopped" and exits), start a new one;
//   hand-off: LocalMesh.upgradeAgent: a new agent with --takeover takes the listening sockets over
//             the node's Unix socket; the old one stops accepting, drains to the end and exits.
// The restart runs first, on agents started with a 1 s drain (a longer one would keep the node
// without a listener until the long streams end); the agents it starts drain for 60 s, so the
// hand-off that replaces them lets every stream finish. Figures per phase: new connections failed,
// long streams cut (failed, mismatched or unfinished) and the bytes they carried, the longest
// connect and round trip of a new connection that did connect, and how long each node's
// replacement took.
import { loadavg } from 'node:os';
import { demoConfigObjects } from '@hypha/shared/config';
import { type AgentProcess, LocalMesh } from '@hypha/test';
import { sleep } from '../mesh-load.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const NODES = ['node-a', 'node-b'] as const;
type Node = (typeof NODES)[number];
type Pod = Awaited<ReturnType<LocalMesh['addPod']>>;

interface Load {
  /** New connections per second. */
  rate: number;
  /** Long-lived streams held for the whole run. */
  long: number;
  durationMs: number;
  /** When the first replacement starts, after the load started. */
  replaceAtMs: number;
}

// A restart takes the drain (1 s) plus a new agent's start (2-4 s on a busy 2-core machine) per
// node, both nodes inside the load: the load runs long enough for that, and the run refuses to
// report when the replacements did not finish before the load ended.
const FULL: Load = { rate: 200, long: 20, durationMs: 15_000, replaceAtMs: 2_000 };
const QUICK: Load = { rate: 100, long: 5, durationMs: 14_000, replaceAtMs: 1_500 };
const RESTART_DRAIN = '1s';
const HANDOFF_DRAIN = '60s';
/** How long a stopped agent may take to exit before it is killed. */
const EXIT_GRACE_MS = 10_000;
const HANDOFF_LOG = 'hand-off: the new agent takes the sockets; stopped accepting, draining';

export class UpgradeBenchError extends Error {
  readonly code: 'LOAD_FAILED' | 'NOT_STEADY' | 'LOAD_TOO_SHORT' | 'AGENT_PROCESS';
  constructor(code: UpgradeBenchError['code'], message: string) {
    super(message);
    this.name = 'UpgradeBenchError';
    this.code = code;
  }
}

/** churn-client's result line. */
interface ChurnResult {
  error?: string;
  durationMs: number;
  short: { started: number; ok: number; failed: number; maxConnectMs: number; maxRoundTripMs: number };
  long: {
    count: number;
    ok: number;
    failed: number;
    mismatched: number;
    unfinished: number;
    /** Bytes echoed on the streams that ended with matching sha256. */
    bytesEchoed: number;
  };
  errors: Record<string, number>;
}

interface Phase {
  churn: ChurnResult;
  /** Per node: from the start of its replacement until a new agent serves (ms). */
  replaceMs: Record<Node, number>;
  /** When the last replacement finished, from the start of the load (ms). */
  lastDoneAtMs: number;
}

const variantName = { restart: 'restart (stop, then start)', handoff: 'hand-off' } as const;

function churn(mesh: LocalMesh, client: Pod, target: string, load: Omit<Load, 'replaceAtMs'>) {
  return mesh.cluster
    .runApp(
      client,
      'churn-client',
      [
        '--target',
        target,
        '--rate',
        String(load.rate),
        '--long',
        String(load.long),
        '--duration-ms',
        String(load.durationMs),
        // Failed = refused, reset or cut; slowness is its own figure (longest round trip), so a
        // busy machine does not turn slow connections into failed ones.
        '--timeout-ms',
        '20000',
      ],
      load.durationMs + 60_000,
    )
    .then((r) => {
      const res = r as unknown as ChurnResult;
      if (res.error !== undefined || res.short === undefined || res.long === undefined)
        throw new UpgradeBenchError('LOAD_FAILED', `churn-client: ${res.error ?? JSON.stringify(r)}`);
      return res;
    });
}

/** A short load with no replacement: the mesh must serve every connection before a phase starts. */
async function expectSteady(mesh: LocalMesh, client: Pod, target: string, before: string): Promise<void> {
  let last: ChurnResult | undefined;
  for (let attempt = 0; attempt < 10; attempt++) {
    last = await churn(mesh, client, target, { rate: 50, long: 2, durationMs: 1_000 });
    if (last.short.failed === 0 && last.short.ok > 0 && last.long.ok === last.long.count) return;
    await sleep(500);
  }
  throw new UpgradeBenchError(
    'NOT_STEADY',
    `the mesh does not serve every connection ${before}: ${JSON.stringify(last)}`,
  );
}

/** Resolves with `value` after `ms`, without keeping the process alive. */
function after<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms).unref());
}

function exited(agent: AgentProcess): Promise<number | null> {
  const p = agent.process;
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((resolve) => p.once('exit', (code) => resolve(code)));
}

/** Runs the load and, `replaceAtMs` into it, replaces each node's agent in turn with `replace`. */
async function phase(
  mesh: LocalMesh,
  client: Pod,
  target: string,
  load: Load,
  replace: (node: Node) => Promise<void>,
): Promise<Phase> {
  const t0 = performance.now();
  const running = churn(mesh, client, target, load);
  // Awaited below; a rejection while the replacements run must not go unhandled.
  running.catch(() => {});
  await sleep(load.replaceAtMs);
  const replaceMs = {} as Record<Node, number>;
  for (const node of NODES) {
    const start = performance.now();
    await replace(node);
    replaceMs[node] = performance.now() - start;
  }
  const lastDoneAtMs = performance.now() - t0;
  return { churn: await running, replaceMs, lastDoneAtMs };
}

function cut(r: ChurnResult): number {
  return r.long.failed + r.long.mismatched + r.long.unfinished;
}

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const load = opts.quick ? QUICK : FULL;
  const mesh = await LocalMesh.create({ nodes: NODES, drainTimeout: RESTART_DRAIN });
  try {
    const pods = {
      client: await mesh.addPod('node-a', 'client', 'demo'),
      echoV1: await mesh.addPod('node-a', 'echo-v1', 'demo'),
      echoV2: await mesh.addPod('node-b', 'echo-v2', 'demo'),
    };
    const vip = mesh.cluster.allocateServiceIp();
    await mesh.writeConfig(
      demoConfigObjects({
        nodes: { a: 'node-a', b: 'node-b' },
        ips: { client: pods.client.ip, echoV1: pods.echoV1.ip, echoV2: pods.echoV2.ip, plain: '192.0.2.1' },
        echoVip: vip,
        echoPort: 8080,
        servicePort: 80,
      }),
    );
    await Promise.all([
      mesh.cluster.startApp(pods.echoV1, 'tcp-echo', ['--port', '8080']),
      mesh.cluster.startApp(pods.echoV2, 'tcp-echo', ['--port', '8080']),
    ]);
    await mesh.startAgents();
    const target = `${vip}:80`;

    // 1. Restart: stop, then start. The node has no agent accepting from SIGTERM until the new one
    // is ready; the capture stays (fails closed), so its pods' connections are refused meanwhile.
    await expectSteady(mesh, pods.client, target, 'before the restart phase');
    const hungAtExit: string[] = [];
    const exitChecks: Promise<void>[] = [];
    const restart = await phase(mesh, pods.client, target, load, async (node) => {
      const old = mesh.agents.get(node)!;
      const gone = exited(old);
      old.process.kill('SIGTERM');
      // Stopped: drained, closed everything and logged it (it stopped accepting at SIGTERM). The
      // process exits right after; if it does not, it is killed as the kubelet would after the
      // grace period, and the run says so.
      await Promise.race([gone, old.waitFor((e) => e.msg === 'stopped', 60_000)]);
      const exitCheck = Promise.race([gone.then(() => true), after(EXIT_GRACE_MS, false)]);
      exitChecks.push(
        exitCheck.then((ok) => {
          if (ok) return;
          hungAtExit.push(node);
          process.stderr.write(
            `bench upgrade: the stopped agent on ${node} (pid ${old.process.pid}) did not exit within ${EXIT_GRACE_MS} ms; killing it. Its last log lines:\n${old.events
              .slice(-15)
              .map((e) => JSON.stringify(e))
              .join('\n')}\n${old.stderrText().slice(-2000)}\n`,
          );
          old.process.kill('SIGKILL');
        }),
      );
      await mesh.startAgent(node, 60_000, { args: ['--drain-timeout', HANDOFF_DRAIN] });
    });

    await Promise.all(exitChecks);

    // 2. Hand-off, on the agents the restart started.
    await expectSteady(mesh, pods.client, target, 'before the hand-off phase');
    const handoffs: Awaited<ReturnType<LocalMesh['upgradeAgent']>>[] = [];
    const handoff = await phase(mesh, pods.client, target, load, async (node) => {
      handoffs.push(await mesh.upgradeAgent(node));
    });
    // The old agents drained to the end (no deadline cut) and exited cleanly.
    for (const { old, oldExited } of handoffs) {
      const code = await Promise.race([oldExited, after(70_000, 'timeout' as const)]);
      if (code !== 0 || !old.events.some((e) => e.msg === HANDOFF_LOG))
        throw new UpgradeBenchError(
          'AGENT_PROCESS',
          `the old agent on ${old.node} did not hand off and exit cleanly (exit ${code}): ${old.stderrText().slice(-2000)}`,
        );
    }

    for (const [name, p] of [
      ['restart', restart],
      ['hand-off', handoff],
    ] as const) {
      if (p.lastDoneAtMs > p.churn.durationMs)
        throw new UpgradeBenchError(
          'LOAD_TOO_SHORT',
          `${name}: the replacements finished ${Math.round(p.lastDoneAtMs)} ms into a ${p.churn.durationMs} ms load; the figures would not cover them`,
        );
    }

    const results: BenchResult[] = [];
    const h = handoff.churn;
    const r = restart.churn;
    results.push(
      {
        name: `new connections opened, ${variantName.restart}`,
        value: r.short.started,
        unit: 'conn',
      },
      {
        name: `new connections opened, ${variantName.handoff}`,
        value: h.short.started,
        unit: 'conn',
        peer: variantName.restart,
        peerValue: r.short.started,
      },
      {
        name: `new connections failed, ${variantName.restart}`,
        value: r.short.failed,
        unit: 'conn',
      },
      {
        name: `new connections failed, ${variantName.handoff}`,
        value: h.short.failed,
        unit: 'conn',
        peer: variantName.restart,
        peerValue: r.short.failed,
        budget: '0 failed',
        met: h.short.failed === 0,
      },
      {
        name: `long-lived streams cut, ${variantName.restart}`,
        value: cut(r),
        unit: `of ${r.long.count} streams`,
      },
      {
        name: `long-lived streams cut, ${variantName.handoff}`,
        value: cut(h),
        unit: `of ${h.long.count} streams`,
        peer: variantName.restart,
        peerValue: cut(r),
        budget: '0 cut',
        met: cut(h) === 0,
      },
      // churn-client counts a stream the mesh closed cleanly (FIN) mid-run as ok when every byte
      // sent so far came back; the bytes they carried over the whole run show such early ends.
      {
        name: `bytes carried by the long-lived streams, ${variantName.restart}`,
        value: r.long.bytesEchoed / 1e6,
        unit: 'MB',
      },
      {
        name: `bytes carried by the long-lived streams, ${variantName.handoff} (ratio = hand-off/restart)`,
        value: h.long.bytesEchoed / 1e6,
        unit: 'MB',
        peer: variantName.restart,
        peerValue: r.long.bytesEchoed / 1e6,
        ...(r.long.bytesEchoed > 0 ? { ratio: h.long.bytesEchoed / r.long.bytesEchoed } : {}),
      },
    );
    for (const [figure, key] of [
      ['longest connect of a new connection', 'maxConnectMs'],
      ['longest round trip of a new connection', 'maxRoundTripMs'],
    ] as const) {
      results.push(
        { name: `${figure}, ${variantName.restart}`, value: r.short[key], unit: 'ms' },
        {
          name: `${figure}, ${variantName.handoff} (ratio = restart/hand-off, higher is better)`,
          value: h.short[key],
          unit: 'ms',
          peer: variantName.restart,
          peerValue: r.short[key],
          ratio: r.short[key] / h.short[key],
        },
      );
    }
    for (const node of NODES) {
      results.push(
        {
          name: `agent replacement on ${node}, ${variantName.restart} (SIGTERM to the new agent ready)`,
          value: restart.replaceMs[node],
          unit: 'ms',
        },
        {
          name: `agent replacement on ${node}, ${variantName.handoff} (new agent start to sockets taken over)`,
          value: handoff.replaceMs[node],
          unit: 'ms',
          peer: variantName.restart,
          peerValue: restart.replaceMs[node],
        },
      );
    }

    return {
      suite: 'upgrade',
      environment: {
        command: `npm run bench -- upgrade${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
        load: `${load.rate} new conn/s + ${load.long} long streams (16 KiB / 50 ms each), ${load.durationMs} ms, against the echo VIP:80; node-a replaced ${load.replaceAtMs} ms in, then node-b`,
        restartDrainTimeout: RESTART_DRAIN,
        handoffDrainTimeout: HANDOFF_DRAIN,
        restartErrors: JSON.stringify(r.errors),
        restartAgentsHungAtExit: hungAtExit.length > 0 ? hungAtExit.join(' ') : 'none',
        handoffErrors: JSON.stringify(h.errors),
        loadavg: loadavg()
          .map((l) => l.toFixed(2))
          .join(' '),
      },
      results,
    };
  } finally {
    await mesh.stop();
  }
}
