// Public surface of @hypha/shared/identity: name every export (no `export *`).
export type {
  CaInitOptions,
  CaLoadOptions,
  CaOptions,
  IssuedCertificate,
  IssueOptions,
  VerifiedCsr,
  WorkloadCertificate,
} from './ca.js';
export {
  CA_FILES,
  CertificateAuthority,
  CLOCK_SKEW_BACKDATE_MS,
  DEFAULT_CERT_TTL_SECONDS,
  DEFAULT_MAX_CERT_TTL_SECONDS,
} from './ca.js';
export type { CaClientErrorCode, CaClientOptions, RevocationSnapshot } from './ca-client.js';
export { CaClient, CaClientError } from './ca-client.js';
export type {
  CertificateProvider,
  CertificateState,
  CertificateStatus,
  CertManagerClock,
  CertManagerErrorCode,
  CertManagerOptions,
  RenewalFailure,
} from './cert-manager.js';
export { CertManager, CertManagerError, systemClock } from './cert-manager.js';
export type { ChainVerification } from './certificate.js';
export {
  derToPem,
  identityFromCertificate,
  joinPem,
  normalizeSerial,
  splitPemCertificates,
  verifyChain,
} from './certificate.js';
export type { CaErrorCode } from './errors.js';
export { CaError, IdentityError } from './errors.js';
export type { KeyPair } from './keys.js';
export { createCsr, generateKeyPair } from './keys.js';
export { DEFAULT_TRUST_DOMAIN, parseSpiffeId, SpiffeId, SpiffeIdError, tryParseSpiffeId } from './spiffe.js';
