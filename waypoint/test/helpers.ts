// Test fixtures: backends that say which instance answered, a waypoint behind a loopback listener
// (each accepted socket handed to handleStream with a fixed authority), and service builders.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { Logger, SpiffeId } from '@hypha/shared';
import { pino } from 'pino';
import { Pool } from 'undici';
import {
  createWaypoint,
  type ServiceInput,
  type Waypoint,
  type WaypointConfigInput,
  type WaypointOptions,
} from '../src/index.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface Backend {
  name: string;
  ip: string;
  port: number;
  requests: SeenRequest[];
  server: http.Server;
  close(): Promise<void>;
}

let nextIp = 1 + Math.floor(Math.random() * 200);

/** A distinct loopback address per backend, so endpoints of one service have distinct IPs. */
export function loopbackIp(): string {
  nextIp++;
  return `127.0.${(nextIp >> 8) & 255}.${nextIp & 255 || 1}`;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, body: string, n: number) => void;

const defaultHandler =
  (name: string): Handler =>
  (req, res, body) => {
    res.setHeader('content-type', 'application/json');
    res.setHeader('x-instance', name);
    res.end(JSON.stringify({ instance: name, method: req.method, url: req.url, headers: req.headers, body }));
  };

export async function startBackend(name: string, handler?: Handler): Promise<Backend> {
  const ip = loopbackIp();
  const requests: SeenRequest[] = [];
  const h = handler ?? defaultHandler(name);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      h(req, res, body, requests.length);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, ip, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    name,
    ip,
    port,
    requests,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A Service with one endpoint per backend (endpoint IP = backend IP, port mapped per endpoint). */
export function service(
  name: string,
  vip: string,
  backends: readonly Pick<Backend, 'name' | 'ip' | 'port'>[],
  opts: { port?: number; namespace?: string; appProtocol?: string; version?: string } = {},
): ServiceInput {
  const port = opts.port ?? 80;
  return {
    name,
    namespace: opts.namespace ?? 'shop',
    vips: [vip],
    ports: [{ port, targetPort: 8080, name: 'http', appProtocol: opts.appProtocol }],
    endpoints: backends.map((b) => ({
      ip: b.ip,
      targetPorts: { [String(port)]: b.port },
      workload: {
        name: b.name,
        namespace: opts.namespace ?? 'shop',
        serviceAccount: name,
        app: name,
        version: opts.version ?? b.name,
      },
    })),
  };
}

export interface TestWaypoint {
  wp: Waypoint;
  /** Listener for clients: streams accepted here carry `authority`. */
  port: number;
  origin: string;
  pool: Pool;
  listen(
    authority: { host: string; port: number },
    peer?: SpiffeId,
  ): Promise<{ port: number; origin: string; pool: Pool }>;
  close(): Promise<void>;
}

export async function startWaypoint(
  config: Partial<WaypointConfigInput> & Pick<WaypointConfigInput, 'services'>,
  authority: { host: string; port: number },
  extra: Partial<WaypointOptions> & { peer?: SpiffeId } = {},
): Promise<TestWaypoint> {
  const wp = await createWaypoint({
    config: { gateway: { name: 'waypoint', namespace: 'shop' }, ...config },
    connectUpstream: (ep) =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
    ...extra,
  });
  const servers: net.Server[] = [];
  const pools: Pool[] = [];
  const listen = async (auth: { host: string; port: number }, peer?: SpiffeId) => {
    const server = net.createServer((sock) => {
      wp.handleStream(sock, {
        authority: auth,
        source: { ip: sock.remoteAddress ?? '127.0.0.1', port: sock.remotePort ?? 0 },
        peer,
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push(server);
    const port = (server.address() as AddressInfo).port;
    const origin = `http://127.0.0.1:${port}`;
    const pool = new Pool(origin, { connections: 16 });
    pools.push(pool);
    return { port, origin, pool };
  };
  const first = await listen(authority, extra.peer);
  return {
    wp,
    ...first,
    listen,
    close: async () => {
      await Promise.all(pools.map((p) => p.destroy()));
      for (const s of servers) s.close();
      await wp.close();
    },
  };
}

export interface SimpleResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json<T = { instance: string; url: string; headers: Record<string, string>; body: string }>(): T;
}

export async function send(
  pool: Pool,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<SimpleResponse> {
  const r = await pool.request({
    path,
    method: (init.method ?? 'GET') as 'GET',
    headers: { host: 'reviews.shop.svc.cluster.local', ...init.headers },
    body: init.body ?? null,
  });
  const body = await r.body.text();
  return { status: r.statusCode, headers: r.headers, body, json: () => JSON.parse(body) };
}

/** Runs `count` requests with at most `concurrency` in flight. */
export async function sendMany(
  count: number,
  concurrency: number,
  one: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await one(next++);
    }),
  );
}

export interface CapturedLog {
  logger: Logger;
  lines: Record<string, unknown>[];
}

/** A pino logger whose JSON lines are kept in memory (access log assertions). */
export function captureLog(): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n'))
        if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

/**
 * A stand-in for the node agent's HBONE side: CONNECT streams on an h2c server piped to the app,
 * and `connectUpstream` for a waypoint that opens them over one pooled connection, replaced once
 * it got GOAWAY (as the HBONE pool does). `carried` holds the server side of each connection.
 */
export async function startCarrier(
  ip: string,
  appPort: number,
): Promise<{
  carried: http2.ServerHttp2Session[];
  connectUpstream: (ep: { ip: string; port: number }) => Promise<http2.ClientHttp2Stream>;
  close(): Promise<void>;
}> {
  const carried: http2.ServerHttp2Session[] = [];
  const carrier = http2.createServer();
  carrier.on('session', (s) => carried.push(s));
  carrier.on('stream', (stream) => {
    stream.on('error', () => {});
    const up = net.connect(appPort, ip, () => {
      stream.respond({ ':status': 200 });
      stream.pipe(up).pipe(stream);
    });
    up.on('error', () => stream.destroy());
    stream.on('close', () => up.destroy());
  });
  await new Promise<void>((resolve) => carrier.listen(0, ip, resolve));
  const carrierPort = (carrier.address() as AddressInfo).port;
  let pooled: http2.ClientHttp2Session | undefined;
  const carrierSession = () => {
    if (pooled === undefined || pooled.closed || pooled.destroyed) {
      const s = http2.connect(`http://${ip}:${carrierPort}`);
      s.on('error', () => {});
      s.once('goaway', () => {
        if (pooled === s) pooled = undefined;
      });
      pooled = s;
    }
    return pooled;
  };
  return {
    carried,
    connectUpstream: (ep) =>
      new Promise((resolve, reject) => {
        const tunnel = carrierSession().request({
          ':method': 'CONNECT',
          ':authority': `${ep.ip}:${ep.port}`,
        });
        tunnel.once('response', () => resolve(tunnel));
        tunnel.once('error', reject);
      }),
    close: async () => {
      for (const s of carried) s.destroy();
      await new Promise<void>((resolve) => carrier.close(() => resolve()));
    },
  };
}
