// Error types of the identity area. Each carries a stable `code` (for metrics and for callers that
// branch on it) and a message that says what to check.

/** A certificate does not carry a usable workload identity (exactly one SPIFFE URI SAN). */
export class IdentityError extends Error {
  readonly code = 'IDENTITY_ERROR' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'IdentityError';
  }
}

export type CaErrorCode =
  /** The CSR is not parseable PEM/DER PKCS#10. */
  | 'CSR_MALFORMED'
  /** The CSR's self-signature does not verify (tampered or built with another key). */
  | 'CSR_BAD_SIGNATURE'
  /** The CSR asks for something the CA never signs: DNS/IP/email SANs, several URIs, no SPIFFE id. */
  | 'CSR_SAN_REJECTED'
  /** The CSR's key type or size is not accepted. */
  | 'CSR_KEY_REJECTED'
  /** The requested SPIFFE id belongs to another trust domain. */
  | 'TRUST_DOMAIN_MISMATCH'
  /** The requested SPIFFE id differs from the one the caller was expected to ask for. */
  | 'IDENTITY_MISMATCH'
  /** The requested TTL is not a positive number of seconds. */
  | 'TTL_INVALID'
  /** CA files are missing, unreadable or inconsistent. */
  | 'CA_LOAD_FAILED'
  /** `init`/`save` would overwrite an existing CA. */
  | 'CA_EXISTS'
  /** Anything else about the CA's own material (expired CA cert, not a CA, ...). */
  | 'CA_INVALID';

/** Errors of the certificate authority. CSR_* / TRUST_DOMAIN_MISMATCH / IDENTITY_MISMATCH are the caller's fault (HTTP 400). */
export class CaError extends Error {
  readonly code: CaErrorCode;
  constructor(code: CaErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CaError';
    this.code = code;
  }

  /** True when the request was bad (the client should not retry the same CSR). */
  get isClientError(): boolean {
    return (
      this.code.startsWith('CSR_') ||
      this.code === 'TTL_INVALID' ||
      this.code === 'TRUST_DOMAIN_MISMATCH' ||
      this.code === 'IDENTITY_MISMATCH'
    );
  }
}
