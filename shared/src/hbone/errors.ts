// One error class for every HBONE failure, client or server side. `code` is stable (tests, metrics,
// logs key on it); `responseFlag` is what the agent writes into the `response_flags` metric label.
// The table below is the only place that mapping lives.

export const HBONE_ERROR_CODES = [
  /** TCP connect to the peer's HBONE port failed (refused, unreachable, reset). */
  'CONNECT',
  /** TCP connect did not finish in time. */
  'CONNECT_TIMEOUT',
  /** TLS handshake failed: bad chain, expired, other root, missing client certificate, not TLS 1.3. */
  'TLS_FAILURE',
  /** TLS did not complete within the handshake timeout. */
  'TLS_TIMEOUT',
  /** TLS worked but HTTP/2 did not start (no ALPN h2, no SETTINGS, peer closed). */
  'H2_HANDSHAKE_FAILURE',
  /** The peer's certificate carries no valid SPIFFE URI SAN, or not one we expected. */
  'IDENTITY_ERROR',
  /** 401: the receiver's policy denied the connection. */
  'DENY',
  /** 400: the receiver refused the request as malformed (authority, headers, method). */
  'BAD_REQUEST',
  /** 503: the receiver knows no healthy workload for the authority. */
  'NO_HEALTHY_UPSTREAM',
  /** 503: the receiver could not connect to the destination workload. */
  'UPSTREAM_CONNECT_FAILURE',
  /** Any other non-200 status. */
  'UNEXPECTED_STATUS',
  /** No response to CONNECT within the request timeout. */
  'REQUEST_TIMEOUT',
  /** The HTTP/2 connection failed its PING liveness check. */
  'PING_TIMEOUT',
  /** The stream was reset, or the connection carrying it went away. */
  'STREAM_RESET',
  /** The pool or server was closed. */
  'CLOSED',
  /** The caller passed an unusable argument (address, identity list, header). */
  'INVALID_ARGUMENT',
] as const;

export type HboneErrorCode = (typeof HBONE_ERROR_CODES)[number];

/** Metric `response_flags` per error code (ztunnel reports connection failures as CONNECT). */
export const HBONE_RESPONSE_FLAGS: Readonly<Record<HboneErrorCode, string>> = {
  CONNECT: 'CONNECT',
  CONNECT_TIMEOUT: 'CONNECT',
  TLS_FAILURE: 'TLS_FAILURE',
  TLS_TIMEOUT: 'TLS_FAILURE',
  H2_HANDSHAKE_FAILURE: 'H2_HANDSHAKE_FAILURE',
  IDENTITY_ERROR: 'IDENTITY_ERROR',
  DENY: 'DENY',
  BAD_REQUEST: 'BAD_REQUEST',
  NO_HEALTHY_UPSTREAM: 'NO_HEALTHY_UPSTREAM',
  UPSTREAM_CONNECT_FAILURE: 'UPSTREAM_CONNECT_FAILURE',
  UNEXPECTED_STATUS: 'CONNECT',
  REQUEST_TIMEOUT: 'TIMEOUT',
  PING_TIMEOUT: 'TIMEOUT',
  STREAM_RESET: 'STREAM_RESET',
  CLOSED: 'CONNECT',
  INVALID_ARGUMENT: 'CONNECT',
};

export interface HboneErrorDetails {
  /** HTTP status the peer answered with, for status-derived codes. */
  status?: number;
  /** Short reason token the peer sent (`x-hypha-reason`), if any. */
  reason?: string;
  cause?: unknown;
}

export class HboneError extends Error {
  readonly code: HboneErrorCode;
  readonly status: number | undefined;
  readonly reason: string | undefined;

  constructor(code: HboneErrorCode, message: string, details: HboneErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'HboneError';
    this.code = code;
    this.status = details.status;
    this.reason = details.reason;
  }

  get responseFlag(): string {
    return HBONE_RESPONSE_FLAGS[this.code];
  }
}

export function isHboneError(err: unknown, code?: HboneErrorCode): err is HboneError {
  return err instanceof HboneError && (code === undefined || err.code === code);
}

/** Reason tokens the server may send in `x-hypha-reason` next to a non-200 status. */
export const HBONE_REASON_HEADER = 'x-hypha-reason';

/** Maps a CONNECT response status (and optional reason token) to an error code. */
export function codeForStatus(status: number, reason?: string): HboneErrorCode {
  switch (status) {
    case 400:
      return 'BAD_REQUEST';
    case 401:
    case 403:
      return 'DENY';
    case 503:
      return reason === 'upstream_connect_failure' ? 'UPSTREAM_CONNECT_FAILURE' : 'NO_HEALTHY_UPSTREAM';
    default:
      return 'UNEXPECTED_STATUS';
  }
}
