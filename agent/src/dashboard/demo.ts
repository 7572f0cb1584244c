// The demo's dashboard: started by `hypha demo` on 127.0.0.1 with the demo's admin sockets and,
// when Debian's prometheus is installed, a Prometheus pod scraping the mesh (forwarded to a unix
// socket, since it listens inside its pod's namespace). `checkDashboard` is what `--check` asks.
import type { Endpoint } from './fetch.js';
import { type Dashboard, startDashboard } from './server.js';

export interface DemoDashboardCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export async function startDemoDashboard(o: {
  port: number;
  admins: readonly Endpoint[];
  prometheus: string | undefined;
  config: string;
}): Promise<Dashboard> {
  return startDashboard({
    address: '127.0.0.1',
    port: o.port,
    admins: o.admins,
    prometheus: o.prometheus,
    config: o.config,
  });
}

/**
 * The dashboard answers as a browser would use it: the page and its bundle, the health of every
 * node (ready), the graph, and Prometheus read when one was started.
 */
export async function checkDashboard(
  url: string,
  nodes: readonly string[],
  withPrometheus: boolean,
): Promise<DemoDashboardCheck> {
  const name = `dashboard answers at ${url}: page, graph, every node ready${withPrometheus ? ', Prometheus read' : ''}`;
  try {
    const page = await fetch(url);
    const html = await page.text();
    if (!page.ok || !html.includes('<div id="app">'))
      return { name, ok: false, detail: `GET / answered ${page.status}` };
    const js = await fetch(new URL('assets/app.js', url));
    await js.arrayBuffer();
    if (!js.ok) return { name, ok: false, detail: `GET /assets/app.js answered ${js.status}` };
    // The admin endpoints are polled every 2 s; wait for a first full answer (bounded).
    let health:
      | {
          nodes: { node: string; ready: boolean; reasons: string[] }[];
          prometheus: { ok: boolean; error: string | null };
        }
      | undefined;
    for (let i = 0; i < 50; i++) {
      health = (await (await fetch(new URL('api/health', url))).json()) as typeof health;
      if (nodes.every((n) => health!.nodes.some((h) => h.node === n && h.ready))) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const notReady = nodes.filter((n) => !health!.nodes.some((h) => h.node === n && h.ready));
    if (notReady.length > 0) {
      const why = health!.nodes
        .filter((h) => notReady.includes(h.node))
        .map((h) => `${h.node}: ${h.reasons.join('; ')}`);
      return { name, ok: false, detail: `not shown ready: ${notReady.join(', ')} ${why.join(' ')}` };
    }
    const graph = (await (await fetch(new URL('api/graph', url))).json()) as {
      nodes: unknown[];
      prometheus: { ok: boolean; error: string | null };
    };
    if (graph.nodes.length === 0) return { name, ok: false, detail: 'the graph has no node' };
    if (withPrometheus && !graph.prometheus.ok)
      return { name, ok: false, detail: graph.prometheus.error ?? 'Prometheus not read' };
    return { name, ok: true, detail: '' };
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message };
  }
}
