// `npm run bench -- scale [--json] [--quick]`: the agent's config state at cluster scale (issue 14).
//
// For each size, N pods, N/5 Services (endpoints from their selectors) and N/20
// AuthorizationPolicies are written as one YAML file into a temp directory, and a fresh child
// process (`apps/scale-load.js`, run with --expose-gc and, as the agent runs, AGENT_NODE_FLAGS and
// MESH_PROCESS_ENV) loads it through the file source and
// measures: time to ready, RSS and heap after load, peak RSS, one pod change (state mutator and
// file source) and ns per lookup. One process per size keeps each RSS figure clean.
//
// Budgets (ARCHITECTURE.md §9, "config scale"): 100k pods / 20k services in <= 300 MB RSS, one
// change applied <= 50 ms, O(1) lookups (checked as: ns per lookup <= 5x a plain Map.get of the
// same keys in a Map of the same size; the state's lookups normalise the address first). Sizes: 1k, 20k (the measurement) and 100k; --quick: 1k and 5k.
//
// The same cluster through the Kubernetes source: a child (`apps/scale-kube-api.js`) runs the
// stand-in API server (@hypha/test) holding every object (plus one EndpointSlice per Service and the
// Namespaces), and a second, measured child (`apps/scale-kube-load.js`) syncs it with
// createKubeSource: time until `ready`, RSS and heap after sync, one pod change PATCHed through the
// API until the state shows it, ns per lookup. Two processes, so the API server's copy of the
// cluster is not in the source's RSS. The RSS and the one-change budgets apply to it too (that is
// the agent's source in a cluster); the sync time has none (it includes the stand-in's serving).
// HYPHA_BENCH_SCALE_SIZES="1000,100000" overrides the sizes; HYPHA_BENCH_SCALE_NODE_ARGS adds
// flags to the child (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" or "--heap-prof").
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS, MESH_PROCESS_ENV } from '@hypha/shared/hbone';
import { writeClusterYaml } from '../scale-objects.js';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

// The built child (it imports @hypha/shared, so Node cannot run the .ts source): from dist/suites
// next door, from src/suites (vitest) in ../../dist.
const app = (name: string) =>
  fileURLToPath(
    new URL(import.meta.url.endsWith('.ts') ? `../../dist/apps/${name}` : `../apps/${name}`, import.meta.url),
  );
const CHILD = app('scale-load.js');
const KUBE_API_CHILD = app('scale-kube-api.js');
const KUBE_CHILD = app('scale-kube-load.js');
const BUDGET_PODS = 100_000;
const RSS_BUDGET_MB = 300;
const CHANGE_BUDGET_MS = 50;

export interface ScaleFigures {
  pods: number;
  services: number;
  authorizationPolicies: number;
  loadMs: number;
  rss: number;
  heapUsed: number;
  /** V8 heap committed (process.memoryUsage().heapTotal). */
  heapTotal: number;
  peakRss: number;
  upsertAddMs: number;
  upsertModifyMs: number;
  upsertMaxMs: number;
  fileChangeMs: number;
  workloadByIpNs: number;
  serviceByVipNs: number;
  mapIpNs: number;
  mapVipNs: number;
}

export interface KubeScaleFigures {
  pods: number;
  services: number;
  authorizationPolicies: number;
  endpointSlices: number;
  listPages: number;
  syncMs: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  peakRss: number;
  apiChangeMs: number;
  apiChangeMaxMs: number;
  workloadByIpNs: number;
  serviceByVipNs: number;
  mapIpNs: number;
  mapVipNs: number;
}

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const fromEnv = process.env.HYPHA_BENCH_SCALE_SIZES;
  const sizes = fromEnv
    ? fromEnv.split(',').map((s) => Number(s.trim()))
    : opts.quick
      ? [1000, 5000]
      : [1000, 20_000, 100_000];
  if (sizes.some((n) => !Number.isInteger(n) || n < 20)) throw new Error(`bad sizes ${fromEnv}`);
  const nodeArgs = (process.env.HYPHA_BENCH_SCALE_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const measured: ScaleFigures[] = [];
  const kube: KubeScaleFigures[] = [];
  for (const pods of sizes) measured.push(await measure(pods, nodeArgs));
  for (const pods of sizes) kube.push(await measureKube(pods, nodeArgs));

  const results: BenchResult[] = [];
  const mb = (b: number) => b / 1024 / 1024;
  for (const f of measured) {
    const at = `${f.pods} pods / ${f.services} services / ${f.authorizationPolicies} policies`;
    const rss = mb(f.rss);
    results.push(
      { name: `load through the file source until ready, ${at}`, value: f.loadMs, unit: 'ms' },
      {
        name: `RSS after load, ${at}`,
        value: rss,
        unit: 'MB',
        ...rssBudget(f.pods, rss),
      },
      { name: `heap used after load, ${at}`, value: mb(f.heapUsed), unit: 'MB' },
      { name: `heap committed after load, ${at}`, value: mb(f.heapTotal), unit: 'MB' },
      { name: `peak RSS while loading, ${at}`, value: mb(f.peakRss), unit: 'MB' },
    );
    const change = (name: string, value: number) =>
      results.push({
        name: `${name}, ${at}`,
        value,
        unit: 'ms',
        ...changeBudget(f.pods, value),
      });
    change('one pod added (state mutator, median)', f.upsertAddMs);
    change('one pod made not ready (state mutator, median)', f.upsertModifyMs);
    results.push({
      name: `one pod change, slowest of 42 (state mutator), ${at}`,
      value: f.upsertMaxMs,
      unit: 'ms',
    });
    change(
      'one pod added/changed in a small file next to the big one (file source reload, median)',
      f.fileChangeMs,
    );
    // O(1) is judged against a plain Map of the same size and keys: past the CPU caches every hash
    // lookup slows down with size, which is the memory system, not the state's algorithm.
    const lookup = (name: string, value: number, floor: number) =>
      results.push({
        name: `${name}, ns per lookup, ${at}`,
        value,
        unit: 'ns',
        peer: 'Map.get, same keys',
        peerValue: floor,
        ratio: value / floor,
        ...(f.pods >= BUDGET_PODS ? { budget: 'O(1): <= 5x Map.get', met: value <= 5 * floor } : {}),
      });
    lookup('findWorkloadByIp', f.workloadByIpNs, f.mapIpNs);
    lookup('findServiceByVip', f.serviceByVipNs, f.mapVipNs);
  }
  for (const f of kube) {
    const at = `${f.pods} pods / ${f.services} services / ${f.authorizationPolicies} policies`;
    results.push(
      {
        name: `Kubernetes source: sync from the API server until ready (${f.listPages} list pages), ${at}`,
        value: f.syncMs,
        unit: 'ms',
      },
      {
        name: `Kubernetes source: RSS after sync, ${at}`,
        value: mb(f.rss),
        unit: 'MB',
        ...rssBudget(f.pods, mb(f.rss)),
      },
      { name: `Kubernetes source: heap used after sync, ${at}`, value: mb(f.heapUsed), unit: 'MB' },
      { name: `Kubernetes source: heap committed after sync, ${at}`, value: mb(f.heapTotal), unit: 'MB' },
      { name: `Kubernetes source: peak RSS while syncing, ${at}`, value: mb(f.peakRss), unit: 'MB' },
      {
        name: `Kubernetes source: one pod status PATCHed through the API until the state shows it (median of 22), ${at}`,
        value: f.apiChangeMs,
        unit: 'ms',
        ...changeBudget(f.pods, f.apiChangeMs),
      },
      {
        name: `Kubernetes source: one pod status PATCHed, slowest of 22, ${at}`,
        value: f.apiChangeMaxMs,
        unit: 'ms',
      },
    );
    for (const [name, value, floor] of [
      ['findWorkloadByIp', f.workloadByIpNs, f.mapIpNs],
      ['findServiceByVip', f.serviceByVipNs, f.mapVipNs],
    ] as const)
      results.push({
        name: `Kubernetes source: ${name}, ns per lookup, ${at}`,
        value,
        unit: 'ns',
        peer: 'Map.get, same keys',
        peerValue: floor,
        ratio: value / floor,
      });
  }
  return {
    suite: 'scale',
    environment: {
      command: `npm run bench -- scale${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
      sizes: sizes.join(','),
      ...(nodeArgs.length > 0 ? { childNodeArgs: nodeArgs.join(' ') } : {}),
    },
    results,
  };
}

/** The RSS budget, checked at the budget's size only (100k pods). */
function rssBudget(pods: number, rssMb: number): Pick<BenchResult, 'budget' | 'met'> {
  return pods >= BUDGET_PODS ? { budget: `<= ${RSS_BUDGET_MB} MB`, met: rssMb <= RSS_BUDGET_MB } : {};
}

/** The one-change budget, checked at the budget's size only. */
function changeBudget(pods: number, ms: number): Pick<BenchResult, 'budget' | 'met'> {
  return pods >= BUDGET_PODS ? { budget: `<= ${CHANGE_BUDGET_MS} ms`, met: ms <= CHANGE_BUDGET_MS } : {};
}

async function measure(pods: number, nodeArgs: string[]): Promise<ScaleFigures> {
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-scale-'));
  try {
    await writeClusterYaml(join(dir, 'cluster.yaml'), pods);
    return await runMeasured<ScaleFigures>(`scale-load for ${pods} pods`, nodeArgs, [
      CHILD,
      '--dir',
      dir,
      '--pods',
      String(pods),
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs a measured child as the agent runs (AGENT_NODE_FLAGS, MESH_PROCESS_ENV, plus --expose-gc and
 * `nodeArgs`) and returns the JSON of its last stdout line.
 */
async function runMeasured<T>(what: string, nodeArgs: string[], args: string[]): Promise<T> {
  const child = spawn(process.execPath, ['--expose-gc', ...AGENT_NODE_FLAGS, ...nodeArgs, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...MESH_PROCESS_ENV, ...process.env },
  });
  const io = collect(child);
  // 'close': at 'exit' the last line of stdout may not have been read yet.
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  if (code !== 0) throw new Error(`${what} exited ${code}: ${io.err().trim().slice(-2000)}`);
  return JSON.parse(io.out().trim().split('\n').pop() ?? '') as T;
}

function collect(child: ReturnType<typeof spawn>): { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return { out: () => out, err: () => err };
}

async function measureKube(pods: number, nodeArgs: string[]): Promise<KubeScaleFigures> {
  // stdin is a pipe: closing it ends the API server child.
  const api = spawn(process.execPath, [KUBE_API_CHILD, '--pods', String(pods)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const apiOut = collect(api);
  const apiExit = new Promise<number | null>((resolve) => api.on('exit', (c) => resolve(c)));
  try {
    const kubeconfigPath = await new Promise<string>((resolve, reject) => {
      const onData = () => {
        const line = apiOut.out().split('\n')[0];
        if (!apiOut.out().includes('\n') || line === undefined) return;
        api.stdout.off('data', onData);
        resolve((JSON.parse(line) as { kubeconfigPath: string }).kubeconfigPath);
      };
      api.stdout.on('data', onData);
      void apiExit.then((c) =>
        reject(new Error(`scale-kube-api for ${pods} pods exited ${c}: ${apiOut.err().trim().slice(-2000)}`)),
      );
    });
    return await runMeasured<KubeScaleFigures>(`scale-kube-load for ${pods} pods`, nodeArgs, [
      KUBE_CHILD,
      '--kubeconfig',
      kubeconfigPath,
      '--pods',
      String(pods),
    ]);
  } finally {
    api.stdin.end();
    const timer = setTimeout(() => api.kill('SIGKILL'), 10_000);
    await apiExit;
    clearTimeout(timer);
  }
}
