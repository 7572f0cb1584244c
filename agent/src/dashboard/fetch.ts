// Plain HTTP GETs to a TCP host:port or a unix socket (the demo's forwarded admin ports), with a
// deadline, answering text or a clear error. One function for the admin endpoints and Prometheus.
import { type IncomingMessage, request } from 'node:http';

/** Where to connect: a TCP host:port or a unix socket path (`label` is what the user typed). */
export type Endpoint = { label: string; host: string; port: number } | { label: string; socketPath: string };

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
      ...('socketPath' in ep ? { socketPath: ep.socketPath } : { host: ep.host, port: ep.port }),
      path,
      method: 'GET',
      timeout: timeoutMs,
    });
    req.on('timeout', () => req.destroy(new FetchError(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err instanceof FetchError ? err : new FetchError(`cannot reach it (${err.code ?? err.message})`),
      ),
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
