// Plain HTTP GETs to a TCP host:port or a unix socket (the demo's forwarded admin ports), with a
// deadline, answering text or a clear error. One function for the admin endpoints and Prometheus.
// An endpoint may bring its own http.Agent: in a cluster, a PortForwardAgent whose connections are
// port-forwards through the API server to the pod's localhost admin port.
import { type Agent, type IncomingMessage, type RequestOptions, request } from 'node:http';

/** What the dashboard already knows of an endpoint before it answers (from its pod, in a cluster). */
export interface EndpointHints {
  kind?: 'agent' | 'waypoint';
  /** Agents: the node; waypoints: ns/gateway. */
  name?: string;
}

/** Where to connect: a TCP host:port or a unix socket path (`label` is what the user typed). */
export type Endpoint =
  | ({ label: string; host: string; port: number; agent?: Agent } & EndpointHints)
  | ({ label: string; socketPath: string } & EndpointHints);

/** The request options that reach `ep` (its own agent when it has one). */
export function connectOptions(ep: Endpoint): RequestOptions {
  if ('socketPath' in ep) return { socketPath: ep.socketPath };
  return { host: ep.host, port: ep.port, ...(ep.agent !== undefined ? { agent: ep.agent } : {}) };
}

/** A socket error's code (ECONNREFUSED...), else its message (a port-forward's says why). */
export function reachError(err: NodeJS.ErrnoException): string {
  return err.code !== undefined && /^E[A-Z0-9]+$/.test(err.code) ? err.code : err.message;
}

export class FetchError extends Error {
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.name = 'FetchError';
    this.status = status;
  }
}

/** GET `path` on `ep`; the body of a 2xx answer, else a FetchError saying what happened. */
export function getText(ep: Endpoint, path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({
      ...connectOptions(ep),
      path,
      method: 'GET',
      timeout: timeoutMs,
    });
    req.on('timeout', () => req.destroy(new FetchError(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(err instanceof FetchError ? err : new FetchError(`cannot reach it (${reachError(err)})`)),
    );
    req.on('response', (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('error', (err) => reject(new FetchError(err.message)));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve(body);
        else reject(new FetchError(`answered ${status}: ${body.trim().slice(0, 200)}`, status));
      });
    });
    req.end();
  });
}

export async function getJson<T>(ep: Endpoint, path: string, timeoutMs?: number): Promise<T> {
  const text = await getText(ep, path, timeoutMs);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new FetchError(`${path} did not answer JSON (is ${ep.label} a Hypha admin endpoint?)`);
  }
}
