// A daemon's operator endpoints (node agent and waypoint), on the ports Istio uses so tools feel at home:
//   15000 admin (localhost only): /config_dump, /certs, /connections, /tap, /logging, /quitquitquit
//   15020 Prometheus /metrics
//   15021 /healthz/ready: 200 only once config is synced and every local pod's certificate is held
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log/logger.js';
import { isLogLevel } from '../log/logger.js';
import { parseTapFilter, type TapHub } from '../telemetry/tap.js';

/** What /certs shows of held certificates (never keys). */
export function certificatesView(certs: {
  listCertificates(): readonly {
    id: { toString(): string };
    state: string;
    serial?: string | undefined;
    notBefore?: Date | undefined;
    notAfter?: Date | undefined;
    failures: number;
    lastError?: string | undefined;
  }[];
}): unknown[] {
  return certs.listCertificates().map((c) => ({
    identity: c.id.toString(),
    state: c.state,
    serial: c.serial,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    failures: c.failures,
    lastError: c.lastError,
  }));
}

import { listenAllFamilies } from './listen.js';

export interface AdminHandlers {
  configDump(): unknown;
  certs(): unknown;
  connections(): unknown;
  quit(): void;
  /** Live finished requests/connections, streamed at `/tap` (newline-delimited JSON). */
  tap?: TapHub;
  /** Extra JSON views served at `/debug/<name>` (e.g. the agent's `/debug/dns`). */
  debug?: Readonly<Record<string, () => unknown>>;
}

export interface Readiness {
  /** Empty when ready; otherwise what is still missing, shown to whoever probes. */
  findNotReadyReasons(): string[];
}

export interface EndpointsOptions {
  logger: Logger;
  registry: Registry;
  admin: AdminHandlers;
  readiness: Readiness;
  adminAddress: string; // host:port, normally 127.0.0.1:15000
  metricsAddress: string; // host:port, normally 0.0.0.0:15020 (0.0.0.0 or [::]: both families)
  readinessAddress: string; // host:port, normally 0.0.0.0:15021
  /** Listening sockets inherited from the agent this one took over from (upgrade hand-off). */
  inherited?: Partial<Record<EndpointName, number>>;
}

export const ENDPOINT_NAMES = ['admin', 'metrics', 'readiness'] as const;
export type EndpointName = (typeof ENDPOINT_NAMES)[number];

export interface Endpoints {
  readonly admin: AddressInfo;
  readonly metrics: AddressInfo;
  readonly readiness: AddressInfo;
  /** The listening servers, for handing their sockets to a new agent. */
  readonly servers: Readonly<Record<EndpointName, http.Server>>;
  close(): Promise<void>;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function text(
  res: http.ServerResponse,
  status: number,
  body: string,
  type = 'text/plain; charset=utf-8',
): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** `GET /tap`: one JSON line per finished request/connection matching the query, until the reader leaves. */
function serveTap(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  hub: TapHub | undefined,
): void {
  if (hub === undefined) {
    text(res, 404, 'this process has no tap\n');
    return;
  }
  if (req.method !== 'GET') {
    text(res, 405, 'use GET /tap\n');
    return;
  }
  let filter: ReturnType<typeof parseTapFilter>;
  try {
    filter = parseTapFilter((k) => url.searchParams.get(k));
  } catch (err) {
    text(res, 400, `${(err as Error).message}\n`);
    return;
  }
  const leave = hub.subscribe(filter, {
    write: (_event, line) => res.write(line()),
    onDrain: (listener) => {
      res.once('drain', listener);
    },
  });
  if (leave === undefined) {
    text(res, 429, `too many taps at once (${hub.subscribers}); try again later\n`);
    return;
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  // Headers now, so the reader knows it is subscribed before the first event.
  res.flushHeaders();
  res.on('close', leave);
}

export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid address "${address}": expected host:port, e.g. 127.0.0.1:15000`);
  }
  return { host, port };
}

/** True for the hosts that mean "every address": `0.0.0.0` and `::`. */
export function isUnspecifiedHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

async function listen(server: http.Server, address: string, fd?: number): Promise<AddressInfo> {
  const { host, port } = splitHostPort(address);
  // 0.0.0.0 and :: (the defaults' 0.0.0.0) mean every address of both families; a handed-over
  // socket (fd) is listened on as it is. Both go through the one listenAllFamilies.
  if (fd !== undefined || isUnspecifiedHost(host)) return listenAllFamilies(server, port, fd);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

/** An HTTP server answering GET /metrics (and Envoy's /stats/prometheus) from `registry`. */
function createMetricsServer(registry: Registry): http.Server {
  return http.createServer(async (req, res) => {
    if (req.url !== '/metrics' && req.url !== '/stats/prometheus') return text(res, 404, 'see /metrics\n');
    try {
      text(res, 200, await registry.metrics(), registry.contentType);
    } catch (err) {
      text(res, 500, `${(err as Error).message}\n`);
    }
  });
}

/**
 * A Prometheus /metrics endpoint alone (the CA's, which has no admin or readiness port), on
 * `address` (host:port; 0.0.0.0 or [::] listen on both families). Resolves once listening.
 */
export async function startMetricsEndpoint(
  registry: Registry,
  address: string,
): Promise<{ address: AddressInfo; close(): Promise<void> }> {
  const server = createMetricsServer(registry);
  server.on('clientError', (_err, socket) => socket.destroy());
  const bound = await listen(server, address);
  return {
    address: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export async function startEndpoints(opts: EndpointsOptions): Promise<Endpoints> {
  const log = opts.logger.child({ component: 'endpoints' });

  const admin = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    try {
      switch (url.pathname) {
        case '/config_dump':
          return json(res, 200, opts.admin.configDump());
        case '/certs':
          return json(res, 200, opts.admin.certs());
        case '/connections': {
          // An agent with --workers N answers from its workers (asynchronously).
          const live = opts.admin.connections();
          if (live instanceof Promise) {
            live.then(
              (v) => json(res, 200, v),
              (err: Error) => text(res, 500, `${err.message}\n`),
            );
            return;
          }
          return json(res, 200, live);
        }
        case '/tap':
          return serveTap(req, res, url, opts.admin.tap);
        case '/logging': {
          const level = url.searchParams.get('level');
          if (level !== null) {
            if (req.method !== 'POST' && req.method !== 'PUT') {
              return text(res, 405, 'change the level with POST /logging?level=debug\n');
            }
            if (!isLogLevel(level)) return text(res, 400, `unknown level "${level}"\n`);
            opts.logger.level = level;
            log.info({ level }, 'log level changed');
          }
          return json(res, 200, { level: opts.logger.level });
        }
        case '/quitquitquit':
          if (req.method !== 'POST') return text(res, 405, 'use POST /quitquitquit\n');
          text(res, 200, 'OK\n');
          setImmediate(() => opts.admin.quit());
          return;
        case '/':
          return text(
            res,
            200,
            'hypha admin: /config_dump /certs /connections /tap[?namespace=&to=&from=&method=&path=&status=&kind=] /logging[?level=] /quitquitquit\n',
          );
        default: {
          const name = url.pathname.startsWith('/debug/') ? url.pathname.slice('/debug/'.length) : '';
          const debug = opts.admin.debug;
          const view = debug !== undefined && Object.hasOwn(debug, name) ? debug[name] : undefined;
          if (view !== undefined) return json(res, 200, view());
          return text(res, 404, `no such admin endpoint ${url.pathname}\n`);
        }
      }
    } catch (err) {
      log.error({ err }, 'admin request failed');
      return text(res, 500, `${(err as Error).message}\n`);
    }
  });

  const metrics = createMetricsServer(opts.registry);

  const readiness = http.createServer((req, res) => {
    if (req.url === '/healthz/live') return text(res, 200, 'live\n');
    if (req.url !== '/healthz/ready') return text(res, 404, 'see /healthz/ready\n');
    const reasons = opts.readiness.findNotReadyReasons();
    if (reasons.length === 0) return text(res, 200, 'ready\n');
    return text(res, 503, `not ready:\n${reasons.map((r) => `- ${r}`).join('\n')}\n`);
  });

  const servers = [admin, metrics, readiness];
  for (const s of servers) s.on('clientError', (_err, socket) => socket.destroy());
  try {
    const a = await listen(admin, opts.adminAddress, opts.inherited?.admin);
    const m = await listen(metrics, opts.metricsAddress, opts.inherited?.metrics);
    const r = await listen(readiness, opts.readinessAddress, opts.inherited?.readiness);
    return {
      admin: a,
      metrics: m,
      readiness: r,
      servers: { admin, metrics, readiness },
      async close() {
        await Promise.all(
          servers.map(
            (s) =>
              new Promise<void>((resolve) => {
                s.close(() => resolve());
                s.closeAllConnections();
              }),
          ),
        );
      },
    };
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
}
