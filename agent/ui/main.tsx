// The dashboard's browser side: preact pages over the server's JSON API, cytoscape for the service
// graph, uPlot for the golden-signal charts. Pages poll every 2 s (the tap table streams), so the
// view follows the mesh without a reload. Routes live in the URL hash: #/graph, #/workload/ns/name,
// #/policies, #/health, #/tap.
import cytoscape from 'cytoscape';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';

// ---------------------------------------------------------------------------------------------
// API types (what agent/src/dashboard answers)

interface PromStatus {
  configured: boolean;
  ok: boolean;
  url: string | null;
  error: string | null;
}
interface GraphNode {
  id: string;
  kind: 'workload' | 'service' | 'waypoint' | 'unknown';
  namespace: string;
  name: string;
  waypoint?: string;
}
interface GraphEdge {
  id: string;
  source: string;
  target: string;
  protocol: 'http' | 'tcp';
  rate: number;
  successRate?: number;
  rate4xx?: number;
  p99Ms?: number;
  bytesRate?: number;
  mtls: boolean;
  sourcePrincipals: string[];
  destinationPrincipals: string[];
  via?: string;
}
interface GraphAnswer {
  prometheus: PromStatus;
  from: 'prometheus' | 'tap';
  nodes: GraphNode[];
  edges: GraphEdge[];
  bindings: { waypoint: string; service: string }[];
}
interface TapEvent {
  kind: 'request' | 'connection';
  time: string;
  reporter: string;
  direction?: string;
  source: { ip?: string; port?: number; workload?: string; namespace?: string; identity?: string };
  destination: {
    ip?: string;
    port?: number;
    workload?: string;
    namespace?: string;
    identity?: string;
    service?: string;
  };
  mtls: boolean;
  method?: string;
  path?: string;
  status?: number;
  flags: string;
  durationMs: number;
  bytesSent: number;
  bytesReceived: number;
  error?: string;
  policy?: string;
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function getJson<T>(path: string): Promise<T> {
  const r = await fetch(path, { cache: 'no-store' });
  const body = (await r.json()) as T & { error?: string };
  if (!r.ok && r.status !== 404) throw new Error(body.error ?? `${path}: HTTP ${r.status}`);
  return body;
}

/** Polls `path` every `ms`; returns the last answer and the last error. */
function usePoll<T>(path: string, ms = 2000): { data: T | undefined; error: string | undefined } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const d = await getJson<T>(path);
        if (!stop) {
          setData(d);
          setError(undefined);
        }
      } catch (e) {
        if (!stop) setError(`the dashboard server does not answer (${(e as Error).message})`);
      }
      if (!stop) timer = setTimeout(tick, ms);
    };
    void tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [path, ms]);
  return { data, error };
}

const fmtRate = (r: number | undefined, unit: string) =>
  r === undefined ? '–' : `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)} ${unit}`;
const fmtPct = (p: number | undefined) => (p === undefined ? '–' : `${(p * 100).toFixed(p === 1 ? 0 : 1)}%`);
const fmtMs = (ms: number | undefined) =>
  ms === undefined ? '–' : `${ms < 10 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
const fmtBytes = (b: number | undefined) =>
  b === undefined
    ? '–'
    : b > 1e6
      ? `${(b / 1e6).toFixed(1)} MB/s`
      : b > 1e3
        ? `${(b / 1e3).toFixed(1)} kB/s`
        : `${b.toFixed(0)} B/s`;
const label = (id: string) => id.replace(/^svc:/, '');
const strip = (id: string | undefined) => id?.replace(/^spiffe:\/\//, '');

function untilText(iso: string | undefined): string {
  if (iso === undefined) return '–';
  const ms = Date.parse(iso) - Date.now();
  if (ms <= 0) return `expired ${Math.round(-ms / 60000)} min ago`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  return `in ${h > 0 ? `${h} h ` : ''}${m} min`;
}

function PromBanner({ status }: { status: PromStatus | undefined }) {
  if (status === undefined || status.ok) return null;
  return (
    <div class="banner warn" data-testid="prometheus-down">
      {status.error}. Showing what the admin endpoints give (live tap, pods, certificates, policies, health);
      rates are estimated from the last minute of tap events.
    </div>
  );
}

// ---------------------------------------------------------------------------------------------
// Service graph

const GRAPH_STYLE: cytoscape.StylesheetJson = [
  {
    selector: 'node',
    style: {
      label: 'data(label)',
      'font-size': 11,
      'text-valign': 'bottom',
      'text-margin-y': 4,
      color: '#1d2733',
      'background-color': '#3b82f6',
      width: 26,
      height: 26,
    },
  },
  { selector: 'node[kind = "service"]', style: { shape: 'triangle', 'background-color': '#8b5cf6' } },
  { selector: 'node[kind = "waypoint"]', style: { shape: 'diamond', 'background-color': '#f59e0b' } },
  { selector: 'node[kind = "unknown"]', style: { 'background-color': '#9ca3af' } },
  { selector: 'node[?hasWaypoint]', style: { 'border-width': 3, 'border-color': '#f59e0b' } },
  {
    selector: ':parent',
    style: {
      'background-color': '#eef2f7',
      'border-color': '#c5ceda',
      'border-width': 1,
      label: 'data(label)',
      'text-valign': 'top',
      'font-weight': 'bold',
      color: '#536175',
    },
  },
  {
    selector: 'edge',
    style: {
      width: 2,
      'curve-style': 'bezier',
      'target-arrow-shape': 'triangle',
      'line-color': '#16a34a',
      'target-arrow-color': '#16a34a',
      label: 'data(label)',
      'font-size': 9,
      'text-background-color': '#ffffff',
      'text-background-opacity': 0.85,
      'text-rotation': 'autorotate',
    },
  },
  {
    selector: 'edge[!mtls]',
    style: { 'line-style': 'dashed', 'line-color': '#dc2626', 'target-arrow-color': '#dc2626' },
  },
  { selector: 'edge[?errors]', style: { 'line-color': '#ea580c', 'target-arrow-color': '#ea580c' } },
  {
    selector: 'edge[?binding]',
    style: {
      'line-style': 'dotted',
      'line-color': '#f59e0b',
      'target-arrow-color': '#f59e0b',
      'target-arrow-shape': 'none',
      width: 1.5,
      color: '#9a6700',
    },
  },
];

function edgeLabel(e: GraphEdge): string {
  const rate = e.protocol === 'http' ? fmtRate(e.rate, 'rps') : fmtRate(e.rate, 'cps');
  const parts = [`${e.mtls ? 'mTLS ' : ''}${rate}`, fmtPct(e.successRate)];
  if (e.p99Ms !== undefined) parts.push(`p99 ${fmtMs(e.p99Ms)}`);
  return parts.join(' · ');
}

function GraphPage() {
  const { data, error } = usePoll<GraphAnswer>('/api/graph');
  const box = useRef<HTMLDivElement>(null);
  const cy = useRef<cytoscape.Core | undefined>(undefined);
  const shape = useRef('');

  useEffect(() => {
    if (box.current === null) return;
    const c = cytoscape({ container: box.current, style: GRAPH_STYLE, wheelSensitivity: 0.3, maxZoom: 2.5 });
    c.on('tap', 'node', (ev) => {
      const d = ev.target.data() as { kind: string; namespace: string; name: string };
      if (d.kind === 'workload' || d.kind === 'waypoint')
        location.hash = `#/workload/${d.namespace}/${d.name}`;
    });
    cy.current = c;
    return () => c.destroy();
  }, []);

  useEffect(() => {
    const c = cy.current;
    if (c === undefined || data === undefined) return;
    const namespaces = [...new Set(data.nodes.map((n) => n.namespace).filter(Boolean))];
    const els: cytoscape.ElementDefinition[] = [
      ...namespaces.map((ns) => ({
        group: 'nodes' as const,
        data: { id: `ns:${ns}`, label: `namespace ${ns}`, kind: 'namespace' },
      })),
      ...data.nodes.map((n) => ({
        group: 'nodes' as const,
        data: {
          id: n.id,
          label:
            n.kind === 'service'
              ? `${n.name} (service)`
              : n.kind === 'waypoint'
                ? `${n.name} (waypoint)`
                : n.name,
          kind: n.kind,
          namespace: n.namespace,
          name: n.name,
          hasWaypoint: n.waypoint !== undefined,
          ...(n.namespace ? { parent: `ns:${n.namespace}` } : {}),
          ...(n.kind === 'waypoint' ? { waypointName: `${n.namespace}/${n.name}` } : {}),
        },
      })),
      ...data.edges.map((e) => ({
        group: 'edges' as const,
        data: {
          id: e.id,
          source: e.source,
          target: e.target,
          label: edgeLabel(e),
          mtls: e.mtls,
          errors: e.successRate !== undefined && e.successRate < 0.99,
        },
      })),
      ...data.bindings.map((b) => ({
        group: 'edges' as const,
        data: {
          id: `bind:${b.waypoint}->${b.service}`,
          source: b.waypoint,
          target: b.service,
          binding: true,
          label: 'serves',
        },
      })),
    ];
    // Update in place; lay out again only when the set of nodes and edges changed.
    const ids = new Set(els.map((e) => e.data.id as string));
    c.batch(() => {
      c.elements().forEach((el) => {
        if (!ids.has(el.id())) el.remove();
      });
      for (const el of els) {
        const existing = c.getElementById(el.data.id as string);
        if (existing.nonempty()) existing.data(el.data);
        else c.add(el);
      }
    });
    const nextShape = [...ids].sort().join('|');
    if (nextShape !== shape.current) {
      shape.current = nextShape;
      c.layout({
        name: 'breadthfirst',
        directed: true,
        padding: 30,
        spacingFactor: 1.3,
        animate: false,
      }).run();
    }
  }, [data]);

  return (
    <section>
      <h1>Service graph</h1>
      <PromBanner status={data?.prometheus} />
      {error && <div class="banner error">{error}</div>}
      <p class="hint">
        Workloads (●), services (▲) and waypoints (◆), grouped by namespace. Edges: rate · success · p99,
        green when mTLS, dashed red when plaintext; a dotted line joins a waypoint to the services it serves.{' '}
        {data?.from === 'tap' ? 'Source: the last minute of tap events.' : 'Source: Prometheus, last minute.'}{' '}
        Click a workload for its page.
      </p>
      <div class="graph" ref={box} data-testid="graph" />
      <h2>Edges</h2>
      <table data-testid="edges">
        <thead>
          <tr>
            <th>from</th>
            <th>to</th>
            <th>protocol</th>
            <th>rate</th>
            <th>success</th>
            <th>p99</th>
            <th>security</th>
            <th>identities</th>
            <th>path</th>
          </tr>
        </thead>
        <tbody>
          {(data?.edges ?? []).map((e) => (
            <tr key={e.id} data-edge={`${label(e.source)}->${label(e.target)}`}>
              <td>{label(e.source)}</td>
              <td>{label(e.target)}</td>
              <td>{e.protocol.toUpperCase()}</td>
              <td data-testid="rate">
                {e.protocol === 'http' ? fmtRate(e.rate, 'req/s') : fmtRate(e.rate, 'conn/s')}
                {e.bytesRate !== undefined && e.bytesRate > 0 ? ` (${fmtBytes(e.bytesRate)})` : ''}
              </td>
              <td>
                {fmtPct(e.successRate)}
                {e.rate4xx ? ` (4xx ${fmtRate(e.rate4xx, '/s')})` : ''}
              </td>
              <td>{fmtMs(e.p99Ms)}</td>
              <td data-testid="security">{e.mtls ? 'mTLS' : 'plaintext'}</td>
              <td class="ids">
                {e.sourcePrincipals.join(', ') || '–'} → {e.destinationPrincipals.join(', ') || '–'}
              </td>
              <td>{e.via ? `via waypoint ${e.via}` : 'direct'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Workload page

interface WorkloadAnswer {
  prometheus: PromStatus;
  error?: string;
  workload: {
    namespace: string;
    name: string;
    pods: {
      name: string;
      node: string;
      ips: string[];
      identity: string;
      ready?: boolean;
      mtlsMode?: string;
    }[];
    nodes: string[];
    certificates: { identity: string; state: string; serial?: string; notAfter?: string; holder: string }[];
    policies: { namespace: string; name: string; action: string; appliesTo: string; enforcedBy: string }[];
  } | null;
  edges: GraphEdge[];
  series: { name: string; unit: string; points: [number, number][] }[];
}

function Chart({ title, unit, points }: { title: string; unit: string; points: [number, number][] }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (box.current === null) return;
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    // The whole window, also while only a few points exist (a fresh workload).
    const now = Date.now() / 1000;
    const from = Math.min(xs[0] ?? now, now - 15 * 60);
    const plot = new uPlot(
      {
        width: 340,
        height: 150,
        legend: { show: false },
        scales: { x: { time: true, range: [from, now] } },
        series: [{}, { label: title, stroke: '#2563eb', width: 1.5, fill: 'rgba(37,99,235,0.08)' }],
        axes: [{}, { size: 50, values: (_u, vals) => vals.map((v) => `${+v.toFixed(2)}`) }],
      },
      [xs, ys],
      box.current,
    );
    return () => plot.destroy();
  }, [title, points]);
  return (
    <figure class="chart">
      <figcaption>
        {title} <span class="unit">({unit})</span>
      </figcaption>
      <div ref={box} />
    </figure>
  );
}

function WorkloadPage({ namespace, name }: { namespace: string; name: string }) {
  const { data, error } = usePoll<WorkloadAnswer>(
    `/api/workload?namespace=${encodeURIComponent(namespace)}&name=${encodeURIComponent(name)}`,
    5000,
  );
  const w = data?.workload;
  return (
    <section>
      <h1>
        Workload {namespace}/{name}
      </h1>
      <PromBanner status={data?.prometheus} />
      {error && <div class="banner error">{error}</div>}
      {data?.error && <div class="banner error">{data.error}</div>}
      <h2>Golden signals (last 15 min)</h2>
      {data?.series.length ? (
        <div class="charts">
          {data.series
            .filter((s) => s.points.length > 0)
            .map((s) => (
              <Chart key={s.name} title={s.name} unit={s.unit} points={s.points} />
            ))}
        </div>
      ) : (
        <p class="hint">
          No series:{' '}
          {data?.prometheus.ok ? 'no traffic recorded for this workload' : 'Prometheus is not available'}.
        </p>
      )}
      <h2>Edges</h2>
      <table>
        <thead>
          <tr>
            <th>from</th>
            <th>to</th>
            <th>rate</th>
            <th>success</th>
            <th>p99</th>
            <th>security</th>
          </tr>
        </thead>
        <tbody>
          {(data?.edges ?? []).map((e) => (
            <tr key={e.id}>
              <td>{label(e.source)}</td>
              <td>{label(e.target)}</td>
              <td>{e.protocol === 'http' ? fmtRate(e.rate, 'req/s') : fmtRate(e.rate, 'conn/s')}</td>
              <td>{fmtPct(e.successRate)}</td>
              <td>{fmtMs(e.p99Ms)}</td>
              <td>{e.mtls ? 'mTLS' : 'plaintext'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Pods</h2>
      <table data-testid="pods">
        <thead>
          <tr>
            <th>pod</th>
            <th>node</th>
            <th>IPs</th>
            <th>identity</th>
            <th>mTLS mode</th>
          </tr>
        </thead>
        <tbody>
          {(w?.pods ?? []).map((p) => (
            <tr key={p.name}>
              <td>{p.name}</td>
              <td>{p.node}</td>
              <td>{p.ips.join(' ')}</td>
              <td>{strip(p.identity)}</td>
              <td>{p.mtlsMode ?? '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Certificates</h2>
      <table data-testid="certificates">
        <thead>
          <tr>
            <th>identity</th>
            <th>state</th>
            <th>expires</th>
            <th>not after</th>
            <th>held by</th>
          </tr>
        </thead>
        <tbody>
          {(w?.certificates ?? []).map((c) => (
            <tr key={`${c.holder}${c.serial}`}>
              <td data-testid="cert-identity">{c.identity}</td>
              <td>{c.state}</td>
              <td>{untilText(c.notAfter)}</td>
              <td data-testid="cert-expiry">{c.notAfter ?? '–'}</td>
              <td>{c.holder}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Policies selecting it</h2>
      {w?.policies.length ? (
        <ul>
          {w.policies.map((p) => (
            <li key={`${p.namespace}/${p.name}`}>
              <b>{p.action}</b> {p.namespace}/{p.name}: {p.appliesTo}, enforced by {p.enforcedBy}
            </li>
          ))}
        </ul>
      ) : (
        <p class="hint">No AuthorizationPolicy selects it: every connection is allowed.</p>
      )}
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Policies

interface PoliciesAnswer {
  prometheus: PromStatus;
  policies: {
    namespace: string;
    name: string;
    action: string;
    appliesTo: string;
    enforcedBy: string;
    dryRun: boolean;
    rules: unknown[];
    matches: string[];
  }[];
  denials: {
    time: string;
    reporter: string;
    source: string;
    sourceIdentity?: string;
    destination: string;
    request?: string;
    status?: number;
    policy?: string;
    reason: string;
  }[];
}

function ExplainBox() {
  const [form, setForm] = useState({ from: '', to: '', method: '', path: '' });
  const [answer, setAnswer] = useState<string>('');
  const [decision, setDecision] = useState<string>('');
  const run = async (ev: Event) => {
    ev.preventDefault();
    setAnswer('…');
    const r = await fetch('/api/explain', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(form),
    });
    const body = (await r.json()) as { error?: string; result?: Record<string, unknown> };
    if (body.error !== undefined) {
      setDecision('error');
      setAnswer(body.error);
      return;
    }
    const res = body.result as {
      decision: string;
      waypoint: { name: string; decision: string; lines: string[] } | null;
      targets: { workload: string; port: number; decision: string; lines: string[] }[];
    };
    setDecision(res.decision);
    const lines: string[] = [];
    if (res.waypoint)
      lines.push(
        `waypoint ${res.waypoint.name} (L7): ${res.waypoint.decision.toUpperCase()}`,
        ...res.waypoint.lines.map((l) => `  ${l}`),
      );
    for (const t of res.targets)
      lines.push(`${t.workload}:${t.port}: ${t.decision.toUpperCase()}`, ...t.lines.map((l) => `  ${l}`));
    setAnswer(lines.join('\n'));
  };
  const field = (k: keyof typeof form, placeholder: string) => (
    <input
      name={k}
      placeholder={placeholder}
      value={form[k]}
      onInput={(e) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value })}
    />
  );
  return (
    <form class="explain" onSubmit={run} data-testid="explain">
      {field('from', 'from: demo/client')}
      {field('to', 'to: demo/echo:80')}
      {field('method', 'method (GET)')}
      {field('path', 'path (/admin)')}
      <button type="submit">Explain</button>
      {decision && (
        <div class={`decision ${decision}`} data-testid="explain-decision">
          {decision.toUpperCase()}
        </div>
      )}
      {answer && <pre data-testid="explain-answer">{answer}</pre>}
    </form>
  );
}

function PoliciesPage() {
  const { data, error } = usePoll<PoliciesAnswer>('/api/policies');
  return (
    <section>
      <h1>Authorization</h1>
      {error && <div class="banner error">{error}</div>}
      <h2>AuthorizationPolicies</h2>
      <table data-testid="policies">
        <thead>
          <tr>
            <th>policy</th>
            <th>action</th>
            <th>applies to</th>
            <th>enforced by</th>
            <th>pods it selects now</th>
            <th>rules</th>
          </tr>
        </thead>
        <tbody>
          {(data?.policies ?? []).map((p) => (
            <tr key={`${p.namespace}/${p.name}`}>
              <td>
                {p.namespace}/{p.name}
                {p.dryRun ? ' (dry-run)' : ''}
              </td>
              <td>{p.action}</td>
              <td>{p.appliesTo}</td>
              <td>{p.enforcedBy}</td>
              <td>{p.matches.join(', ') || '–'}</td>
              <td>
                <code>{JSON.stringify(p.rules)}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Recent denials</h2>
      <table data-testid="denials">
        <thead>
          <tr>
            <th>time</th>
            <th>source</th>
            <th>destination</th>
            <th>request</th>
            <th>status</th>
            <th>policy</th>
            <th>reason</th>
            <th>reported by</th>
          </tr>
        </thead>
        <tbody>
          {(data?.denials ?? []).map((d, i) => (
            <tr key={`${d.time}${i}`}>
              <td>{d.time.slice(11, 23)}</td>
              <td>
                {d.source}
                <div class="ids">{d.sourceIdentity ?? 'no identity'}</div>
              </td>
              <td>{d.destination}</td>
              <td>{d.request ?? 'connection'}</td>
              <td>{d.status ?? '–'}</td>
              <td data-testid="denial-policy">{d.policy ?? '–'}</td>
              <td>{d.reason}</td>
              <td>{d.reporter}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data?.denials.length === 0 && <p class="hint">No denial since the dashboard started.</p>}
      <h2>Explain</h2>
      <p class="hint">
        Runs hypha policy explain on the mesh config: the decision the agents and the waypoint take.
      </p>
      <ExplainBox />
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Mesh health

interface HealthAnswer {
  prometheus: PromStatus;
  nodes: {
    node: string;
    ready: boolean;
    reasons: string[];
    admin?: string;
    release?: string;
    configVersion?: number;
    connections?: number;
    certificates: number;
    pods: number;
    lastSeen?: string;
  }[];
  waypoints: {
    name: string;
    ready: boolean;
    reasons: string[];
    release?: string;
    configVersion?: number;
    connections?: number;
    configErrors: string[];
  }[];
  ca: { ok: boolean; message: string };
  warnings: { level: string; identity: string; holder: string; notAfter?: string; message: string }[];
  admins: {
    label: string;
    kind: string;
    name: string | null;
    ok: boolean;
    error: string | null;
    tap: boolean;
  }[];
  kubernetes: { ok: boolean; error: string | null } | null;
}

function HealthPage() {
  const { data, error } = usePoll<HealthAnswer>('/api/health');
  return (
    <section>
      <h1>Mesh health</h1>
      <PromBanner status={data?.prometheus} />
      {error && <div class="banner error">{error}</div>}
      {data?.kubernetes && !data.kubernetes.ok && (
        <div class="banner warn" data-testid="kubernetes-down">
          {data.kubernetes.error}: showing the pods as last seen.
        </div>
      )}
      {data?.kubernetes?.ok && (
        <p class="hint">
          Agents and waypoints found through the Kubernetes API; readiness read through the pod proxy.
        </p>
      )}
      <h2>Node agents</h2>
      <table data-testid="nodes">
        <thead>
          <tr>
            <th>node</th>
            <th>status</th>
            <th>version</th>
            <th>config</th>
            <th>connections</th>
            <th>pods</th>
            <th>certificates</th>
            <th>why</th>
          </tr>
        </thead>
        <tbody>
          {(data?.nodes ?? []).map((n) => (
            <tr key={n.node} data-node={n.node} class={n.ready ? '' : 'bad'}>
              <td>{n.node}</td>
              <td data-testid="node-status">{n.ready ? 'ready' : 'NOT READY'}</td>
              <td data-testid="node-release">{n.release ?? '–'}</td>
              <td>
                {n.configVersion === undefined
                  ? '–'
                  : n.configVersion > 0
                    ? `synced (v${n.configVersion})`
                    : 'not synced'}
              </td>
              <td>{n.connections ?? '–'}</td>
              <td>{n.pods}</td>
              <td>{n.certificates}</td>
              <td>{n.reasons.join('; ') || '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Waypoints</h2>
      <table data-testid="waypoints">
        <thead>
          <tr>
            <th>waypoint</th>
            <th>status</th>
            <th>version</th>
            <th>config version</th>
            <th>HTTP/2 connections</th>
            <th>why</th>
          </tr>
        </thead>
        <tbody>
          {(data?.waypoints ?? []).map((w) => (
            <tr key={w.name} class={w.ready ? '' : 'bad'}>
              <td>{w.name}</td>
              <td>{w.ready ? 'ready' : 'NOT READY'}</td>
              <td>{w.release ?? '–'}</td>
              <td>{w.configVersion ?? '–'}</td>
              <td>{w.connections ?? '–'}</td>
              <td>{[...w.reasons, ...w.configErrors].join('; ') || '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Certificate authority</h2>
      <p data-testid="ca" class={data?.ca.ok ? '' : 'bad'}>
        {data?.ca.message ?? '…'}
      </p>
      <h2>Certificate warnings</h2>
      {data?.warnings.length ? (
        <ul data-testid="cert-warnings">
          {data.warnings.map((w) => (
            <li key={`${w.holder}${w.identity}`} class={w.level}>
              {w.identity} ({w.holder}): {w.message}
            </li>
          ))}
        </ul>
      ) : (
        <p class="hint">No certificate near expiry.</p>
      )}
      <h2>Admin endpoints</h2>
      <ul>
        {(data?.admins ?? []).map((a) => (
          <li key={a.label}>
            {a.label}: {a.kind} {a.name ?? ''} — {a.ok ? 'answering' : `not answering (${a.error})`}
            {a.tap ? ', tap streaming' : ''}
          </li>
        ))}
      </ul>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Live tap

function TapPage() {
  const [events, setEvents] = useState<TapEvent[]>([]);
  const [filter, setFilter] = useState('');
  const [live, setLive] = useState(false);
  useEffect(() => {
    let stop = false;
    void getJson<{ events: TapEvent[] }>('/api/tap').then((r) => {
      if (!stop) setEvents(r.events.slice(-200).reverse());
    });
    const es = new EventSource('/api/tap/stream');
    es.onopen = () => setLive(true);
    es.onerror = () => setLive(false);
    es.onmessage = (m) => {
      const e = JSON.parse(m.data as string) as TapEvent;
      setEvents((prev) => [e, ...prev].slice(0, 200));
    };
    return () => {
      stop = true;
      es.close();
    };
  }, []);
  const peer = (p: TapEvent['source']) => (p.workload ? `${p.namespace}/${p.workload}` : (p.ip ?? '?'));
  const shown = events.filter((e) => filter === '' || JSON.stringify(e).includes(filter));
  return (
    <section>
      <h1>Live tap</h1>
      <p class="hint">
        {live ? 'Streaming' : 'Not connected'}: finished requests (waypoints) and connections (node agents),
        newest first.{' '}
        <input
          placeholder="filter (text)"
          value={filter}
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
        />
      </p>
      <table data-testid="tap">
        <thead>
          <tr>
            <th>time</th>
            <th>kind</th>
            <th>source</th>
            <th>destination</th>
            <th>request</th>
            <th>status</th>
            <th>latency</th>
            <th>security</th>
            <th>identities</th>
            <th>reporter</th>
            <th>flags</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e, i) => (
            <tr key={`${e.time}${i}`} class={e.flags !== '-' ? 'bad' : ''}>
              <td>{e.time.slice(11, 23)}</td>
              <td>{e.kind}</td>
              <td>{peer(e.source)}</td>
              <td>{e.destination.service ?? peer(e.destination)}</td>
              <td>
                {e.kind === 'request' ? `${e.method} ${e.path}` : `${e.bytesSent}B / ${e.bytesReceived}B`}
              </td>
              <td>{e.status ?? '–'}</td>
              <td>{fmtMs(e.durationMs)}</td>
              <td>{e.mtls ? 'mTLS' : 'plaintext'}</td>
              <td class="ids">
                {strip(e.source.identity) ?? '–'} → {strip(e.destination.identity) ?? '–'}
              </td>
              <td>{e.reporter}</td>
              <td>
                {e.flags}
                {e.policy ? ` ${e.policy}` : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Shell

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/graph');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/graph');
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function App() {
  const hash = useHash();
  const parts = hash.replace(/^#\//, '').split('/');
  const page = parts[0] ?? 'graph';
  const link = (to: string, text: string) => (
    <a href={`#/${to}`} class={page === to ? 'active' : ''}>
      {text}
    </a>
  );
  return (
    <>
      <header>
        <span class="brand">Hypha</span>
        <nav>
          {link('graph', 'Graph')}
          {link('health', 'Health')}
          {link('policies', 'Policies')}
          {link('tap', 'Tap')}
        </nav>
      </header>
      <main>
        {page === 'workload' && parts.length >= 3 ? (
          <WorkloadPage namespace={decodeURIComponent(parts[1]!)} name={decodeURIComponent(parts[2]!)} />
        ) : page === 'health' ? (
          <HealthPage />
        ) : page === 'policies' ? (
          <PoliciesPage />
        ) : page === 'tap' ? (
          <TapPage />
        ) : (
          <GraphPage />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
