// Connections from the waypoint to endpoints, through an injected `connectUpstream` (HBONE to the
// endpoint's node agent in production; plain TCP in tests).
//
// Invariants:
// - One undici Pool per endpoint (ip:port) for HTTP/1.1, so keep-alive connections are reused per
//   endpoint and never across endpoints; one HTTP/2 session per endpoint for gRPC/h2, shared by
//   every stream, created once even when many requests race for it (the promise is cached).
// - A connect failure is tagged (`isConnectFailure`) so the proxy can flag it UF, not UC.
import http2, { type ClientHttp2Session, type Http2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Pool } from 'undici';
import type { WorkloadInfo } from './model.js';

export interface UpstreamEndpoint {
  ip: string;
  port: number;
  workload?: WorkloadInfo | undefined;
  /** The tunnel authority's host when it is not `ip` (a waypoint standing in for a service VIP). */
  authorityHost?: string | undefined;
  /**
   * An endpoint outside the mesh (a ServiceEntry's): dialed directly in TCP, resolving `dnsName`
   * first when set, and with TLS when `tls` is set (egress/connect.ts), never over HBONE.
   */
  egress?: UpstreamEgress | undefined;
}

export interface UpstreamEgress {
  /** The entry's `namespace/name` (for logs). */
  entry: string;
  /** A host name to resolve when connecting (`ip` is then a placeholder). */
  dnsName?: string | undefined;
  /** TLS origination; its `id` keeps pools of different TLS settings apart. */
  tls?: UpstreamTls | undefined;
  /** Set by the HTTP/2 pool: TLS must negotiate ALPN `h2` (default `http/1.1`). */
  h2?: boolean | undefined;
}

/** Resolved TLS origination settings (egress/tls.ts). */
export interface UpstreamTls {
  readonly id: number;
  /** SNI and the name the server certificate must carry. */
  readonly servername: string;
  /** Names accepted instead of `servername` (TrafficPolicy `tls.subjectAltNames`). */
  readonly subjectAltNames: readonly string[] | undefined;
  /** CA bundle and, for MUTUAL, the client certificate; undefined when `error` is set. */
  readonly context: import('node:tls').SecureContext | undefined;
  /** Why these settings cannot be used (a missing Secret or file): connections fail with it. */
  readonly error: string | undefined;
}

/** Opens a byte stream to an endpoint (an HBONE CONNECT stream, or a TCP socket in tests). */
export type ConnectUpstream = (endpoint: UpstreamEndpoint) => Promise<Duplex>;

const CONNECT_FAILED = Symbol('hypha.connectFailed');
export const STREAM_WINDOW = 4 << 20;
export const CONNECTION_WINDOW = 16 << 20;

export function isConnectFailure(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  if ((err as { [CONNECT_FAILED]?: boolean })[CONNECT_FAILED] === true) return true;
  const code = (err as { code?: unknown }).code;
  return (
    code === 'ECONNREFUSED' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'UND_ERR_CONNECT_TIMEOUT'
  );
}

function tagConnectFailure(err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  (e as unknown as Record<symbol, boolean>)[CONNECT_FAILED] = true;
  return e;
}

/** Small request/response writes must not wait for delayed ACKs (Nagle). */
function noDelay(stream: Duplex): Duplex {
  (stream as Partial<Socket>).setNoDelay?.(true);
  return stream;
}

/**
 * Pools are keyed by address and the identity the endpoint must prove: a connection verified for
 * one identity is never reused for a request that expects another (config changes, impostors).
 */
function endpointKey(ep: UpstreamEndpoint): string {
  const addr = ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
  const w = ep.workload;
  const key = w === undefined ? addr : `${addr}|${w.namespace}/${w.serviceAccount ?? ''}`;
  // A connection tunnelled to one service VIP through a waypoint never carries another's requests.
  const tunnelled = ep.authorityHost === undefined ? key : `${key}|${ep.authorityHost}`;
  const eg = ep.egress;
  // Egress: one pool per resolved name and TLS settings (a changed CA never reuses old connections).
  return eg === undefined ? tunnelled : `${tunnelled}|egress:${eg.dnsName ?? ''}|tls:${eg.tls?.id ?? '-'}`;
}

function originOf(ep: UpstreamEndpoint): string {
  return ep.ip.includes(':') ? `http://[${ep.ip}]:${ep.port}` : `http://${ep.ip}:${ep.port}`;
}

export interface UpstreamPoolsOptions {
  connect: ConnectUpstream;
  /** Idle keep-alive time for HTTP/1.1 upstream connections. */
  keepAliveTimeoutMs?: number;
}

export class UpstreamPools {
  readonly #connect: ConnectUpstream;
  readonly #keepAliveMs: number;
  readonly #h1 = new Map<string, Pool>();
  /**
   * The pool an UpstreamEndpoint object maps to, without building its key string per request.
   * Replaced (emptied) when a pool is retired, so it never answers with a retired pool.
   */
  #h1ByEndpoint = new WeakMap<UpstreamEndpoint, Pool>();
  readonly #h2 = new Map<string, Promise<ClientHttp2Session>>();
  #closed = false;

  constructor(opts: UpstreamPoolsOptions) {
    this.#connect = opts.connect;
    this.#keepAliveMs = opts.keepAliveTimeoutMs ?? 30_000;
  }

  /** A raw byte stream (WebSocket upgrades, plain TCP); connect failures are tagged. */
  async fetchStream(ep: UpstreamEndpoint): Promise<Duplex> {
    try {
      return noDelay(await this.#connect(ep));
    } catch (err) {
      throw tagConnectFailure(err);
    }
  }

  findHttp1(ep: UpstreamEndpoint): Pool {
    const known = this.#h1ByEndpoint.get(ep);
    if (known !== undefined) return known;
    const key = endpointKey(ep);
    let pool = this.#h1.get(key);
    if (pool === undefined) {
      const connect = this.#connect;
      // Keep-alive connections ride HBONE tunnels. When a tunnel's HBONE connection gets GOAWAY
      // (the node's agent drains for an upgrade) the endpoint's pool takes no new requests: it is
      // closed (requests already in it finish) and the next request builds a new pool, whose
      // tunnels go through the new agent, instead of reusing a connection the drain deadline will
      // cut (found by the soak: one GET failed 503 UC as the old agent exited).
      let retired = false;
      const retire = (): void => {
        if (retired) return;
        retired = true;
        if (this.#h1.get(key) === created) this.#h1.delete(key);
        this.#h1ByEndpoint = new WeakMap();
        void created.close().catch(() => {});
      };
      const created: Pool = new Pool(originOf(ep), {
        pipelining: 1,
        keepAliveTimeout: this.#keepAliveMs,
        // The proxy enforces its own timeouts (route and per-try) and aborts requests itself.
        headersTimeout: 0,
        bodyTimeout: 0,
        connect: (_opts, cb) => {
          connect(ep).then(
            (stream) => {
              onCarrierGoaway(stream, stream, retire);
              cb(null, noDelay(stream) as Socket);
            },
            (err: unknown) => cb(tagConnectFailure(err), null),
          );
        },
      });
      pool = created;
      this.#h1.set(key, pool);
    }
    this.#h1ByEndpoint.set(ep, pool);
    return pool;
  }

  fetchHttp2(ep: UpstreamEndpoint): Promise<ClientHttp2Session> {
    if (this.#closed) return Promise.reject(new Error('waypoint upstream pools are closed'));
    const key = endpointKey(ep);
    let p = this.#h2.get(key);
    if (p === undefined) {
      p = this.#openHttp2(key, ep);
      this.#h2.set(key, p);
      p.catch(() => {
        if (this.#h2.get(key) === p) this.#h2.delete(key);
      });
    }
    return p;
  }

  async #openHttp2(key: string, ep: UpstreamEndpoint): Promise<ClientHttp2Session> {
    let stream: Duplex;
    // TLS origination for an HTTP/2 upstream negotiates h2 (ALPN), not HTTP/1.1.
    const dial = ep.egress?.tls === undefined ? ep : { ...ep, egress: { ...ep.egress, h2: true } };
    try {
      stream = noDelay(await this.#connect(dial));
    } catch (err) {
      throw tagConnectFailure(err);
    }
    // Windows as HBONE's (ARCHITECTURE.md 3): node's 64 KiB defaults throttle streaming.
    const session = http2.connect(originOf(ep), {
      createConnection: () => stream,
      settings: { initialWindowSize: STREAM_WINDOW },
    });
    session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    const cached = this.#h2.get(key);
    const forget = () => {
      if (this.#h2.get(key) === cached) this.#h2.delete(key);
    };
    session.on('error', forget);
    session.on('close', forget);
    session.on('goaway', forget);
    // The tunnel rides an HBONE connection. When that connection gets GOAWAY (the node's agent is
    // draining for an upgrade) the session over it takes no new requests: they open a new one
    // (through the new agent) instead of riding the old tunnel until the drain deadline cuts it.
    onCarrierGoaway(stream, session, () => {
      forget();
      if (!session.closed && !session.destroyed) session.close();
    });
    return await new Promise<ClientHttp2Session>((resolve, reject) => {
      session.once('connect', () => resolve(session));
      session.once('error', (err) => reject(tagConnectFailure(err)));
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const h1 = [...this.#h1.values()];
    this.#h1.clear();
    this.#h1ByEndpoint = new WeakMap();
    const h2 = [...this.#h2.values()];
    this.#h2.clear();
    await Promise.allSettled([
      ...h1.map((p) => p.destroy()),
      ...h2.map(async (p) => {
        const s = await p;
        s.destroy();
      }),
    ]);
  }
}

/**
 * Calls `retire` once if the HBONE connection carrying `tunnel` (its HTTP/2 session, when the
 * tunnel is an HBONE stream) gets GOAWAY before `user` closes. Plain TCP tunnels have no carrier.
 */
function onCarrierGoaway(
  tunnel: Duplex,
  user: { once(event: 'close', listener: () => void): unknown },
  retire: () => void,
): void {
  const carrier = (tunnel as Partial<Pick<Http2Stream, 'session'>>).session;
  if (carrier === undefined) return;
  carrier.once('goaway', retire);
  user.once('close', () => carrier.off('goaway', retire));
}
