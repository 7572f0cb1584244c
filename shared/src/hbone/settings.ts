// HTTP/2 and TLS settings shared by the HBONE server and client, in one place so both ends agree.
//
// Why these windows: node:http2 defaults to 64 KiB stream and connection windows, which caps a
// single tunnel at roughly one window per round trip. Bigger windows let one stream fill a fast
// link, but not too big: node:http2 stops reading its socket while one of its writes is pending.
// When both ends carry bulk data and both kernels' buffers fill (packet loss shrinks TCP's
// windows), each end waits for the other to read and neither does: the connection deadlocks until
// PING declares it dead. Windows at 4/16 MiB let each end queue more than the two kernels' buffers
// hold; 1 MiB per stream and 2 MiB per connection keep what is unconsumed within them (seen on the
// namespace cluster: 4 transfers of 8 MiB each way under 1-3% loss deadlocked at 4/16 MiB, passed at
// 1/2 MiB; test/e2e/chaos-network.test.ts) and cost no single-stream throughput here (`npm run
// bench -- hbone --quick`: 4.9 Gbit/s vs 4.6 at 4/16 MiB, same run conditions). Windows only bound
// what the peer may send before we read; memory stays bounded because a stream whose reader is slow
// stops acknowledging (no WINDOW_UPDATE) once its Readable buffer is full.

import type { ServerSessionOptions, SessionOptions, Settings } from 'node:http2';
import type { Socket } from 'node:net';
import type { SecureContextOptions } from 'node:tls';

/**
 * Sets socket options on an HBONE TCP socket (both ends) before TLS starts. Windows alone do not
 * rule the deadlock above out: under loss the kernel keeps its send buffer small (autotuning
 * follows the congestion window: ~420 KB seen while stuck, Recv-Q unread on both ends), below what
 * a 2 MiB window lets the peer queue. A send buffer that holds the whole connection window means
 * our writes always complete, so we always read again: the agent sets one through its native
 * addon (SO_SNDBUFFORCE). Must not throw.
 */
export type HboneSocketTuner = (socket: Socket) => void;

/** The send buffer (payload bytes; the kernel reserves twice) that holds a full connection window. */
export function hboneSendBufferBytes(
  flow: Pick<FlowControlOptions, 'connectionWindow'> = DEFAULT_FLOW_CONTROL,
): number {
  return 2 * flow.connectionWindow;
}

export const HBONE_PORT = 15008;
export const HBONE_ALPN = 'h2';
const MiB = 1024 * 1024;

export interface FlowControlOptions {
  /** SETTINGS_INITIAL_WINDOW_SIZE: bytes a peer may send on one stream before a WINDOW_UPDATE. */
  streamWindow: number;
  /** Connection-level receive window, raised with `session.setLocalWindowSize` after connect. */
  connectionWindow: number;
  /** SETTINGS_MAX_FRAME_SIZE we accept; bigger frames mean fewer frame callbacks per byte. */
  maxFrameSize: number;
}

export const DEFAULT_FLOW_CONTROL: Readonly<FlowControlOptions> = {
  streamWindow: MiB,
  connectionWindow: 2 * MiB,
  // The peer may send DATA frames up to 64 KiB: fewer frames per byte (measured ~8-13% less CPU
  // per GiB than 16 KiB on loopback; see docs/hbone.md).
  maxFrameSize: 64 * 1024,
};

/** The node:http2 defaults, for measuring what the larger windows buy (see docs/hbone.md). */
export const NODE_DEFAULT_FLOW_CONTROL: Readonly<FlowControlOptions> = {
  streamWindow: 65_535,
  connectionWindow: 65_535,
  maxFrameSize: 16 * 1024,
};

export interface HboneLimits {
  /** TLS handshake must finish within this (slowloris defence). */
  handshakeTimeoutMs: number;
  /** After TLS, the peer's HTTP/2 SETTINGS must arrive within this. */
  settingsTimeoutMs: number;
  /** A connection with no streams for this long is closed with GOAWAY. */
  idleTimeoutMs: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised and enforced. */
  maxHeaderListSize: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised by the server. */
  maxConcurrentStreams: number;
  /** Streams the peer may reset before we answered, per second, before it gets GOAWAY (rapid reset). */
  maxEarlyResetsPerSecond: number;
  /** SETTINGS + PING frames a peer may send per second before it gets GOAWAY. */
  maxControlFramesPerSecond: number;
  /** Sockets allowed in the TLS handshake at once; more are closed at once. */
  maxPendingHandshakes: number;
  /** Interval of our own liveness PINGs, and how long one may stay unanswered. */
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export const DEFAULT_SERVER_LIMITS: Readonly<HboneLimits> = {
  handshakeTimeoutMs: 10_000,
  settingsTimeoutMs: 10_000,
  idleTimeoutMs: 10 * 60_000,
  maxHeaderListSize: 64 * 1024,
  maxConcurrentStreams: 200,
  maxEarlyResetsPerSecond: 200,
  maxControlFramesPerSecond: 200,
  maxPendingHandshakes: 1024,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
};

/** Memory node:http2 may hold per session (MB): room for a full connection window both ways. */
export function sessionMemoryMb(flow: FlowControlOptions): number {
  return Math.max(10, Math.ceil((2 * flow.connectionWindow) / MiB) + 8);
}

export function h2Settings(
  flow: FlowControlOptions,
  limits: Pick<HboneLimits, 'maxHeaderListSize'>,
  maxConcurrentStreams?: number,
): Settings {
  const settings: Settings = {
    enablePush: false,
    initialWindowSize: flow.streamWindow,
    maxFrameSize: flow.maxFrameSize,
    maxHeaderListSize: limits.maxHeaderListSize,
  };
  if (maxConcurrentStreams !== undefined) settings.maxConcurrentStreams = maxConcurrentStreams;
  return settings;
}

export function clientSessionOptions(
  flow: FlowControlOptions,
  limits: Pick<HboneLimits, 'maxHeaderListSize'>,
): SessionOptions {
  return {
    settings: h2Settings(flow, limits),
    maxSessionMemory: sessionMemoryMb(flow),
    maxHeaderListPairs: 128,
    maxSettings: 32,
    maxOutstandingPings: 4,
  };
}

export function serverSessionOptions(flow: FlowControlOptions, limits: HboneLimits): ServerSessionOptions {
  return {
    settings: h2Settings(flow, limits, limits.maxConcurrentStreams),
    maxSessionMemory: sessionMemoryMb(flow),
    maxHeaderListPairs: 128,
    maxSettings: 32,
    maxOutstandingPings: 4,
    // nghttp2's own rapid-reset limiter (token bucket of RST_STREAMs); ours in server.ts is stricter.
    streamResetBurst: 1000,
    streamResetRate: 33,
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
    unknownProtocolTimeout: 1000,
  };
}

/**
 * TLS 1.3 only; ECDSA P-256 keys. Shared by both ends. AES-128-GCM is listed first (OpenSSL
 * prefers AES-256-GCM): with AES-NI it costs noticeably less CPU per byte, and the tunnel is
 * CPU-bound; the others stay for peers (ztunnel/rustls) that only offer them.
 */
export const TLS_BASE: Readonly<SecureContextOptions> = {
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
};
