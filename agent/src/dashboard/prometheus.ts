// The dashboard's Prometheus client: instant and range queries over the HTTP API
// (/api/v1/query, /api/v1/query_range). Every answer says whether Prometheus answered, so a page
// can show "Prometheus is unreachable" and carry on with what the admin endpoints give.
import { type Endpoint, FetchError, getText } from './fetch.js';

/** One element of an instant vector. */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

/** One series of a range query: [epoch seconds, value] points. */
export interface PromSeries {
  metric: Record<string, string>;
  points: [number, number][];
}

export interface PrometheusClient {
  readonly label: string;
  query(expr: string): Promise<PromSample[]>;
  queryRange(expr: string, startSec: number, endSec: number, stepSec: number): Promise<PromSeries[]>;
}

/** `http://host:port[/prefix]` or `unix:/path` → where to connect and the path prefix. */
export function parsePrometheusAddress(raw: string): { endpoint: Endpoint; prefix: string } {
  if (raw.startsWith('unix:')) {
    const socketPath = raw.slice('unix:'.length);
    if (socketPath === '') throw new Error('--prometheus unix: needs a socket path');
    return { endpoint: { label: raw, socketPath }, prefix: '' };
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`--prometheus "${raw}" must be a URL such as http://127.0.0.1:9090 (or unix:/path)`);
  }
  if (url.protocol !== 'http:') {
    throw new Error(`--prometheus "${raw}": only http:// is supported (or unix:/path)`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port === '' ? 80 : Number(url.port);
  return { endpoint: { label: raw, host, port }, prefix: url.pathname.replace(/\/$/, '') };
}

interface ApiAnswer {
  status: 'success' | 'error';
  error?: string;
  data?: {
    resultType: string;
    result: { metric: Record<string, string>; value?: [number, string]; values?: [number, string][] }[];
  };
}

export function createPrometheusClient(raw: string, timeoutMs = 4000): PrometheusClient {
  const { endpoint, prefix } = parsePrometheusAddress(raw);
  const call = async (path: string): Promise<NonNullable<ApiAnswer['data']>> => {
    let text: string;
    try {
      text = await getText(endpoint, `${prefix}${path}`, timeoutMs);
    } catch (err) {
      // A PromQL error answers 400 with a JSON body that names the problem.
      if (err instanceof FetchError && err.status === 400) {
        const m = /"error":"([^"]*)"/.exec(err.message);
        throw new FetchError(`PromQL error: ${m?.[1] ?? err.message}`, 400);
      }
      throw err;
    }
    const body = JSON.parse(text) as ApiAnswer;
    if (body.status !== 'success' || body.data === undefined) {
      throw new FetchError(`Prometheus answered ${body.error ?? 'an error'}`);
    }
    return body.data;
  };
  return {
    label: raw,
    async query(expr) {
      const data = await call(`/api/v1/query?query=${encodeURIComponent(expr)}`);
      return data.result.map((r) => ({ metric: r.metric, value: Number(r.value?.[1]) }));
    },
    async queryRange(expr, startSec, endSec, stepSec) {
      const q = `query=${encodeURIComponent(expr)}&start=${startSec}&end=${endSec}&step=${stepSec}`;
      const data = await call(`/api/v1/query_range?${q}`);
      return data.result.map((r) => ({
        metric: r.metric,
        points: (r.values ?? []).map(([t, v]) => [t, Number(v)] as [number, number]),
      }));
    },
  };
}
