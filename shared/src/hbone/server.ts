// HBONE server: TLS 1.3 + ALPN h2 + mandatory client certificate, one HTTP/2 CONNECT stream per
// tunneled TCP connection.
//
//   socket (own listener, or handed over by the agent's capture)
//     -> findCertificate(connection)            no SNI: the original destination picks the cert
//     -> tls.Server for that certificate   (TLS 1.3, chain verify, ALPN, handshake timeout)
//     -> 'secureConnection': peer identity from URI SAN, trust domain, revocation
//     -> performServerHandshake: HTTP/2 session with our limits and flood guards
//     -> 'stream':  CONNECT only, strict authority/headers -> handler -> 400/401/503 | 200 + copy
//
// Invariants:
// - Node has no per-connection certificate hook without SNI, so there is one (never listening)
//   tls.Server per certificate object and sockets are injected with emit('connection').
//   The cache is a WeakMap: a renewed certificate object gets a new server, the old one goes away
//   with its last connection.
// - Every await in the stream path is followed by a `stream.destroyed` check: a peer may cancel
//   while the handler runs, and responding on a dead stream throws (see FACTS.md).
// - Every session, stream and socket has an 'error' listener: a hostile peer must never be able
//   to crash the process.
import type { X509Certificate } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import {
  constants as h2c,
  type IncomingHttpHeaders,
  performServerHandshake,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import type { WorkloadCertificate } from '../identity/index.js';
import type { SpiffeId } from '../identity/spiffe.js';
import { createSilentLogger, type Logger } from '../log/logger.js';
import {
  type ByteCounters,
  type CopyResult,
  copyBidirectional,
  createByteCounters,
  resetStream,
  wasResetLocally,
} from './copy.js';
import { HBONE_REASON_HEADER, HboneError, type HboneErrorCode } from './errors.js';
import {
  type Authority,
  type Baggage,
  parseAuthority,
  parseBaggage,
  parseForwarded,
  parseTraceParent,
  type SocketAddress,
  type TraceParent,
} from './headers.js';
import { startKeepalive } from './keepalive.js';
import { peerFromSocket } from './peer.js';
import {
  DEFAULT_FLOW_CONTROL,
  DEFAULT_SERVER_LIMITS,
  type FlowControlOptions,
  HBONE_ALPN,
  type HboneLimits,
  type HboneSocketTuner,
  serverSessionOptions,
  TLS_BASE,
} from './settings.js';

/** Where a connection arrived; the agent passes the captured original destination. */
export interface ConnectionInfo {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** SO_ORIGINAL_DST of a redirected socket, when the caller knows it. */
  readonly originalDestination?: SocketAddress;
}

export interface PeerCertificateInfo {
  readonly id: SpiffeId;
  /** Serial number, lowercase hex without leading zeros (see normalizeSerial). */
  readonly serial: string;
  readonly notAfter: Date;
}

export interface HboneRequest {
  readonly authority: Authority;
  readonly peer: SpiffeId;
  readonly peerCertificate: PeerCertificateInfo;
  /** The certificate we presented (whose workload the client reached). */
  readonly certificate: WorkloadCertificate;
  readonly connection: ConnectionInfo;
  /** Request headers without pseudo-headers. */
  readonly headers: Readonly<Record<string, string>>;
  readonly forwardedFor?: SocketAddress;
  readonly baggage?: Baggage;
  readonly traceparent?: TraceParent;
  /** Live byte counters of this tunnel, readable while it runs. */
  readonly counters: ByteCounters;
  /** Aborted if the client cancels the stream while the handler is still deciding. */
  readonly signal: AbortSignal;
}

export type HboneRefusalStatus = 400 | 401 | 503;

export type HboneResponse =
  | { status: HboneRefusalStatus; reason?: string }
  | { status: 200; upstream: Duplex; onDone?: (result: CopyResult) => void }
  /**
   * The handler reads and writes the CONNECT stream itself (the waypoint parses HTTP on it): no
   * second stream and no copy loop in between. `serve` runs once the 200 is sent; the stream's
   * 'close' ends the tunnel.
   */
  | { status: 200; serve: (stream: Duplex) => void };

export type HboneHandler = (req: HboneRequest) => Promise<HboneResponse> | HboneResponse;

export interface HboneServerOptions {
  /** Certificate to present for this connection; undefined closes the socket (unknown destination). */
  findCertificate: (conn: ConnectionInfo) => WorkloadCertificate | undefined;
  handler: HboneHandler;
  /** Trust domain clients must belong to; defaults to the trust domain of the presented certificate. */
  trustDomain?: string;
  /** Returns true for a revoked client certificate: the connection is refused at handshake. */
  isRevoked?: (peer: PeerCertificateInfo) => boolean;
  limits?: Partial<HboneLimits>;
  flowControl?: Partial<FlowControlOptions>;
  /** Called with each accepted HBONE TCP socket before TLS (see HboneSocketTuner in settings.ts). */
  tuneSocket?: HboneSocketTuner;
  logger?: Logger;
}

export interface HboneServerStats {
  connections: number;
  streams: number;
  handshakesCompleted: number;
  handshakesRejected: number;
  goawaysForAbuse: number;
}

/** diagnostics_channel names; publishing costs nothing without subscribers. */
export const HBONE_CHANNELS = {
  /** { request: HboneRequest } when a tunnel opens (status 200). */
  streamOpen: 'hypha:hbone:server:stream-open',
  /** { request, result: CopyResult } when a tunnel closes. */
  streamClose: 'hypha:hbone:server:stream-close',
  /** { code: HboneErrorCode, message, connection } when a connection or stream is refused. */
  refused: 'hypha:hbone:server:refused',
} as const;

const streamOpenChannel = channel(HBONE_CHANNELS.streamOpen);
const streamCloseChannel = channel(HBONE_CHANNELS.streamClose);
const refusedChannel = channel(HBONE_CHANNELS.refused);

const FORBIDDEN_CONNECT_PSEUDO = [':scheme', ':path', ':protocol'] as const;

interface SessionState {
  readonly session: ServerHttp2Session;
  readonly peer: PeerCertificateInfo;
  readonly certificate: WorkloadCertificate;
  readonly connection: ConnectionInfo;
  streams: number;
  windowStart: number;
  earlyResets: number;
  controlFrames: number;
  idleTimer: NodeJS.Timeout | undefined;
  abusive: boolean;
}

export class HboneServer {
  readonly #opts: HboneServerOptions;
  readonly #limits: HboneLimits;
  readonly #flow: FlowControlOptions;
  readonly #log: Logger;
  readonly #servers = new WeakMap<WorkloadCertificate, TlsServer>();
  readonly #sessions = new Set<SessionState>();
  /** Sockets in the TLS handshake, by connection key (see connectionKey). */
  readonly #handshaking = new Map<string, { socket: Socket; connection: ConnectionInfo }>();
  readonly #listeners: NetServer[] = [];
  readonly #stats: HboneServerStats = {
    connections: 0,
    streams: 0,
    handshakesCompleted: 0,
    handshakesRejected: 0,
    goawaysForAbuse: 0,
  };
  #draining = false;
  /** Set by a hand-off drain: connections already accepted finish their handshake (then GOAWAY). */
  #finishHandshakes = false;

  constructor(opts: HboneServerOptions) {
    this.#opts = opts;
    this.#limits = { ...DEFAULT_SERVER_LIMITS, ...opts.limits };
    this.#flow = { ...DEFAULT_FLOW_CONTROL, ...opts.flowControl };
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'hbone-server' });
  }

  /** Listens on its own TCP port (tests, benchmarks, the waypoint). Resolves with the bound address. */
  async listen(port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
    const server = createNetServer({ pauseOnConnect: false, noDelay: true }, (socket) =>
      this.handleSocket(socket),
    );
    server.on('error', (err) => this.#log.error({ err }, 'HBONE listener error'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#listeners.push(server);
    return server.address() as AddressInfo;
  }

  /** Takes over an accepted TCP socket (from our listener or the agent's capture). */
  handleSocket(socket: Socket, meta: { originalDestination?: SocketAddress } = {}): void {
    socket.on('error', () => {});
    if (this.#draining && !this.#finishHandshakes) {
      socket.destroy();
      return;
    }
    if (this.#handshaking.size >= this.#limits.maxPendingHandshakes) {
      this.#refuse('TLS_FAILURE', 'too many TLS handshakes in progress; closing new connection');
      socket.destroy();
      return;
    }
    const connection: ConnectionInfo = {
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      ...(meta.originalDestination ? { originalDestination: meta.originalDestination } : {}),
    };
    let certificate: WorkloadCertificate | undefined;
    try {
      certificate = this.#opts.findCertificate(connection);
    } catch (err) {
      this.#log.error({ err }, 'findCertificate threw');
    }
    if (certificate === undefined) {
      this.#refuse(
        'IDENTITY_ERROR',
        `no certificate for destination ${connection.originalDestination?.ip ?? connection.localAddress}`,
        connection,
      );
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.#opts.tuneSocket?.(socket);
    const key = connectionKey(socket);
    const entry = { socket, connection };
    this.#handshaking.set(key, entry);
    socket.once('close', () => {
      if (this.#handshaking.get(key) === entry) this.#handshaking.delete(key);
    });
    this.#serverFor(certificate).emit('connection', socket);
  }

  stats(): HboneServerStats {
    return { ...this.#stats, connections: this.#sessions.size, streams: this.#countStreams() };
  }

  /**
   * Graceful drain: stop accepting, GOAWAY every connection (no new streams; open ones continue),
   * then force-close whatever is left at the deadline. Resolves when every connection is gone.
   *
   * `finishHandshakes` (the upgrade hand-off): a client whose TCP connection was already accepted
   * is not failed mid-handshake; its session is set up and at once sent GOAWAY, so the client's
   * first stream is refused (REFUSED_STREAM, which HBONE clients retry) and goes to the new agent.
   */
  async drain(deadlineMs: number, options: { finishHandshakes?: boolean } = {}): Promise<void> {
    this.#draining = true;
    this.#finishHandshakes = options.finishHandshakes === true;
    for (const l of this.#listeners) l.close();
    if (!this.#finishHandshakes) for (const { socket } of this.#handshaking.values()) socket.destroy();
    for (const state of this.#sessions) {
      if (!state.session.closed && !state.session.destroyed) state.session.close();
    }
    const deadline = setTimeout(() => {
      for (const state of this.#sessions) state.session.destroy();
    }, deadlineMs);
    try {
      await Promise.all([...this.#sessions].map((s) => closedPromise(s.session)));
    } finally {
      clearTimeout(deadline);
    }
  }

  /**
   * Re-checks every live connection against `isRevoked` (call it when the CA publishes a new
   * revocation list) and closes those whose client certificate is now revoked. Returns how many.
   */
  enforceRevocations(): number {
    let closed = 0;
    for (const state of this.#sessions) {
      if (this.#opts.isRevoked?.(state.peer)) {
        this.#refuse(
          'TLS_FAILURE',
          `closing connection of ${state.peer.id}: serial ${state.peer.serial} was revoked`,
          state.connection,
        );
        state.session.destroy();
        closed += 1;
      }
    }
    return closed;
  }

  /** Immediate close: every connection is destroyed (streams reset). */
  async close(): Promise<void> {
    await this.drain(0);
  }

  get draining(): boolean {
    return this.#draining;
  }

  #connectionOf(socket: TLSSocket): ConnectionInfo {
    return (
      this.#handshaking.get(connectionKey(socket))?.connection ?? {
        localAddress: socket.localAddress ?? '',
        localPort: socket.localPort ?? 0,
        remoteAddress: socket.remoteAddress ?? '',
        remotePort: socket.remotePort ?? 0,
      }
    );
  }

  #countStreams(): number {
    let n = 0;
    for (const s of this.#sessions) n += s.streams;
    return n;
  }

  #refuse(code: HboneErrorCode, message: string, connection?: ConnectionInfo): void {
    this.#log.debug({ code, connection }, message);
    if (refusedChannel.hasSubscribers) refusedChannel.publish({ code, message, connection });
  }

  #serverFor(cert: WorkloadCertificate): TlsServer {
    const existing = this.#servers.get(cert);
    if (existing) return existing;
    const server = createTlsServer({
      ...TLS_BASE,
      key: cert.keyPem,
      cert: cert.certChainPem,
      ca: cert.trustBundlePem,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: [HBONE_ALPN],
      handshakeTimeout: this.#limits.handshakeTimeoutMs,
    });
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      this.#stats.handshakesRejected += 1;
      this.#refuse('TLS_FAILURE', `TLS handshake failed: ${err.message}`, this.#connectionOf(socket));
      socket.destroy();
    });
    server.on('secureConnection', (socket: TLSSocket) => this.#onSecure(socket, cert));
    server.on('error', (err) => this.#log.error({ err }, 'HBONE TLS server error'));
    this.#servers.set(cert, server);
    return server;
  }

  /**
   * TLS is up and the chain verified. Identity checks run here, before HTTP/2 starts, so a
   * refused client never receives our SETTINGS and sees its connection closed after TLS.
   */
  #onSecure(socket: TLSSocket, certificate: WorkloadCertificate): void {
    socket.on('error', () => {});
    const connection = this.#connectionOf(socket);
    this.#handshaking.delete(connectionKey(socket));
    if (this.#draining && !this.#finishHandshakes) {
      socket.destroy();
      return;
    }
    let peer: PeerCertificateInfo;
    try {
      if (socket.alpnProtocol !== HBONE_ALPN) {
        throw new HboneError(
          'H2_HANDSHAKE_FAILURE',
          `client negotiated ALPN ${String(socket.alpnProtocol)}, HBONE needs h2`,
        );
      }
      peer = peerFromSocket(socket);
      const trustDomain = this.#opts.trustDomain ?? certificate.id.trustDomain;
      if (peer.id.trustDomain !== trustDomain) {
        throw new HboneError('IDENTITY_ERROR', `client ${peer.id} is not in trust domain "${trustDomain}"`);
      }
      if (this.#opts.isRevoked?.(peer)) {
        throw new HboneError(
          'TLS_FAILURE',
          `client certificate serial ${peer.serial} of ${peer.id} is revoked`,
        );
      }
    } catch (err) {
      this.#stats.handshakesRejected += 1;
      const code = err instanceof HboneError ? err.code : 'IDENTITY_ERROR';
      this.#refuse(code, (err as Error).message, connection);
      socket.destroy();
      return;
    }
    let session: ServerHttp2Session;
    try {
      session = performServerHandshake(socket, serverSessionOptions(this.#flow, this.#limits));
    } catch (err) {
      this.#refuse(
        'H2_HANDSHAKE_FAILURE',
        `HTTP/2 session setup failed: ${(err as Error).message}`,
        connection,
      );
      socket.destroy();
      return;
    }
    this.#onSession(session, certificate, peer, connection);
    if (this.#draining) session.close();
  }

  #onSession(
    session: ServerHttp2Session,
    certificate: WorkloadCertificate,
    peer: PeerCertificateInfo,
    connection: ConnectionInfo,
  ): void {
    session.on('error', (err) => this.#log.debug({ err }, 'HBONE session error'));
    this.#stats.handshakesCompleted += 1;
    const state: SessionState = {
      session,
      peer,
      certificate,
      connection,
      streams: 0,
      windowStart: Date.now(),
      earlyResets: 0,
      controlFrames: 0,
      idleTimer: undefined,
      abusive: false,
    };
    this.#sessions.add(state);
    this.#armIdle(state);

    const settingsTimer = setTimeout(() => {
      this.#refuse('H2_HANDSHAKE_FAILURE', 'client sent no HTTP/2 SETTINGS in time', connection);
      session.destroy();
    }, this.#limits.settingsTimeoutMs);
    settingsTimer.unref();
    session.once('remoteSettings', () => {
      clearTimeout(settingsTimer);
      try {
        session.setLocalWindowSize(this.#flow.connectionWindow);
      } catch {
        // session already closing
      }
    });
    session.on('remoteSettings', () => this.#countControlFrame(state));
    session.on('ping', () => this.#countControlFrame(state));
    session.on('frameError', () => {});
    session.on('goaway', () => {});
    startKeepalive(session, {
      intervalMs: this.#limits.pingIntervalMs,
      timeoutMs: this.#limits.pingTimeoutMs,
      onTimeout: () => {
        this.#log.debug({ connection }, 'HBONE client stopped answering PINGs; closing');
        session.destroy();
      },
    });
    session.once('close', () => {
      clearTimeout(settingsTimer);
      if (state.idleTimer) clearTimeout(state.idleTimer);
      this.#sessions.delete(state);
    });
    session.on('stream', (stream, headers) => {
      void this.#onStream(state, stream, headers);
    });
  }

  #armIdle(state: SessionState): void {
    if (state.idleTimer) clearTimeout(state.idleTimer);
    state.idleTimer = undefined;
    if (state.streams > 0) return;
    state.idleTimer = setTimeout(() => {
      if (state.streams === 0 && !state.session.closed) state.session.close();
    }, this.#limits.idleTimeoutMs);
    state.idleTimer.unref();
  }

  #rollWindow(state: SessionState): void {
    const now = Date.now();
    if (now - state.windowStart >= 1000) {
      state.windowStart = now;
      state.earlyResets = 0;
      state.controlFrames = 0;
    }
  }

  #countControlFrame(state: SessionState): void {
    this.#rollWindow(state);
    state.controlFrames += 1;
    if (state.controlFrames > this.#limits.maxControlFramesPerSecond) {
      this.#goawayForAbuse(
        state,
        `more than ${this.#limits.maxControlFramesPerSecond} SETTINGS/PING frames per second`,
      );
    }
  }

  #goawayForAbuse(state: SessionState, why: string): void {
    const { session } = state;
    if (session.destroyed || state.abusive) return;
    state.abusive = true;
    this.#stats.goawaysForAbuse += 1;
    this.#log.warn(
      { peer: String(state.peer.id), connection: state.connection },
      `HBONE peer abusive (${why}); GOAWAY`,
    );
    this.#refuse('BAD_REQUEST', `GOAWAY ENHANCE_YOUR_CALM: ${why}`, state.connection);
    try {
      session.goaway(h2c.NGHTTP2_ENHANCE_YOUR_CALM);
    } catch {
      // already closing
    }
    // Let the GOAWAY frame reach the wire, then drop everything this peer holds.
    setImmediate(() => session.destroy());
  }

  async #onStream(
    state: SessionState,
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
  ): Promise<void> {
    stream.on('error', () => {});
    // A peer that closes the stream while we still send (RST_STREAM with NO_ERROR: what node's
    // stream.destroy() sends) leaves node waiting for our writes to finish, and they never will:
    // no window update comes for a closed stream. The stream, its upstream connection and its
    // slot then stayed open until the whole HBONE connection ended.
    stream.once('aborted', () => stream.destroy());
    state.streams += 1;
    this.#armIdle(state);
    let answered = false;
    const openedAt = Date.now();
    const controller = new AbortController();
    stream.once('close', () => {
      state.streams -= 1;
      this.#armIdle(state);
      if (!answered) controller.abort();
      // Rapid reset (CVE-2023-44487): streams the peer cancels before or right after our answer
      // cost us a handler run and an upstream connect each, and cost the peer nothing.
      const peerReset =
        !answered ||
        (stream.rstCode !== undefined &&
          stream.rstCode !== h2c.NGHTTP2_NO_ERROR &&
          !wasResetLocally(stream) &&
          Date.now() - openedAt < 1000);
      if (peerReset) {
        this.#rollWindow(state);
        state.earlyResets += 1;
        if (state.earlyResets > this.#limits.maxEarlyResetsPerSecond) {
          this.#goawayForAbuse(
            state,
            `more than ${this.#limits.maxEarlyResetsPerSecond} streams reset before an answer per second (rapid reset)`,
          );
        }
      }
    });

    let request: HboneRequest;
    try {
      request = this.#buildRequest(state, headers, controller.signal);
    } catch (err) {
      answered = true;
      const message = err instanceof Error ? err.message : String(err);
      this.#refuse('BAD_REQUEST', message, state.connection);
      respondRefusal(stream, 400, 'bad_request');
      return;
    }

    // Yield once so frames already read in the same batch are processed first: a stream that was
    // opened and reset back to back (rapid reset) is then already closed and costs no handler run.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (stream.destroyed || stream.closed || state.session.destroyed) return;

    let response: HboneResponse;
    try {
      response = await this.#opts.handler(request);
    } catch (err) {
      this.#log.error({ err, authority: request.authority }, 'HBONE handler threw; answering 503');
      response = { status: 503, reason: 'handler_error' };
    }
    // The client may have cancelled while the handler ran; responding now would throw.
    if (stream.destroyed || stream.closed || state.session.destroyed) {
      if (response.status === 200 && 'upstream' in response) resetStream(response.upstream);
      return;
    }
    answered = true;
    if (response.status !== 200) {
      this.#refuse(
        response.status === 401 ? 'DENY' : response.status === 400 ? 'BAD_REQUEST' : 'NO_HEALTHY_UPSTREAM',
        `answered ${response.status}`,
        state.connection,
      );
      respondRefusal(stream, response.status, response.reason);
      return;
    }
    if ('serve' in response) {
      try {
        stream.respond({ ':status': 200 });
      } catch {
        return;
      }
      response.serve(stream);
      return;
    }
    const { upstream } = response;
    upstream.on('error', () => {});
    try {
      stream.respond({ ':status': 200 });
    } catch {
      resetStream(upstream);
      return;
    }
    if (streamOpenChannel.hasSubscribers) streamOpenChannel.publish({ request });
    const result = await copyBidirectional(stream, upstream, { counters: request.counters });
    if (streamCloseChannel.hasSubscribers) streamCloseChannel.publish({ request, result });
    response.onDone?.(result);
  }

  #buildRequest(state: SessionState, headers: IncomingHttpHeaders, signal: AbortSignal): HboneRequest {
    const method = headers[':method'];
    if (method !== 'CONNECT') {
      throw new HboneError(
        'BAD_REQUEST',
        `method ${String(method)} is not allowed: HBONE accepts only CONNECT`,
      );
    }
    for (const name of FORBIDDEN_CONNECT_PSEUDO) {
      if (headers[name] !== undefined) {
        throw new HboneError('BAD_REQUEST', `CONNECT must not carry ${name} (RFC 9113 section 8.5)`);
      }
    }
    const authority = parseAuthority(single(headers, ':authority'));
    const plain: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) {
      if (name.startsWith(':') || value === undefined) continue;
      if (Array.isArray(value)) {
        if (name === 'forwarded' || name === 'baggage' || name === 'traceparent') {
          throw new HboneError('BAD_REQUEST', `header ${name} appears more than once`);
        }
        plain[name] = value.join(', ');
      } else {
        plain[name] = value;
      }
    }
    const req: {
      -readonly [K in keyof HboneRequest]: HboneRequest[K];
    } = {
      authority,
      peer: state.peer.id,
      peerCertificate: state.peer,
      certificate: state.certificate,
      connection: state.connection,
      headers: plain,
      counters: createByteCounters(),
      signal,
    };
    if (plain.forwarded !== undefined) req.forwardedFor = parseForwarded(plain.forwarded);
    if (plain.baggage !== undefined) req.baggage = parseBaggage(plain.baggage);
    if (plain.traceparent !== undefined) req.traceparent = parseTraceParent(plain.traceparent);
    return req;
  }
}

function single(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v)) throw new HboneError('BAD_REQUEST', `${name} appears more than once`);
  return v;
}

function respondRefusal(stream: ServerHttp2Stream, status: number, reason?: string): void {
  try {
    const headers: Record<string, string | number> = { ':status': status };
    if (reason !== undefined && /^[a-z0-9_]{1,64}$/.test(reason)) headers[HBONE_REASON_HEADER] = reason;
    stream.respond(headers, { endStream: true });
  } catch {
    stream.close(h2c.NGHTTP2_REFUSED_STREAM);
  }
}

/** A live TCP connection is unique by its 4-tuple; the TLSSocket reports the same tuple as the raw socket. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}>${socket.localAddress}:${socket.localPort}`;
}

function closedPromise(session: ServerHttp2Session): Promise<void> {
  if (session.destroyed) return Promise.resolve();
  return new Promise((resolve) => session.once('close', () => resolve()));
}

export function createHboneServer(opts: HboneServerOptions): HboneServer {
  return new HboneServer(opts);
}

// Re-exported for callers that only need the X509 type when implementing isRevoked.
export type { X509Certificate };
