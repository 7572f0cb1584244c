// A real Prometheus server (Debian's `prometheus` package) inside the namespace cluster, scraping
// every agent's and waypoint's :15020/metrics, so tests ask it the PromQL that Kiali and Istio's
// Grafana dashboards ask.
//
//   pod ns <prefix>-monitoring.prometheus (not in the mesh config: the agents never capture it)
//     prometheus --web.listen-address <pod ip>:9090
//       ├─ scrapes <node fabric ip>:15020  (job hypha-agent, one target per node)
//       └─ scrapes <waypoint pod ip>:15020 (job hypha-waypoint)
//
// Invariants:
// - Prometheus runs in a pod namespace of its own, so it reaches nodes and pods through the fabric
//   exactly as a Prometheus pod does in a cluster; nothing listens outside the run's namespaces.
// - Queries run inside that namespace (a Node one-liner, as LocalMesh.fetchInNode does).
// - startPrometheus resolves only once every target has been scraped and is `up`; stop() kills the
//   server and removes its temp dir (config and TSDB), also when the cluster is already gone.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { stringify } from 'yaml';
import type { ClusterPod } from './cluster/cluster.js';
import { hostPort, type LocalMesh } from './mesh/local-mesh.js';

/** One scrape target: `address` is host:port of a /metrics endpoint. */
export interface PrometheusTarget {
  job: string;
  address: string;
  /** Extra target labels (node, pod), as Kubernetes service discovery would attach. */
  labels?: Record<string, string>;
}

export interface StartPrometheusOptions {
  /** Node the Prometheus pod runs on. Default: the mesh's first node. */
  node?: string;
  /** Default `1s`. */
  scrapeInterval?: string;
  /** Targets to scrape. Default: meshScrapeTargets(mesh) (agents and waypoints running now). */
  targets?: readonly PrometheusTarget[];
  /** How long to wait for the server and for every target to be up. Default 30 s. */
  timeoutMs?: number;
  /**
   * `scrape_configs` used verbatim instead of one static job per target kind (for example the job
   * docs/operations.md documents, fed by kubernetesPodTargets). `targets` then only says how many
   * targets must come up.
   */
  scrapeConfigs?: readonly Record<string, unknown>[];
}

/** Kubernetes pod annotations that a scrape job's relabel rules read (`prometheus.io/*`). */
export type PodAnnotations = Readonly<Record<string, string>>;

/** One `static_configs` entry. */
export interface StaticConfig {
  targets: string[];
  labels: Record<string, string>;
}

/** One element of an instant vector. */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

/** One entry of /api/v1/targets' activeTargets (the fields tests read). */
export interface PromTargetStatus {
  labels: Record<string, string>;
  scrapeUrl: string;
  health: 'up' | 'down' | 'unknown';
  lastError: string;
  lastScrape: string;
}

/** One entry of /api/v1/metadata for a metric name: what HELP and TYPE the targets expose. */
export interface PromMetadata {
  type: string;
  help: string;
  unit: string;
}

export interface PrometheusServer {
  /** `http://<pod ip>:9090`, reachable from inside the cluster. */
  readonly url: string;
  readonly pod: ClusterPod;
  /** The generated prometheus.yml. */
  readonly config: string;
  readonly targets: readonly PrometheusTarget[];
  /** GET /api/v1/query (instant query at now); rejects on a PromQL error with Prometheus' message. */
  query(expr: string): Promise<PromSample[]>;
  /**
   * The value of a query that yields at most one sample (`sum(...)`, `histogram_quantile(...)`),
   * or undefined when the answer is empty (no such series).
   */
  value(expr: string): Promise<number | undefined>;
  /** GET /api/v1/targets, active targets. */
  targetStatus(): Promise<PromTargetStatus[]>;
  /** GET any path of the server (its own `/metrics`, `/-/ready`); the body of a 200 answer. */
  fetchText(path: string): Promise<string>;
  /** GET /api/v1/metadata: every distinct HELP/TYPE the targets expose for `metric`. */
  metadata(metric: string): Promise<PromMetadata[]>;
  /**
   * Resolves once every target has a committed scrape that started after `timeMs` (epoch ms): a
   * query then sees what the endpoints held at `timeMs`. Rejects after `timeoutMs`.
   */
  waitForScrapesAfter(timeMs: number, timeoutMs?: number): Promise<void>;
  /** Prometheus' own log (stderr), last 8 KiB. */
  log(): string;
  /** Kills the server, removes its pod namespace and temp dir. */
  stop(): Promise<void>;
}

const PORT = 9090;
const INSTALL_HINT = 'bash scripts/install-system-packages.sh test';

/** Where `cmd` is on PATH, or undefined. */
export function findOnPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

function requireTool(cmd: 'prometheus' | 'promtool'): string {
  const path = findOnPath(cmd);
  if (path === undefined) {
    throw new Error(
      `${cmd} is not installed (Debian's prometheus package ships the server and promtool): run \`${INSTALL_HINT}\` as root`,
    );
  }
  return path;
}

/** The mesh's /metrics endpoints: every running agent (node address) and waypoint (pod address). */
export function meshScrapeTargets(mesh: LocalMesh): PrometheusTarget[] {
  return [
    ...[...mesh.agents.keys()].map((node) => ({
      job: 'hypha-agent',
      address: hostPort(mesh.cluster.node(node).ip, 15020),
      labels: { node },
    })),
    ...[...mesh.waypoints.values()].map((w) => ({
      job: 'hypha-waypoint',
      address: hostPort(w.pod.ip, 15020),
      labels: { node: w.node, namespace: w.namespace, pod: w.pod.name },
    })),
  ];
}

/**
 * The mesh's agents and waypoints as Kubernetes pod discovery (`kubernetes_sd_configs`, role pod)
 * would hand them to relabeling: `__address__` is the pod IP without a port (the agent is
 * `hostNetwork`: its node's address), plus the `__meta_kubernetes_*` labels of the pod, its
 * annotations among them. Lets a documented Kubernetes scrape job run unchanged on the namespace
 * cluster, with `static_configs` in place of discovery.
 */
export function kubernetesPodTargets(
  mesh: LocalMesh,
  annotations: { agent: PodAnnotations; waypoint: PodAnnotations },
): StaticConfig[] {
  const meta = (ns: string, pod: string, node: string, ann: PodAnnotations): Record<string, string> => {
    const labels: Record<string, string> = {
      __meta_kubernetes_namespace: ns,
      __meta_kubernetes_pod_name: pod,
      __meta_kubernetes_pod_node_name: node,
    };
    for (const [k, v] of Object.entries(ann)) {
      const key = k.replace(/[^a-zA-Z0-9_]/g, '_');
      labels[`__meta_kubernetes_pod_annotation_${key}`] = v;
      labels[`__meta_kubernetes_pod_annotationpresent_${key}`] = 'true';
    }
    return labels;
  };
  return [
    ...[...mesh.agents.keys()].map((node) => ({
      targets: [mesh.cluster.node(node).ip],
      labels: meta('hypha-system', `hypha-agent-${node}`, node, annotations.agent),
    })),
    ...[...mesh.waypoints.values()].map((w) => ({
      targets: [w.pod.ip],
      labels: meta(w.namespace, w.pod.name, w.node, annotations.waypoint),
    })),
  ];
}

/** prometheus.yml scraping `targets` (one job per distinct `job`), or `scrapeConfigs` verbatim. */
export function prometheusConfig(
  targets: readonly PrometheusTarget[],
  scrapeInterval = '1s',
  scrapeConfigs?: readonly Record<string, unknown>[],
): string {
  const jobs = [...new Set(targets.map((t) => t.job))];
  return stringify({
    // Every job scrapes at this interval, whatever a documented job's own global said.
    global: { scrape_interval: scrapeInterval, scrape_timeout: scrapeInterval, evaluation_interval: '15s' },
    scrape_configs:
      scrapeConfigs ??
      jobs.map((job) => ({
        job_name: job,
        metrics_path: '/metrics',
        static_configs: targets
          .filter((t) => t.job === job)
          .map((t) => ({ targets: [t.address], ...(t.labels ? { labels: t.labels } : {}) })),
      })),
  });
}

/**
 * Starts Prometheus in a pod namespace of its own (`monitoring/prometheus-<n>`) scraping the mesh,
 * and resolves once every target is up. Fails with the install command when prometheus is missing.
 */
export async function startPrometheus(
  mesh: LocalMesh,
  options: StartPrometheusOptions = {},
): Promise<PrometheusServer> {
  const binary = requireTool('prometheus');
  const targets = options.targets ?? meshScrapeTargets(mesh);
  if (targets.length === 0) throw new Error('startPrometheus: nothing to scrape (start the agents first)');
  const timeoutMs = options.timeoutMs ?? 30_000;
  const node = options.node ?? mesh.cluster.nodes[0]!.name;
  const pod = await mesh.cluster.addPod({
    node,
    name: `prometheus-${mesh.cluster.pods.filter((p) => p.namespace === 'monitoring').length}`,
    namespace: 'monitoring',
  });
  const dir = await mkdtemp(join(tmpdir(), 'hypha-prometheus-'));
  const config = prometheusConfig(targets, options.scrapeInterval, options.scrapeConfigs);
  const url = `http://${hostPort(pod.ip, PORT)}`;
  let child: ChildProcess | undefined;
  let stderr = '';
  let exited: string | undefined;
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const p = child;
    if (p && p.exitCode === null && p.signalCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
        p.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        p.kill('SIGTERM');
      });
    }
    if (!mesh.cluster.destroyed) await mesh.cluster.removePod(pod).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };

  /** GET a path from inside the Prometheus namespace: status and body text. */
  const get = async (path: string): Promise<{ code: number; text: string }> => {
    if (exited !== undefined) throw new Error(`${exited}\n${stderr.slice(-2000)}`);
    const script = `fetch(${JSON.stringify(url + path)}).then(async r=>process.stdout.write(JSON.stringify({code:r.status,text:await r.text()}))).catch(e=>process.stdout.write(JSON.stringify({error:String(e.cause?.code??e.message)})))`;
    const r = await mesh.cluster.exec(pod.netns, process.execPath, ['-e', script]);
    const out = JSON.parse(r.stdout) as { code: number; text: string; error?: string };
    if (out.error !== undefined) throw new Error(`GET ${url}${path}: ${out.error}`);
    return out;
  };

  /** GET a path of the HTTP API; the parsed JSON envelope. */
  const api = async (path: string): Promise<{ status: string; data?: unknown; error?: string }> => {
    const out = await get(path);
    try {
      return JSON.parse(out.text) as { status: string; data?: unknown; error?: string };
    } catch {
      throw new Error(`GET ${url}${path}: HTTP ${out.code}: ${out.text.slice(0, 500)}`);
    }
  };

  const query = async (expr: string): Promise<PromSample[]> => {
    const body = await api(`/api/v1/query?query=${encodeURIComponent(expr)}`);
    if (body.status !== 'success') throw new Error(`PromQL ${expr}: ${body.error ?? JSON.stringify(body)}`);
    const data = body.data as { resultType: string; result: unknown };
    if (data.resultType === 'scalar') {
      const [, v] = data.result as [number, string];
      return [{ metric: {}, value: Number(v) }];
    }
    if (data.resultType !== 'vector') throw new Error(`PromQL ${expr}: a ${data.resultType}, not a vector`);
    return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((s) => ({
      metric: s.metric,
      value: Number(s.value[1]),
    }));
  };

  const targetStatus = async (): Promise<PromTargetStatus[]> => {
    const body = await api('/api/v1/targets?state=active');
    return (body.data as { activeTargets: PromTargetStatus[] }).activeTargets;
  };

  const server: PrometheusServer = {
    url,
    pod,
    config,
    targets,
    query,
    async value(expr) {
      const r = await query(expr);
      if (r.length > 1) throw new Error(`PromQL ${expr}: ${r.length} samples, expected at most one`);
      return r[0]?.value;
    },
    targetStatus,
    async fetchText(path) {
      const out = await get(path);
      if (out.code !== 200) throw new Error(`GET ${url}${path}: HTTP ${out.code}: ${out.text.slice(0, 500)}`);
      return out.text;
    },
    async metadata(metric) {
      const body = await api(`/api/v1/metadata?metric=${encodeURIComponent(metric)}`);
      return (body.data as Record<string, PromMetadata[]>)[metric] ?? [];
    },
    async waitForScrapesAfter(timeMs, waitMs = 15_000) {
      // `up` is appended in the same commit as the scrape's samples, stamped with the scrape's start.
      const expr = `count(timestamp(up) > ${timeMs / 1000})`;
      const deadline = Date.now() + waitMs;
      for (;;) {
        if ((await server.value(expr)) === targets.length) return;
        if (Date.now() > deadline) {
          const status = await targetStatus();
          throw new Error(
            `Prometheus did not scrape every target after ${new Date(timeMs).toISOString()} within ${waitMs} ms: ${JSON.stringify(status.map((t) => [t.scrapeUrl, t.health, t.lastScrape, t.lastError]))}`,
          );
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    log: () => stderr,
    stop,
  };

  try {
    await writeFile(join(dir, 'prometheus.yml'), config);
    child = mesh.cluster.spawn(
      pod.netns,
      binary,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        '--storage.tsdb.retention.time=1h',
        `--web.listen-address=${hostPort(pod.ip, PORT)}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8192);
    });
    child.once('exit', (code, signal) => {
      exited = `prometheus exited (code ${code}, signal ${signal})`;
    });
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const status = await targetStatus();
        const up = status.filter((t) => t.health === 'up').length;
        if (status.length === targets.length && up === targets.length) break;
        last = JSON.stringify(status.map((t) => [t.scrapeUrl, t.health, t.lastError]));
      } catch (err) {
        if (exited !== undefined) throw err;
        last = (err as Error).message; // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(
          `Prometheus targets not all up within ${timeoutMs} ms: ${last}\nprometheus log:\n${stderr.slice(-2000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    return server;
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `promtool check metrics` on one exposition: the complaints it prints, one per line (empty when it
 * has none). promtool exits non-zero when it complains; that is not an error here.
 */
export async function promtoolCheckMetrics(exposition: string): Promise<string[]> {
  const binary = requireTool('promtool');
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => {
      const lines = out.split('\n').filter((l) => l.trim() !== '');
      if (code !== 0 && lines.length === 0) reject(new Error(`promtool check metrics exited ${code}`));
      else resolve(lines);
    });
    child.stdin.on('error', () => {}); // promtool may exit before reading everything on a parse error
    child.stdin.end(exposition);
  });
}
