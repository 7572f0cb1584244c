// What flows through the request pipeline: one RequestContext per request (everything the filters
// decide and the bookkeeping `finish` reads), the Outcome every filter returns, and the Filter
// shape. Filters are composed once per config (`compose`), so a request allocates no closures for
// the chain; each filter may answer itself or call `next` (the rest of the chain), once or, for the
// retry filter, several times.
//
// Invariants:
// - Exactly one thing waits on a request at a time (a fault delay, a circuit-breaker slot, a retry
//   backoff, an upstream try), so one cancel hook suffices: `abort()` runs it once.
// - `aborted` is set once; after it the request only ends (504/503/DC), it never goes upstream again.
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { SpiffeId } from '@hypha/shared';
import type { RequestAuth } from '@hypha/shared/policy';
import type { WaypointSnapshot } from '../config.js';
import { FAILURES, type ProxyFailureCode } from '../errors.js';
import type { ServiceEntry, ServicePort } from '../model.js';
import type { HeaderMap } from '../routing/filters.js';
import type { BackendRef, PathMatch, RouteAction } from '../routing/types.js';
import type { RequestSpan } from '../tracing.js';
import type { Cluster, EndpointState } from '../traffic/cluster.js';
import type { UpstreamEndpoint } from '../upstream.js';

export interface StreamContext {
  /** The client's identity from the HBONE mTLS handshake; undefined for plaintext. */
  peer?: SpiffeId | undefined;
  /** What the client dialed: the service VIP and port, or a bound pod's IP and port. */
  authority: { host: string; port: number };
  /** The client's address (HBONE `forwarded: for=`). */
  source: { ip: string; port: number };
}

/** The downstream response as filters see it (node:http's or node:http2's compat response). */
export interface DownstreamResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableFinished: boolean;
  statusCode: number;
  writeHead(status: number, headers: Record<string, string | string[] | number>): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: string | Buffer): unknown;
  destroy(): unknown;
  addTrailers(headers: Record<string, string>): void;
  once(event: 'drain' | 'close', fn: () => void): unknown;
}

/** An answer from upstream, not yet sent downstream: the retry filter may still discard it. */
export interface UpstreamAnswer {
  readonly kind: 'response';
  readonly status: number;
  /** grpc-status of a trailers-only answer (the call failed before any message). */
  readonly grpcStatus: number | undefined;
  /** Drops the answer (its connection stays reusable where the protocol allows). */
  discard(): void;
  /** Sends it downstream; `finish` runs when the downstream response closes. */
  respond(rc: RequestContext): void;
}

export type Outcome =
  /** The waypoint answers itself (403, redirect, fault abort). */
  | {
      readonly kind: 'local';
      readonly status: number;
      readonly body: string;
      readonly headers?: Readonly<Record<string, string>>;
      /** Response flag for metrics and the access log (FI, ...). */
      readonly flag?: string;
    }
  /** No upstream answer: status, body and flag come from FAILURES. */
  | { readonly kind: 'failure'; readonly code: ProxyFailureCode }
  | UpstreamAnswer;

export type Next = (rc: RequestContext) => Outcome | Promise<Outcome>;

export interface Filter {
  readonly name: string;
  run(rc: RequestContext, next: Next): Outcome | Promise<Outcome>;
}

/** Chains filters in order in front of `terminal`; built once per pipeline, not per request. */
export function compose(filters: readonly Filter[], terminal: Next): Next {
  let next = terminal;
  for (let i = filters.length - 1; i >= 0; i--) {
    const f = filters[i]!;
    const after = next;
    next = (rc) => f.run(rc, after);
  }
  return next;
}

export function failure(code: ProxyFailureCode): Outcome {
  return FAILURE_OUTCOMES[code];
}

/** One frozen outcome per failure code, derived from the FAILURES table. */
const FAILURE_OUTCOMES = Object.fromEntries(
  (Object.keys(FAILURES) as ProxyFailureCode[]).map((code) => [
    code,
    Object.freeze({ kind: 'failure' as const, code }),
  ]),
) as Record<ProxyFailureCode, Outcome>;

export class RequestContext {
  readonly start = performance.now();
  readonly stream: StreamContext;
  /** The config the request started with; it finishes on it whatever changes meanwhile. */
  readonly snap: WaypointSnapshot;
  readonly method: string;
  /** The request target as received (path and query). */
  readonly url: string;
  readonly path: string;
  readonly query: string;
  /** The query with its `?` (kept as sent by rewrites), or ''. */
  readonly search: string;
  /** Host header (or :authority) as sent, with any port. */
  readonly authority: string;
  /** Lowercase host without port. */
  readonly host: string;
  readonly headers: IncomingHttpHeaders;
  readonly h2: boolean;
  readonly grpc: boolean;
  readonly requestId: string;
  /** The downstream request body: null (none), the stream, or a Buffer once buffered for replay. */
  body: Buffer | Readable | null;
  res: DownstreamResponse;

  // Decided by the filters, in pipeline order.
  service: ServiceEntry | undefined;
  port: ServicePort | undefined;
  action: RouteAction | undefined;
  matched: PathMatch | undefined;
  /** The verified token (authn filter); undefined without one. */
  auth: RequestAuth | undefined;
  /** Why the token was refused (401), for the access log. */
  authnFailure: string | undefined;
  authzPolicy: string | undefined;
  backend: BackendRef | undefined;
  target: ServiceEntry | undefined;
  cluster: Cluster | undefined;
  targetPort = 0;
  /** Upstream request head. */
  upstreamHost = '';
  /** Why the last upstream try's connection failed, when known (egress: TLS verification, DNS). */
  upstreamFailureReason: string | undefined = undefined;
  upstreamPath = '';
  upstreamHeaders: HeaderMap = {};
  hashKey: string | undefined;
  h2Upstream = false;
  perTryTimeoutMs: number | undefined;
  /** The endpoint of the current (or last) try. */
  endpoint: EndpointState | undefined;
  upstream: UpstreamEndpoint | undefined;
  /** The endpoint whose in-flight count this request holds (given back once). */
  activeOn: EndpointState | undefined;
  /** Circuit-breaker slot held (released once in finish). */
  slot = false;

  // Bookkeeping for finish, metrics and the access log.
  flags: string[] = [];
  grpcStatus: string | undefined;
  requestBytes = 0;
  responseBytes = 0;
  span: RequestSpan | undefined;
  finished = false;
  aborted: ProxyFailureCode | undefined;
  /** A flag to add after the failure's own (URX after the failure that ended the retries). */
  pendingFlag: string | undefined;
  #cancel: (() => void) | undefined;

  constructor(
    stream: StreamContext,
    snap: WaypointSnapshot,
    head: {
      method: string;
      url: string;
      authority: string;
      headers: IncomingHttpHeaders;
      h2: boolean;
      requestId: string;
    },
    body: Buffer | Readable | null,
    res: DownstreamResponse,
  ) {
    this.stream = stream;
    this.snap = snap;
    this.method = head.method;
    this.url = head.url;
    const qi = head.url.indexOf('?');
    this.path = qi < 0 ? head.url : head.url.slice(0, qi);
    this.query = qi < 0 ? '' : head.url.slice(qi + 1);
    this.search = qi < 0 ? '' : head.url.slice(qi);
    this.authority = head.authority;
    this.host = stripPort(head.authority).toLowerCase();
    this.headers = head.headers;
    this.h2 = head.h2;
    const ct = head.headers['content-type'];
    this.grpc = head.h2 && typeof ct === 'string' && ct.startsWith('application/grpc');
    this.requestId = head.requestId;
    this.body = body;
    this.res = res;
  }

  /** Registers what to stop if the request is aborted now; returns false if it already was. */
  onAbort(cancel: () => void): boolean {
    if (this.aborted !== undefined) return false;
    this.#cancel = cancel;
    return true;
  }

  clearAbort(): void {
    this.#cancel = undefined;
  }

  abort(code: ProxyFailureCode): void {
    if (this.aborted !== undefined) return;
    this.aborted = code;
    const c = this.#cancel;
    this.#cancel = undefined;
    c?.();
  }

  addFlag(flag: string): void {
    if (!this.flags.includes(flag)) this.flags.push(flag);
  }

  /** Gives back the in-flight count this request holds on an endpoint (idempotent). */
  releaseActive(): void {
    if (this.activeOn !== undefined) {
      this.activeOn.active--;
      this.activeOn = undefined;
    }
  }
}

export function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const i = host.indexOf(':');
  return i < 0 ? host : host.slice(0, i);
}

/** Resolves after `ms`, or at once when the request is aborted meanwhile. */
export function sleepFor(rc: RequestContext, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      rc.clearAbort();
      resolve();
    }, ms);
    if (
      !rc.onAbort(() => {
        clearTimeout(t);
        resolve();
      })
    ) {
      clearTimeout(t);
      resolve();
    }
  });
}
