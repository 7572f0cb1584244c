// The demo's upgrade check: node-a's agent is replaced the zero-drop way (socket hand-off) while the
// client keeps opening connections to echo-v2 on node-b and holds long-lived streams. What a user
// wants to see: no connection failed, and the live streams survived, byte for byte.
import type { DemoCheck, DemoResult } from './demo.js';
import { hostPort } from './local-mesh.js';

const ECHO_PORT = 9000;

interface ChurnResult {
  short?: { started: number; ok: number; failed: number; maxConnectMs: number; maxRoundTripMs: number };
  long?: { count: number; ok: number; failed: number; mismatched: number; unfinished: number };
  errors?: Record<string, number>;
  error?: string;
}

export interface UpgradeCheckOptions {
  /** New connections per second during the upgrade. Default 200. */
  rate?: number;
  /** Long-lived streams held across the upgrade. Default 20. */
  streams?: number;
  /** How long the load runs; the upgrade starts 1.5 s in. Default 6 s. */
  durationMs?: number;
}

/** Upgrades node-a's agent under load; returns the check and the line the demo prints. */
export async function runUpgradeCheck(
  demo: DemoResult,
  options: UpgradeCheckOptions = {},
): Promise<DemoCheck> {
  const { mesh, pods } = demo;
  const rate = options.rate ?? 200;
  const streams = options.streams ?? 20;
  const durationMs = options.durationMs ?? 6000;
  const echo = await mesh.cluster.startApp(pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]);
  try {
    const target = hostPort(pods.echoV2.ip, ECHO_PORT);
    const load = mesh.cluster.runApp(
      pods.client,
      'churn-client',
      [
        '--target',
        target,
        '--rate',
        String(rate),
        '--long',
        String(streams),
        '--duration-ms',
        String(durationMs),
      ],
      durationMs + 60_000,
    ) as Promise<ChurnResult>;
    await new Promise((r) => setTimeout(r, 1500));
    const upgraded = await mesh.upgradeAgent('node-a').then(
      (u) => ({ ok: true as const, ...u }),
      (err: Error) => ({ ok: false as const, err }),
    );
    const r = await load;
    const oldExit = upgraded.ok ? await upgraded.oldExited : undefined;
    const name = 'agent upgrade on node-a';
    if (!upgraded.ok)
      return { name, ok: false, detail: `the new agent did not take over: ${upgraded.err.message}` };
    if (r.error || !r.short || !r.long)
      return { name, ok: false, detail: `the load client failed: ${r.error ?? 'no result'}` };
    const ok =
      r.short.failed === 0 &&
      r.long.ok === r.long.count &&
      r.long.count === streams &&
      Object.keys(r.errors ?? {}).length === 0 &&
      oldExit === 0;
    const summary = `${r.short.started} connections during the upgrade, ${r.short.failed} failed (slowest ${(r.short.maxRoundTripMs / 1000).toFixed(2)} s); ${r.long.ok} of ${r.long.count} live streams kept (sha256-checked)`;
    return {
      name: `${name}: ${summary}`,
      ok,
      detail: ok
        ? summary
        : `${summary}; errors ${JSON.stringify(r.errors ?? {})}; old agent exit ${String(oldExit)}`,
    };
  } finally {
    await echo.stop();
  }
}
