// API requests with the kubeconfig's TLS and credentials: one-shot JSON requests (lists, Events,
// writes) through fetchKube, and the raw response stream a watch reads (openKube). Plain JSON, as
// the watch stream delivers it: no model classes, no dropped unknown fields.
//
// Each KubeConfig gets one keep-alive https.Agent carrying its CA, client certificate and server
// name, so informers and one-shot requests share TLS sessions instead of a handshake per request.
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import { describeApiFailure, KubeError } from './errors.js';
import type { KubeConfig } from './kubeconfig.js';

export interface KubeRequestOptions {
  method?: string;
  body?: unknown;
  contentType?: string;
  /** Idle time (no bytes) after which the request fails. Default 60 s. */
  timeoutMs?: number;
  /** Aborts the request, also while it is still connecting. */
  signal?: AbortSignal;
}

const MAX_RESPONSE = 256 * 1024 * 1024;

const agents = new WeakMap<KubeConfig, HttpAgent>();

function agentFor(kc: KubeConfig, https: boolean): HttpAgent {
  let agent = agents.get(kc);
  if (!agent) {
    const c = kc.cluster;
    const u = kc.user;
    agent = https
      ? new HttpsAgent({
          keepAlive: true,
          ...(c.ca !== undefined ? { ca: c.ca } : {}),
          ...(u.cert !== undefined && u.key !== undefined ? { cert: u.cert, key: u.key } : {}),
          ...(c.tlsServerName ? { servername: c.tlsServerName } : {}),
          rejectUnauthorized: !c.insecureSkipTlsVerify,
        })
      : new HttpAgent({ keepAlive: true });
    agents.set(kc, agent);
  }
  return agent;
}

/**
 * Sends one request and resolves with the response head (any status); the caller reads or
 * destroys the body. Connection failures reject with KubeError API_UNREACHABLE; an abort rejects
 * with the signal's reason.
 */
export async function openKube(
  kc: KubeConfig,
  path: string,
  options: Omit<KubeRequestOptions, 'body'> & { body?: string; accept?: string } = {},
): Promise<IncomingMessage> {
  const method = options.method ?? 'GET';
  const url = new URL(kc.cluster.server + path);
  const https = url.protocol === 'https:';
  const headers: OutgoingHttpHeaders = { Accept: options.accept ?? 'application/json' };
  const token = await kc.fetchToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) {
    headers['Content-Type'] = options.contentType ?? 'application/json';
    headers['Content-Length'] = Buffer.byteLength(options.body);
  }
  options.signal?.throwIfAborted();
  const opts: RequestOptions = {
    method,
    headers,
    agent: agentFor(kc, https),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const send = https ? httpsRequest : httpRequest;
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const req = send(url, opts, resolve);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => {
      if (options.signal?.aborted) reject(options.signal.reason);
      else if (err instanceof KubeError) reject(err);
      else
        reject(
          new KubeError(
            'API_UNREACHABLE',
            `${method} ${url.origin}${path}: ${err.message} (is the API server reachable from here?)`,
          ),
        );
    });
    req.end(options.body);
  });
}

/** One request, its JSON answer parsed; a non-2xx status rejects with KubeError API_ERROR. */
export async function fetchKube(
  kc: KubeConfig,
  path: string,
  options: KubeRequestOptions = {},
): Promise<unknown> {
  const method = options.method ?? 'GET';
  const { body: value, ...rest } = options;
  const body = value === undefined ? undefined : JSON.stringify(value);
  const res = await openKube(kc, path, { ...rest, ...(body !== undefined ? { body } : {}) });
  const text = await readBody(res, method, path, options.signal);
  let parsed: unknown;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) return parsed;
  throw statusError(method, path, status, parsed, text);
}

/** The KubeError for a non-2xx answer whose body (a Status, usually) is `parsed` / `text`. */
export function statusError(
  method: string,
  path: string,
  status: number,
  parsed: unknown,
  text: string,
): KubeError {
  const st = (parsed ?? {}) as { message?: string; reason?: string };
  return new KubeError(
    'API_ERROR',
    describeApiFailure(method, path, status, st.message ?? (text.slice(0, 200) || 'no body')),
    status,
    st.reason,
  );
}

function ignoreLateError(): void {}

/** The whole body as text, at most MAX_RESPONSE bytes. */
export function readBody(
  res: IncomingMessage,
  method: string,
  path: string,
  signal?: AbortSignal,
  limit = MAX_RESPONSE,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy(new KubeError('API_ERROR', `${method} ${path}: response larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onError = (err: Error) => {
      if (signal?.aborted) reject(signal.reason);
      else if (err instanceof KubeError) reject(err);
      else reject(new KubeError('API_UNREACHABLE', `${method} ${path}: ${err.message}`));
    };
    res.on('data', onData);
    res.on('error', onError);
    res.once('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      chunks = [];
      // The response can outlive this read (a keep-alive socket holds it until its next request);
      // its listeners would keep this promise, and so the whole body, alive with it: 14 list pages,
      // one per kind, up to 1 MB each. A no-op error listener stays so a late error is not thrown.
      res.off('data', onData);
      res.on('error', ignoreLateError);
      res.off('error', onError);
      resolve(text);
    });
  });
}
