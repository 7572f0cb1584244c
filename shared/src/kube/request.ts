// One-shot API requests (lists, Events) with the kubeconfig's TLS and credentials, returning
// plain JSON. The typed clients of @kubernetes/client-node deserialize into model classes (Dates,
// dropped unknown fields); the mesh wants the objects exactly as the watch stream delivers them.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { describeApiFailure, KubeError } from './errors.js';

export interface KubeRequestOptions {
  method?: string;
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
}

const MAX_RESPONSE = 256 * 1024 * 1024;

export async function fetchKube(
  kc: KubeConfig,
  path: string,
  options: KubeRequestOptions = {},
): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (!cluster)
    throw new KubeError('KUBECONFIG', 'the kubeconfig has no current cluster: set current-context');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  const method = options.method ?? 'GET';
  const opts: RequestOptions = { method, headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  const headers = (opts.headers ?? {}) as Record<string, string | number>;
  if (body !== undefined) {
    headers['Content-Type'] = options.contentType ?? 'application/json';
    headers['Content-Length'] = Buffer.byteLength(body);
  }
  opts.headers = headers;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, opts, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE) {
          req.destroy(
            new KubeError('API_ERROR', `${method} ${path}: response larger than ${MAX_RESPONSE} bytes`),
          );
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (err) =>
        reject(new KubeError('API_UNREACHABLE', `${method} ${url.origin}${path}: ${err.message}`)),
      );
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = text.length > 0 ? JSON.parse(text) : undefined;
        } catch {
          parsed = undefined;
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          resolve(parsed);
          return;
        }
        const st = (parsed ?? {}) as { message?: string; reason?: string };
        reject(
          new KubeError(
            'API_ERROR',
            describeApiFailure(method, path, status, st.message ?? (text.slice(0, 200) || 'no body')),
            status,
            st.reason,
          ),
        );
      });
    });
    req.setTimeout(options.timeoutMs ?? 60_000, () => {
      req.destroy(new Error(`no answer within ${options.timeoutMs ?? 60_000} ms`));
    });
    req.on('error', (err) => {
      if (err instanceof KubeError) reject(err);
      else
        reject(
          new KubeError(
            'API_UNREACHABLE',
            `${method} ${url.origin}${path}: ${err.message} (is the API server reachable from here?)`,
          ),
        );
    });
    req.end(body);
  });
}
