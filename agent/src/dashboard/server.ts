// `hypha dashboard`'s web server: the built UI (dist/dashboard/ui, bundled at build time: nothing
// loads from the internet) and a small JSON API over Prometheus and the admin endpoints.
//
//   GET  /api/graph                          service graph (nodes, edges with rate, success, p99, mTLS)
//   GET  /api/health                         agents per node, waypoints, CA, certificate warnings
//   GET  /api/workload?namespace=&name=      pods, nodes, certificates, policies, edges, golden signals
//   GET  /api/policies                       AuthorizationPolicies and recent denials
//   POST /api/explain {from,to,method,path}  `hypha policy explain --json` on the mesh config
//   GET  /api/tap                            recent tap events; /api/tap/stream: live (server-sent events)
//
// Every answer carries `prometheus: {ok, error}`: with Prometheus down the pages say so and show
// what the admin endpoints give (edges from the tap stream instead of rates).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { TapEvent } from '@hypha/shared/telemetry';
import { type AdminPoller, createAdminPoller } from './admin.js';
import type { Endpoint } from './fetch.js';
import type { KubeHealthSource } from './kube.js';
import {
  buildGraph,
  buildHealth,
  buildPolicies,
  buildWorkload,
  GRAPH_QUERIES,
  type GraphSamples,
  meshObjects,
} from './model.js';
import { createPrometheusClient, type PrometheusClient, type PromSeries } from './prometheus.js';

export interface DashboardOptions {
  /** Listen address; 127.0.0.1 by default. */
  address: string;
  /** 0 picks a free port. */
  port: number;
  /** Prometheus base URL (http://host:port) or unix:/path; undefined = none configured. */
  prometheus: string | undefined;
  admins: readonly Endpoint[];
  /** Mesh config file for the explain box (`hypha policy explain --config`). */
  config: string | undefined;
  /** How often admin endpoints are polled. */
  pollMs?: number;
  /** Cluster mode: agents' and waypoints' readiness through the API server's pod proxy. */
  kube?: KubeHealthSource;
}

export interface Dashboard {
  readonly url: string;
  readonly address: AddressInfo;
  readonly admin: AdminPoller;
  close(): Promise<void>;
}

const UI_DIR = new URL('./ui/', import.meta.url);
const HYPHA_BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));
const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/assets/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/assets/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

interface PromStatus {
  configured: boolean;
  ok: boolean;
  url: string | undefined;
  error: string | undefined;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

const LOOPBACK_HOSTS = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/;

export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const prom: PrometheusClient | undefined =
    o.prometheus !== undefined ? createPrometheusClient(o.prometheus) : undefined;
  // In a cluster, each agent/waypoint pod's admin port is one more endpoint (through port-forward).
  const kube = o.kube;
  const admin = createAdminPoller(
    o.admins,
    o.pollMs ?? 2000,
    kube !== undefined ? () => kube.adminEndpoints() : undefined,
  );
  const loopback = /^(127\.|::1$|localhost$)/.test(o.address);

  const promStatus = (error?: unknown): PromStatus => ({
    configured: prom !== undefined,
    ok: prom !== undefined && error === undefined,
    url: o.prometheus,
    error:
      prom === undefined
        ? 'No Prometheus configured (--prometheus URL)'
        : error === undefined
          ? undefined
          : `Prometheus is unreachable (${o.prometheus}): ${(error as Error).message}`,
  });

  /** The graph's samples, or the error that stopped them. */
  const graphSamples = async (): Promise<{ samples: GraphSamples | undefined; status: PromStatus }> => {
    if (prom === undefined) return { samples: undefined, status: promStatus() };
    try {
      const keys = Object.keys(GRAPH_QUERIES) as (keyof GraphSamples)[];
      const answers = await Promise.all(keys.map((k) => prom.query(GRAPH_QUERIES[k])));
      const samples = Object.fromEntries(keys.map((k, i) => [k, answers[i]])) as unknown as GraphSamples;
      return { samples, status: promStatus() };
    } catch (err) {
      return { samples: undefined, status: promStatus(err) };
    }
  };

  const graph = async () => {
    const { samples, status } = await graphSamples();
    const g = buildGraph(meshObjects(admin.targets), samples, admin.recentEvents(), Date.now());
    return { prometheus: status, ...g };
  };

  const workload = async (namespace: string, name: string) => {
    const view = buildWorkload(admin.targets, namespace, name);
    const g = await graph();
    const id = `${namespace}/${name}`;
    const edges = g.edges.filter((e) => e.source === id || e.target === id || e.target === `svc:${id}`);
    let series: { name: string; unit: string; points: [number, number][] }[] = [];
    let status = g.prometheus;
    if (prom !== undefined && g.prometheus.ok) {
      const end = Math.floor(Date.now() / 1000);
      const start = end - 15 * 60;
      const step = 15;
      const d = `destination_workload="${name}",destination_workload_namespace="${namespace}"`;
      const s = `source_workload="${name}",source_workload_namespace="${namespace}"`;
      const q: [string, string, string][] = [
        ['requests/s in', 'req/s', `sum(rate(istio_requests_total{reporter="waypoint",${d}}[1m]))`],
        ['requests/s out', 'req/s', `sum(rate(istio_requests_total{reporter="waypoint",${s}}[1m]))`],
        [
          'errors/s (5xx) in',
          'req/s',
          `sum(rate(istio_requests_total{reporter="waypoint",${d},response_code=~"5.."}[1m]))`,
        ],
        [
          'denied/s (4xx) out',
          'req/s',
          `sum(rate(istio_requests_total{reporter="waypoint",${s},response_code=~"4.."}[1m]))`,
        ],
        ...([0.5, 0.95, 0.99].map((qq) => [
          `latency p${qq * 100} in`,
          'ms',
          `histogram_quantile(${qq}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="waypoint",${d}}[1m])))`,
        ]) as [string, string, string][]),
        [
          'connections/s in',
          'conn/s',
          `sum(rate(istio_tcp_connections_opened_total{reporter="destination",${d}}[1m]))`,
        ],
        [
          'connections/s out',
          'conn/s',
          `sum(rate(istio_tcp_connections_opened_total{reporter="source",${s}}[1m]))`,
        ],
        ['bytes/s in', 'B/s', `sum(rate(istio_tcp_received_bytes_total{reporter="destination",${d}}[1m]))`],
        ['bytes/s out', 'B/s', `sum(rate(istio_tcp_sent_bytes_total{reporter="destination",${d}}[1m]))`],
      ];
      try {
        const answers: PromSeries[][] = await Promise.all(
          q.map(([, , expr]) => prom.queryRange(expr, start, end, step)),
        );
        series = q.map(([label, unit], i) => ({
          name: label,
          unit,
          points: (answers[i]?.[0]?.points ?? []).filter(([, v]) => Number.isFinite(v)),
        }));
      } catch (err) {
        status = promStatus(err);
      }
    }
    return { prometheus: status, workload: view ?? null, edges, series };
  };

  const explain = (body: Record<string, unknown>): Promise<{ status: number; body: unknown }> => {
    const config = o.config ?? (process.env.HYPHA_CONFIG?.replace(/^file:/, '') || undefined);
    if (config === undefined) {
      return Promise.resolve({
        status: 400,
        body: {
          error: 'the explain box reads the mesh config: start the dashboard with --config <mesh.yaml>',
        },
      });
    }
    const str = (k: string) =>
      typeof body[k] === 'string' && body[k] !== '' ? (body[k] as string) : undefined;
    const from = str('from');
    const to = str('to');
    if (from === undefined || to === undefined) {
      return Promise.resolve({
        status: 400,
        body: { error: 'give a source (from: ns/pod) and a destination (to: ns/name:port)' },
      });
    }
    const args = [HYPHA_BIN, 'policy', 'explain', '--config', config, '--json', '--from', from, '--to', to];
    for (const k of ['method', 'path', 'host'] as const) {
      const v = str(k);
      if (v !== undefined) args.push(`--${k}`, v);
    }
    return new Promise((resolve) => {
      execFile(process.execPath, args, { timeout: 15_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
        try {
          resolve({ status: 200, body: { exitCode: code, result: JSON.parse(stdout) } });
        } catch {
          const message = stderr
            .replace(/^hypha: (usage )?error: /, '')
            .replace(/\n\(run with --help.*$/s, '')
            .trim();
          resolve({
            status: code === 2 ? 400 : 422,
            body: { exitCode: code, error: message || `explain exited ${code}` },
          });
        }
      });
    });
  };

  const sse = new Set<http.ServerResponse>();
  const unsubscribe = admin.onEvent((e: TapEvent) => {
    const line = `data: ${JSON.stringify(e)}\n\n`;
    for (const res of sse) {
      // A browser that cannot keep up misses events rather than growing this process.
      if (res.writableLength < 1 << 20) res.write(line);
    }
  });

  const route = async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    const path = url.pathname;
    if (req.method === 'GET' && Object.hasOwn(STATIC, path)) {
      const s = STATIC[path]!;
      let body: Buffer;
      try {
        body = await readFile(new URL(s.file, UI_DIR));
      } catch {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('the dashboard UI is not built: run npm run build (npx turbo run build)\n');
        return;
      }
      res.writeHead(200, {
        'content-type': s.type,
        'content-length': body.length,
        'cache-control': 'no-cache',
      });
      res.end(body);
      return;
    }
    if (path === '/api/explain') {
      if (req.method !== 'POST') return send(res, 405, { error: 'use POST /api/explain with a JSON body' });
      let raw = '';
      for await (const chunk of req) {
        raw += chunk;
        if (raw.length > 64 * 1024) return send(res, 413, { error: 'request body too large' });
      }
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        return send(res, 400, { error: 'the body must be JSON: {"from":"ns/pod","to":"ns/service:port"}' });
      }
      if (typeof body !== 'object' || body === null)
        return send(res, 400, { error: 'the body must be a JSON object' });
      const r = await explain(body as Record<string, unknown>);
      return send(res, r.status, r.body);
    }
    if (req.method !== 'GET') return send(res, 405, { error: `use GET ${path}` });
    switch (path) {
      case '/api/graph':
        return send(res, 200, await graph());
      case '/api/health': {
        const { status } = prom !== undefined ? await promPing() : { status: promStatus() };
        const kube = o.kube?.snapshot();
        return send(res, 200, {
          prometheus: status,
          ...buildHealth(admin.targets, Date.now(), kube?.pods ?? []),
          admins: admin.targets.map(targetView),
          kubernetes: kube === undefined ? null : { ok: kube.error === undefined, error: kube.error ?? null },
        });
      }
      case '/api/workload': {
        const ns = url.searchParams.get('namespace');
        const name = url.searchParams.get('name');
        if (!ns || !name) return send(res, 400, { error: 'give ?namespace=<ns>&name=<workload>' });
        const w = await workload(ns, name);
        return send(
          res,
          w.workload === null ? 404 : 200,
          w.workload === null
            ? { ...w, error: `no workload ${ns}/${name} in the mesh config the agents hold` }
            : w,
        );
      }
      case '/api/policies': {
        const { status } = prom !== undefined ? await promPing() : { status: promStatus() };
        return send(res, 200, { prometheus: status, ...buildPolicies(admin.targets, admin.recentEvents()) });
      }
      case '/api/tap':
        return send(res, 200, { events: admin.recentEvents().slice(-500) });
      case '/api/tap/stream': {
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-store',
          connection: 'keep-alive',
        });
        res.write(': connected\n\n');
        sse.add(res);
        res.on('close', () => sse.delete(res));
        return;
      }
      default:
        if (path.startsWith('/api/')) return send(res, 404, { error: `no such API ${path}` });
        // Client-side routes (#/...) all start at the page.
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: the dashboard is at /\n');
    }
  };

  const promPing = async (): Promise<{ status: PromStatus }> => {
    try {
      await prom!.query('vector(1)');
      return { status: promStatus() };
    } catch (err) {
      return { status: promStatus(err) };
    }
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    // Bound to loopback, refuse other Host names: a web page elsewhere cannot reach it by DNS rebinding.
    if (loopback && !LOOPBACK_HOSTS.test(req.headers.host ?? '')) {
      send(res, 403, {
        error: `Host "${req.headers.host}" refused: open the dashboard at its loopback address`,
      });
      return;
    }
    route(req, res, url).catch((err: Error) => {
      if (!res.headersSent) send(res, 500, { error: err.message });
      else res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.address, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/`,
    address,
    admin,
    async close() {
      unsubscribe();
      admin.close();
      o.kube?.close();
      for (const r of sse) r.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function targetView(t: AdminPoller['targets'][number]) {
  return {
    label: t.label,
    kind: t.kind,
    name: t.name ?? null,
    ok: t.ok,
    error: t.error ?? null,
    tap: t.tapConnected,
    lastSeen: t.lastSeen !== undefined ? new Date(t.lastSeen).toISOString() : null,
  };
}
