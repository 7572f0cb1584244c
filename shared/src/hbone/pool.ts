// HBONE client: a pool of mTLS HTTP/2 connections, one CONNECT stream per tunneled TCP connection.
//
// Invariants:
// - One pool per process; connections are keyed by (source identity, expected destination
//   identities, destination ip:port). A connection is never shared across keys, so a stream
//   always rides a connection authenticated as its own source and verified against its own
//   expected identities.
// - Single flight: a stream slot is reserved synchronously on a connection that is still
//   connecting, so 100 callers arriving together for one key share one TCP + TLS handshake
//   (and N*100+1 callers open N+1 connections) instead of racing to open 100.
// - At most maxStreamsPerConnection (100) streams per connection, fewer if the server advertises
//   less; a full connection makes the next caller open another one.
// - A connection that received GOAWAY, failed its PING, or idled for 5 minutes is never handed
//   out again; its open streams finish on it (drain), new ones go to a fresh connection.
// - The server must present one of the expected identities or the connection is refused
//   (IDENTITY_ERROR) before any byte of application data is sent.
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants as h2c,
  connect as h2connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { WorkloadCertificate } from '../identity/index.js';
import type { SpiffeId } from '../identity/spiffe.js';
import { createSilentLogger, type Logger } from '../log/logger.js';
import { codeForStatus, HBONE_REASON_HEADER, HboneError, type HboneErrorCode } from './errors.js';
import {
  type Authority,
  type Baggage,
  buildBaggage,
  buildForwarded,
  formatAuthority,
  formatTraceParent,
  parseAuthority,
  type SocketAddress,
  type TraceParent,
} from './headers.js';
import { startKeepalive } from './keepalive.js';
import { peerFromSocket } from './peer.js';
import {
  clientSessionOptions,
  DEFAULT_FLOW_CONTROL,
  type FlowControlOptions,
  HBONE_ALPN,
  HBONE_PORT,
  type HboneSocketTuner,
  TLS_BASE,
} from './settings.js';

/** How often connect() resends a stream the server refused unprocessed (see connect). */
const MAX_REFUSAL_RETRIES = 3;
export interface HbonePoolOptions {
  /**
   * Opens the TCP socket to the peer's HBONE port. Override to set socket options (SO_MARK,
   * bind to an interface) before connecting; default `net.connect`.
   */
  createConnection?: (target: { host: string; port: number }) => Socket;
  /**
   * Called with each HBONE TCP socket once connected, before TLS: socket options Node has no API
   * for. The agent raises the send buffer here (see HboneSocketTuner in settings.ts).
   */
  tuneSocket?: HboneSocketTuner;
  maxStreamsPerConnection?: number;
  /** A connection without streams for this long is closed. Default 5 minutes. */
  idleTimeoutMs?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** TCP connect + TLS + first SETTINGS must finish within this. Default 10 s. */
  connectTimeoutMs?: number;
  /** The CONNECT response must arrive within this. Default 10 s. */
  requestTimeoutMs?: number;
  maxHeaderListSize?: number;
  flowControl?: Partial<FlowControlOptions>;
  logger?: Logger;
}

export interface HboneConnectRequest {
  /** Our workload's certificate, presented as the client certificate. */
  source: WorkloadCertificate;
  /** The peer's HBONE endpoint; port defaults to 15008. */
  destination: { ip: string; port?: number };
  /** The server must present one of these (the workload's identity, or its waypoint's). */
  expectedIdentities: readonly SpiffeId[];
  /** `podIP:targetPort`, or `VIP:servicePort` towards a waypoint. */
  authority: string | Authority;
  forwardedFor?: SocketAddress;
  baggage?: Baggage;
  traceparent?: TraceParent | string;
  /** Extra request headers (lowercase names, no pseudo-headers). */
  headers?: Readonly<Record<string, string>>;
  signal?: AbortSignal;
}

export interface HboneTunnel {
  /** The CONNECT stream: write to send, read to receive, end() to half-close, close(code) to reset. */
  readonly stream: ClientHttp2Stream;
  /** The identity the server proved. */
  readonly peer: SpiffeId;
  /** Id of the pooled HTTP/2 connection carrying this stream (stable for its lifetime). */
  readonly connectionId: number;
}

export interface HbonePoolStats {
  /** Connections ever attempted (TCP + TLS handshakes). */
  handshakes: number;
  /** Connections open now (ready or draining). */
  connections: number;
  /** Streams open now. */
  streams: number;
}

const DEFAULTS = {
  maxStreamsPerConnection: 100,
  idleTimeoutMs: 5 * 60_000,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  connectTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
  maxHeaderListSize: 64 * 1024,
};

type ConnState = 'connecting' | 'ready' | 'draining' | 'closed';

class PooledConnection {
  readonly id: number;
  readonly key: string;
  readonly ready: Promise<void>;
  state: ConnState = 'connecting';
  session: ClientHttp2Session | undefined;
  peer: SpiffeId | undefined;
  /** Streams open or reserved by callers waiting for this connection. */
  used = 0;
  capacity: number;
  idleTimer: NodeJS.Timeout | undefined;

  constructor(
    id: number,
    key: string,
    capacity: number,
    establish: (conn: PooledConnection) => Promise<void>,
  ) {
    this.id = id;
    this.key = key;
    this.capacity = capacity;
    this.ready = establish(this);
    // Waiters attach their own handlers; this one only keeps an unobserved failure from crashing.
    this.ready.catch(() => {});
  }

  get usable(): boolean {
    return (this.state === 'connecting' || this.state === 'ready') && this.used < this.capacity;
  }
}

export class HbonePool {
  readonly #opts: typeof DEFAULTS;
  readonly #flow: FlowControlOptions;
  readonly #createConnection: (target: { host: string; port: number }) => Socket;
  readonly #tuneSocket: HboneSocketTuner | undefined;
  readonly #log: Logger;
  readonly #byKey = new Map<string, PooledConnection[]>();
  #nextId = 1;
  #handshakes = 0;
  #closed = false;

  constructor(options: HbonePoolOptions = {}) {
    this.#opts = {
      maxStreamsPerConnection: options.maxStreamsPerConnection ?? DEFAULTS.maxStreamsPerConnection,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
      pingIntervalMs: options.pingIntervalMs ?? DEFAULTS.pingIntervalMs,
      pingTimeoutMs: options.pingTimeoutMs ?? DEFAULTS.pingTimeoutMs,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      maxHeaderListSize: options.maxHeaderListSize ?? DEFAULTS.maxHeaderListSize,
    };
    this.#flow = { ...DEFAULT_FLOW_CONTROL, ...options.flowControl };
    this.#tuneSocket = options.tuneSocket;
    this.#createConnection =
      options.createConnection ?? ((t) => netConnect({ host: t.host, port: t.port, noDelay: true }));
    this.#log = (options.logger ?? createSilentLogger()).child({ component: 'hbone-pool' });
  }

  stats(): HbonePoolStats {
    let connections = 0;
    let streams = 0;
    for (const list of this.#byKey.values()) {
      for (const c of list) {
        if (c.state === 'ready' || c.state === 'draining') connections += 1;
        if (c.session) streams += c.used;
      }
    }
    return { handshakes: this.#handshakes, connections, streams };
  }

  /** Opens a tunnel: a CONNECT stream answered 200. Rejects with HboneError otherwise. */
  async connect(req: HboneConnectRequest): Promise<HboneTunnel> {
    if (this.#closed) throw new HboneError('CLOSED', 'HBONE pool is closed');
    const target = validateRequest(req);
    const key = `${req.source.id}|${[...new Set(req.expectedIdentities.map(String))].sort().join(',')}|${target.addr}`;
    const headers = buildHeaders(req, target.authority);
    // Retries: a stream refused because its connection went away before the server saw it
    // (GOAWAY race, REFUSED_STREAM) never reached the destination, so it is safe to send again.
    // More than one: when a destination agent hands over to its successor, every pooled connection
    // to it gets GOAWAY, and a retry may land on another one whose GOAWAY is still in flight (a
    // connection that received GOAWAY is retired and never picked again).
    for (let attempt = 0; ; attempt++) {
      const conn = this.#reserve(key, req, target);
      try {
        await conn.ready;
        return await this.#openStream(conn, headers, target, req.signal);
      } catch (err) {
        this.#release(conn);
        if (attempt < MAX_REFUSAL_RETRIES && err instanceof RetryableRefusal) continue;
        if (err instanceof RetryableRefusal) throw err.error;
        throw err;
      }
    }
  }

  /** Closes every connection now; open streams are reset. */
  close(): void {
    this.#closed = true;
    for (const list of this.#byKey.values()) for (const c of list) this.#destroy(c);
    this.#byKey.clear();
  }

  #reserve(key: string, req: HboneConnectRequest, target: ValidTarget): PooledConnection {
    let list = this.#byKey.get(key);
    if (list === undefined) {
      list = [];
      this.#byKey.set(key, list);
    }
    let conn = list.find((c) => c.usable);
    if (conn === undefined) {
      conn = new PooledConnection(this.#nextId++, key, this.#opts.maxStreamsPerConnection, (c) =>
        this.#establish(c, req, target),
      );
      list.push(conn);
    }
    conn.used += 1;
    if (conn.idleTimer) {
      clearTimeout(conn.idleTimer);
      conn.idleTimer = undefined;
    }
    return conn;
  }

  #release(conn: PooledConnection): void {
    conn.used -= 1;
    if (conn.used > 0) return;
    if (conn.state === 'draining') {
      conn.session?.close();
      return;
    }
    if (conn.state !== 'ready') return;
    conn.idleTimer = setTimeout(() => {
      if (conn.used === 0 && conn.state === 'ready') {
        this.#retire(conn);
        conn.session?.close();
      }
    }, this.#opts.idleTimeoutMs);
    conn.idleTimer.unref();
  }

  /** Stops handing the connection out; open streams continue. */
  #retire(conn: PooledConnection): void {
    if (conn.state === 'ready' || conn.state === 'connecting') conn.state = 'draining';
    const list = this.#byKey.get(conn.key);
    if (list) {
      const i = list.indexOf(conn);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.#byKey.delete(conn.key);
    }
  }

  #destroy(conn: PooledConnection): void {
    this.#retire(conn);
    conn.state = 'closed';
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.session?.destroy();
  }

  async #establish(conn: PooledConnection, req: HboneConnectRequest, target: ValidTarget): Promise<void> {
    this.#handshakes += 1;
    const where = `HBONE ${target.addr}`;
    const deadline = Date.now() + this.#opts.connectTimeoutMs;
    const remaining = (): number => Math.max(1, deadline - Date.now());
    let socket: Socket | undefined;
    let tls: TLSSocket | undefined;
    try {
      socket = this.#createConnection({ host: target.ip, port: target.port });
      socket.on('error', () => {});
      await waitFor(socket, socket.connecting ? 'connect' : undefined, remaining(), (err, timedOut) =>
        timedOut
          ? new HboneError(
              'CONNECT_TIMEOUT',
              `${where}: TCP connect timed out; maybe a NetworkPolicy or firewall blocks port ${target.port}`,
            )
          : new HboneError(
              'CONNECT',
              `${where}: TCP connect failed (${errText(err)}); is the destination node's agent listening on ${target.port}?`,
              { cause: err },
            ),
      );
      this.#tuneSocket?.(socket);
      tls = tlsConnect({
        ...TLS_BASE,
        socket,
        key: req.source.keyPem,
        cert: req.source.certChainPem,
        ca: req.source.trustBundlePem,
        ALPNProtocols: [HBONE_ALPN],
        rejectUnauthorized: true,
        // The server is authenticated by its SPIFFE id below, not by a DNS name or IP.
        checkServerIdentity: () => undefined,
      });
      tls.on('error', () => {});
      await waitFor(tls, 'secureConnect', remaining(), (err, timedOut) =>
        timedOut
          ? new HboneError('TLS_TIMEOUT', `${where}: TLS handshake timed out`)
          : new HboneError(
              'TLS_FAILURE',
              `${where}: TLS handshake failed (${errText(err)}); check that both sides share the trust bundle and certificates are current`,
              { cause: err },
            ),
      );
      if (tls.alpnProtocol !== HBONE_ALPN) {
        throw new HboneError(
          'H2_HANDSHAKE_FAILURE',
          `${where}: server did not negotiate ALPN h2 (got ${String(tls.alpnProtocol)}); is this an HBONE port?`,
        );
      }
      const peer = peerFromSocket(tls);
      if (!req.expectedIdentities.some((id) => id.equals(peer.id))) {
        throw new HboneError(
          'IDENTITY_ERROR',
          `${where}: server presented ${peer.id}, expected ${req.expectedIdentities.map(String).join(' or ')}; the address may belong to another workload now`,
        );
      }
      conn.peer = peer.id;
      const tlsSocket = tls;
      const session = h2connect(`https://${target.addr}`, {
        ...clientSessionOptions(this.#flow, { maxHeaderListSize: this.#opts.maxHeaderListSize }),
        createConnection: () => tlsSocket,
      });
      conn.session = session;
      session.on('error', (err) => this.#log.debug({ err, addr: target.addr }, 'HBONE session error'));
      session.on('frameError', () => {});
      await waitFor(session, 'remoteSettings', remaining(), (err, timedOut) =>
        timedOut
          ? new HboneError('H2_HANDSHAKE_FAILURE', `${where}: server sent no HTTP/2 SETTINGS in time`)
          : new HboneError(
              'TLS_FAILURE',
              `${where}: server closed the connection right after TLS (${errText(err)}); it most likely refused our client certificate (expired, other root, other trust domain, or revoked): check the server's logs`,
              { cause: err },
            ),
      );
      const remoteMax = session.remoteSettings.maxConcurrentStreams;
      if (remoteMax !== undefined && remoteMax > 0) conn.capacity = Math.min(conn.capacity, remoteMax);
      session.setLocalWindowSize(this.#flow.connectionWindow);
      startKeepalive(session, {
        intervalMs: this.#opts.pingIntervalMs,
        timeoutMs: this.#opts.pingTimeoutMs,
        onTimeout: () => {
          this.#log.warn({ addr: target.addr }, 'HBONE server stopped answering PINGs; closing connection');
          this.#destroy(conn);
        },
      });
      session.on('goaway', () => {
        this.#retire(conn);
        if (conn.used === 0) session.close();
      });
      session.once('close', () => {
        this.#retire(conn);
        conn.state = 'closed';
        if (conn.idleTimer) clearTimeout(conn.idleTimer);
      });
      if (conn.state === 'connecting') conn.state = 'ready';
    } catch (err) {
      this.#retire(conn);
      conn.state = 'closed';
      conn.session?.destroy();
      tls?.destroy();
      socket?.destroy();
      throw err instanceof HboneError
        ? err
        : new HboneError('H2_HANDSHAKE_FAILURE', `${where}: ${errText(err)}`, { cause: err });
    }
  }

  #openStream(
    conn: PooledConnection,
    headers: Record<string, string>,
    target: ValidTarget,
    signal?: AbortSignal,
  ): Promise<HboneTunnel> {
    const session = conn.session;
    if (conn.state === 'closed' || session === undefined || session.closed || session.destroyed) {
      // A session that failed a moment ago (ERR_HTTP2_TOO_MANY_INVALID_FRAMES, a socket error) has
      // not emitted 'close' yet: retire it now, or every retry picks it again and the tunnel fails
      // although a new connection would have served it.
      this.#retire(conn);
      return Promise.reject(
        new RetryableRefusal(
          new HboneError('STREAM_RESET', `HBONE ${target.addr}: connection closed before the stream opened`),
        ),
      );
    }
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch (err) {
      this.#retire(conn);
      return Promise.reject(
        new RetryableRefusal(
          new HboneError('STREAM_RESET', `HBONE ${target.addr}: ${errText(err)}`, { cause: err }),
        ),
      );
    }
    stream.on('error', () => {});
    let released = false;
    stream.once('close', () => {
      if (!released) {
        released = true;
        this.#release(conn);
      }
    });
    const where = `HBONE ${target.addr} CONNECT ${headers[':authority']}`;
    return new Promise<HboneTunnel>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        stream.off('response', onResponse);
        stream.off('close', onClose);
        signal?.removeEventListener('abort', onAbort);
      };
      // The stream's close handler releases the slot; prevent connect()'s catch from releasing twice.
      const fail = (err: Error): void => {
        cleanup();
        if (!released) released = true;
        else conn.used += 1;
        reject(err);
      };
      const onResponse = (h: IncomingHttpHeaders): void => {
        const status = Number(h[':status']);
        if (status === 200) {
          cleanup();
          resolve({ stream, peer: conn.peer as SpiffeId, connectionId: conn.id });
          return;
        }
        const reason =
          typeof h[HBONE_REASON_HEADER] === 'string' ? (h[HBONE_REASON_HEADER] as string) : undefined;
        const code = codeForStatus(status, reason);
        stream.close(h2c.NGHTTP2_CANCEL);
        fail(
          new HboneError(code, `${where}: ${statusMessage(code, status, reason)}`, {
            status,
            ...(reason ? { reason } : {}),
          }),
        );
      };
      const onClose = (): void => {
        const refused = stream.rstCode === h2c.NGHTTP2_REFUSED_STREAM;
        const err = new HboneError(
          'STREAM_RESET',
          `${where}: stream closed before a response (HTTP/2 code ${stream.rstCode ?? 'none'}); the server reset it or the connection went away`,
        );
        fail(refused ? new RetryableRefusal(err) : err);
      };
      const onAbort = (): void => {
        stream.close(h2c.NGHTTP2_CANCEL);
        fail(new HboneError('STREAM_RESET', `${where}: cancelled by the caller`));
      };
      const timer = setTimeout(() => {
        stream.close(h2c.NGHTTP2_CANCEL);
        fail(
          new HboneError(
            'REQUEST_TIMEOUT',
            `${where}: no response within ${this.#opts.requestTimeoutMs} ms; the destination agent may be overloaded`,
          ),
        );
      }, this.#opts.requestTimeoutMs);
      timer.unref();
      stream.once('response', onResponse);
      stream.once('close', onClose);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** Marks a failure that happened before the server saw the stream: connect() may retry once. */
class RetryableRefusal extends Error {
  readonly error: HboneError;
  constructor(error: HboneError) {
    super(error.message);
    this.error = error;
  }
}

interface ValidTarget {
  ip: string;
  port: number;
  addr: string;
  authority: string;
}

function validateRequest(req: HboneConnectRequest): ValidTarget {
  const ip = req.destination?.ip;
  if (typeof ip !== 'string' || isIP(ip) === 0) {
    throw new HboneError('INVALID_ARGUMENT', `destination ip ${JSON.stringify(ip)} is not an IP address`);
  }
  const port = req.destination.port ?? HBONE_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new HboneError('INVALID_ARGUMENT', `destination port ${port} is not between 1 and 65535`);
  }
  if (req.expectedIdentities.length === 0) {
    throw new HboneError(
      'INVALID_ARGUMENT',
      `no expected identities for ${ip}: refusing to connect to an unauthenticated peer`,
    );
  }
  let authority: string;
  try {
    authority = formatAuthority(
      typeof req.authority === 'string' ? parseAuthority(req.authority) : req.authority,
    );
  } catch (err) {
    throw new HboneError('INVALID_ARGUMENT', (err as Error).message);
  }
  return { ip, port, addr: formatAuthority({ ip, port }), authority };
}

function buildHeaders(req: HboneConnectRequest, authority: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers ?? {})) {
    if (name.startsWith(':'))
      throw new HboneError('INVALID_ARGUMENT', `extra header ${name} is a pseudo-header`);
    headers[name.toLowerCase()] = value;
  }
  headers[':method'] = 'CONNECT';
  headers[':authority'] = authority;
  if (req.forwardedFor) headers.forwarded = buildForwarded(req.forwardedFor);
  if (req.baggage) headers.baggage = buildBaggage(req.baggage);
  if (req.traceparent) {
    headers.traceparent =
      typeof req.traceparent === 'string' ? req.traceparent : formatTraceParent(req.traceparent);
  }
  return headers;
}

function statusMessage(code: HboneErrorCode, status: number, reason: string | undefined): string {
  const why = reason ? ` (${reason})` : '';
  switch (code) {
    case 'DENY':
      return `denied by the destination's authorization policy (${status})${why}; check AuthorizationPolicy for the source identity`;
    case 'BAD_REQUEST':
      return `refused as malformed (${status})${why}; the authority must be the destination IP:port unless the receiver is its waypoint`;
    case 'UPSTREAM_CONNECT_FAILURE':
      return `the destination agent could not connect to the application (${status})${why}; is it listening on that port?`;
    case 'NO_HEALTHY_UPSTREAM':
      return `the destination agent knows no workload for this authority (${status})${why}; has the pod moved or is config out of sync?`;
    default:
      return `unexpected status ${status}${why}`;
  }
}

function errText(err: unknown): string {
  if (err instanceof Error)
    return (err as NodeJS.ErrnoException).code
      ? `${(err as NodeJS.ErrnoException).code}: ${err.message}`
      : err.message;
  return err === undefined ? 'closed' : String(err);
}

/**
 * Resolves on `event` (immediately if undefined); rejects via `makeError` on 'error', 'close' or
 * timeout. Listeners are removed either way.
 */
function waitFor(
  emitter: NodeJS.EventEmitter,
  event: string | undefined,
  timeoutMs: number,
  makeError: (err: unknown, timedOut: boolean) => Error,
): Promise<void> {
  if (event === undefined) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      emitter.off('error', onError);
      emitter.off('close', onClose);
    };
    const onEvent = (): void => {
      done();
      resolve();
    };
    const onError = (err: unknown): void => {
      done();
      reject(makeError(err, false));
    };
    const onClose = (): void => {
      done();
      reject(makeError(undefined, false));
    };
    const timer = setTimeout(() => {
      done();
      reject(makeError(undefined, true));
    }, timeoutMs);
    emitter.once(event, onEvent);
    emitter.once('error', onError);
    emitter.once('close', onClose);
  });
}

export function createHbonePool(options: HbonePoolOptions = {}): HbonePool {
  return new HbonePool(options);
}
