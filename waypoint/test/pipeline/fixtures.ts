// Fixtures for testing one pipeline filter at a time: a config snapshot built the way the waypoint
// builds it, clusters for its services, a RequestContext for one request, a downstream response that
// records what was written to it, and a `next` step that records what the filter decided.
import type { IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { Readable, Writable } from 'node:stream';
import type { SpiffeId } from '@hypha/shared';
import { buildSnapshot, trafficFor, type WaypointSnapshot } from '../../src/config.js';
import type { ServiceInput, WaypointConfigInput } from '../../src/model.js';
import {
  type DownstreamResponse,
  type Next,
  type Outcome,
  RequestContext,
  type UpstreamAnswer,
} from '../../src/pipeline/context.js';
import { rewriteFilter } from '../../src/pipeline/rewrite.js';
import { findService, routeFilter } from '../../src/pipeline/route.js';
import type { HeaderMap } from '../../src/routing/filters.js';
import { Cluster } from '../../src/traffic/cluster.js';
import { UpstreamPools } from '../../src/upstream.js';

export const GATEWAY = { name: 'waypoint', namespace: 'shop' };

export interface EndpointSpec {
  name: string;
  ip: string;
  port: number;
}

/** A Service as the proxy tests write it (helpers.ts `service()`), from plain endpoint specs. */
export function svc(
  name: string,
  vip: string,
  endpoints: readonly EndpointSpec[],
  opts: { port?: number; appProtocol?: string } = {},
): ServiceInput {
  const port = opts.port ?? 80;
  return {
    name,
    namespace: 'shop',
    vips: [vip],
    ports: [{ port, targetPort: 8080, name: 'http', appProtocol: opts.appProtocol }],
    endpoints: endpoints.map((e) => ({
      ip: e.ip,
      targetPorts: { [String(port)]: e.port },
      workload: { name: e.name, namespace: 'shop', serviceAccount: name, app: name, version: e.name },
    })),
  };
}

export const parentFor = (name: string) => ({ group: '', kind: 'Service', name, port: 80 });

export const httpRoute = (name: string, service: string, rules: unknown[]) => ({
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop', creationTimestamp: '2026-01-01T00:00:00Z' },
  spec: { parentRefs: [parentFor(service)], rules },
});

export const trafficPolicy = (name: string, service: string, spec: Record<string, unknown>) => ({
  apiVersion: 'traffic.hypha.dev/v1alpha1',
  kind: 'TrafficPolicy',
  metadata: { name, namespace: 'shop' },
  spec: { targetRefs: [{ kind: 'Service', name: service }], ...spec },
});

export const authzPolicy = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'shop' },
  spec,
});

/** The snapshot the waypoint would serve; a config error fails the test (it would hide a rule). */
export function snapshotOf(input: Omit<WaypointConfigInput, 'gateway'>): WaypointSnapshot {
  const { snapshot, errors } = buildSnapshot({ gateway: GATEWAY, ...input });
  if (errors.length > 0) throw new Error(errors.map((e) => e.message).join('\n'));
  return snapshot;
}

/** One Cluster per service, as the proxy keeps them (settings from the service's TrafficPolicy). */
export function clustersOf(snap: WaypointSnapshot): Map<string, Cluster> {
  const clusters = new Map<string, Cluster>();
  for (const [key, s] of snap.services) clusters.set(key, new Cluster(s, trafficFor(snap, key)));
  return clusters;
}

/**
 * A downstream response that records the head, body, trailers and destroy() calls. A real Writable,
 * so the HTTP/2 upstream can pipe into it; it does not destroy itself after end(), as node's
 * response does not either until the socket goes.
 */
export class FakeResponse extends Writable implements DownstreamResponse {
  headersSent = false;
  statusCode = 200;
  head: { status: number; headers: Record<string, string | string[] | number> } | undefined;
  readonly chunks: Buffer[] = [];
  readonly trailers: Record<string, string> = {};
  destroyCalls = 0;

  constructor() {
    super({ autoDestroy: false });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    cb();
  }

  writeHead(status: number, headers: Record<string, string | string[] | number>): this {
    if (this.headersSent) throw new Error('writeHead called twice');
    this.head = { status, headers };
    this.statusCode = status;
    this.headersSent = true;
    return this;
  }

  addTrailers(headers: Record<string, string>): void {
    Object.assign(this.trailers, headers);
  }

  override destroy(error?: Error): this {
    this.destroyCalls++;
    return super.destroy(error);
  }

  get body(): string {
    return Buffer.concat(this.chunks).toString();
  }

  /** Resolves once the response finished or was destroyed. */
  settled(): Promise<void> {
    return new Promise((resolve) => {
      if (this.writableFinished || this.destroyed) return resolve();
      this.once('finish', () => resolve());
      this.once('close', () => resolve());
    });
  }
}

export interface RequestInit {
  method?: string;
  url?: string;
  /** Host header; defaults to the dialed authority. */
  host?: string;
  headers?: IncomingHttpHeaders;
  h2?: boolean;
  body?: Buffer | Readable | string | null;
  /** What the client dialed (VIP:port). */
  authority?: { host: string; port: number };
  peer?: SpiffeId;
  requestId?: string;
}

/** A RequestContext as the proxy builds it: the service found by the dialed address or Host. */
export function requestOf(
  snap: WaypointSnapshot,
  init: RequestInit = {},
): { rc: RequestContext; res: FakeResponse } {
  const authority = init.authority ?? { host: '10.96.0.10', port: 80 };
  const host = init.host ?? `${authority.host}:${authority.port}`;
  const res = new FakeResponse();
  const body = typeof init.body === 'string' ? Buffer.from(init.body) : (init.body ?? null);
  const rc = new RequestContext(
    { authority, source: { ip: '10.1.0.7', port: 40000 }, peer: init.peer },
    snap,
    {
      method: init.method ?? 'GET',
      url: init.url ?? '/',
      authority: host,
      headers: { host, ...init.headers },
      h2: init.h2 ?? false,
      requestId: init.requestId ?? 'req-1',
    },
    body,
    res,
  );
  const found = findService(snap, rc.stream, rc.host);
  if (found !== undefined) {
    rc.service = found.service;
    rc.port = found.port;
  }
  return { rc, res };
}

/** What a filter left in the context when it called `next`. */
export interface Seen {
  upstreamHost: string;
  upstreamPath: string;
  upstreamHeaders: HeaderMap;
  backend: string | undefined;
  target: string | undefined;
  targetPort: number;
  endpoint: string | undefined;
  active: number | undefined;
  slot: boolean;
  h2Upstream: boolean;
  body: Buffer | Readable | null;
}

export type Step = (rc: RequestContext, call: number) => Outcome | Promise<Outcome>;

/**
 * A `next` that records each call and answers with `steps[call]` (the last step repeats).
 */
export function recordingNext(...steps: Step[]): Next & { calls: Seen[] } {
  const calls: Seen[] = [];
  const next = (rc: RequestContext) => {
    calls.push({
      upstreamHost: rc.upstreamHost,
      upstreamPath: rc.upstreamPath,
      upstreamHeaders: { ...rc.upstreamHeaders },
      backend: rc.backend?.service,
      target: rc.target?.key,
      targetPort: rc.targetPort,
      endpoint: rc.endpoint?.ip,
      active: rc.endpoint?.active,
      slot: rc.slot,
      h2Upstream: rc.h2Upstream,
      body: rc.body,
    });
    const step = steps[Math.min(calls.length - 1, steps.length - 1)];
    if (step === undefined) throw new Error('recordingNext needs at least one step');
    return step(rc, calls.length - 1);
  };
  return Object.assign(next, { calls });
}

export interface FakeAnswer extends UpstreamAnswer {
  discarded: number;
  responded: number;
}

/** An upstream answer held for the retry filter: records discard() and respond(). */
export function upstreamAnswer(status: number, grpcStatus?: number): FakeAnswer {
  const a: FakeAnswer = {
    kind: 'response',
    status,
    grpcStatus,
    discarded: 0,
    responded: 0,
    discard() {
      a.discarded++;
    },
    respond(rc) {
      a.responded++;
      rc.res.writeHead(status, {});
      rc.res.end();
    },
  };
  return a;
}

/** A step answering with the given outcome. */
export const answerWith =
  (o: Outcome): Step =>
  () =>
    o;

/** A step that never answers (an upstream that hangs) unless the request is aborted. */
export const hang: Step = (rc) =>
  new Promise<Outcome>((resolve) => {
    if (!rc.onAbort(() => resolve({ kind: 'failure', code: rc.aborted ?? 'UPSTREAM_RESET' })))
      resolve({ kind: 'failure', code: rc.aborted ?? 'UPSTREAM_RESET' });
  });

/** A request body that streams (not yet buffered). */
export function streamingBody(...chunks: string[]): Readable {
  return Readable.from(chunks.map((c) => Buffer.from(c)));
}

const STOP: Outcome = Object.freeze({ kind: 'local', status: 0, body: 'stopped' });

/**
 * Runs the filters before the one under test that decide what it reads (route; with clusters, also
 * rewrite: backend, target, cluster, upstream head). Throws if they did not get that far.
 */
export async function prepare(rc: RequestContext, clusters?: ReadonlyMap<string, Cluster>): Promise<void> {
  const stop = () => STOP;
  const o = await routeFilter.run(
    rc,
    clusters === undefined ? stop : (r) => rewriteFilter(clusters).run(r, stop),
  );
  if (o !== STOP) throw new Error(`request did not reach the filter under test: ${JSON.stringify(o)}`);
}

/** Upstream pools over plain TCP, as helpers.ts gives the waypoint (HBONE in production). */
export function tcpPools(): UpstreamPools {
  return new UpstreamPools({
    connect: (ep) =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
  });
}

/** Polls until `check` holds (at most `ms`). */
export async function eventually(check: () => boolean, ms = 1000): Promise<void> {
  const until = performance.now() + ms;
  while (!check()) {
    if (performance.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
