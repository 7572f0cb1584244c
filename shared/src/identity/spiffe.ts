// Workload identity as a SPIFFE ID in Istio's shape: spiffe://<trust-domain>/ns/<namespace>/sa/<sa>.
//
// Invariant: a SpiffeId value is always valid. Every string that comes from outside (certificates,
// CSRs, flags, policy principals) goes through parseSpiffeId, which says precisely what is wrong,
// so the rest of the code compares ids with `equals`/`toString()` and never re-validates.

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
// Kubernetes namespace names are DNS-1123 labels; service-account names are DNS-1123 subdomains.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const MAX_URI_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export class SpiffeIdError extends Error {
  readonly code = 'INVALID_SPIFFE_ID' as const;
  readonly input: string;
  constructor(input: string, reason: string) {
    super(`invalid SPIFFE ID ${JSON.stringify(truncate(input))}: ${reason}`);
    this.name = 'SpiffeIdError';
    this.input = input;
  }
}

export class SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly #uri: string;

  private constructor(trustDomain: string, namespace: string, serviceAccount: string) {
    this.trustDomain = trustDomain;
    this.namespace = namespace;
    this.serviceAccount = serviceAccount;
    this.#uri = `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  }

  /** Builds an id from parts, validating each one. */
  static of(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
    return parseSpiffeId(`spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
  }

  /** @internal used by the parser once every part has been validated. */
  static fromValidatedParts(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
    return new SpiffeId(trustDomain, namespace, serviceAccount);
  }

  /** The full URI, as it appears in a certificate's URI SAN. */
  toString(): string {
    return this.#uri;
  }

  toJSON(): string {
    return this.#uri;
  }

  /** Istio-style principal: the URI without its scheme, e.g. `cluster.local/ns/shop/sa/web`. */
  get principal(): string {
    return this.#uri.slice('spiffe://'.length);
  }

  equals(other: SpiffeId): boolean {
    return this.#uri === other.#uri;
  }
}

/** Parses and validates `spiffe://<td>/ns/<ns>/sa/<sa>`; throws SpiffeIdError with the reason. */
export function parseSpiffeId(input: string): SpiffeId {
  const fail = (reason: string): never => {
    throw new SpiffeIdError(input, reason);
  };
  if (typeof input !== 'string') fail('not a string');
  if (input.length === 0) fail('empty');
  if (input.length > MAX_URI_LENGTH) fail(`longer than ${MAX_URI_LENGTH} characters`);
  const schemeEnd = input.indexOf('://');
  if (schemeEnd < 0) fail('missing "spiffe://" scheme');
  const scheme = input.slice(0, schemeEnd);
  if (scheme !== 'spiffe') fail(`scheme must be "spiffe" (lowercase), got "${scheme}"`);
  const rest = input.slice(schemeEnd + 3);
  if (/[?#]/.test(rest)) fail('query and fragment are not allowed');
  if (rest.includes('@')) fail('user info is not allowed');
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (trustDomain.length === 0) fail('trust domain is empty');
  if (trustDomain.includes(':')) fail('port is not allowed in the trust domain');
  if (trustDomain.length > MAX_TRUST_DOMAIN_LENGTH)
    fail(`trust domain longer than ${MAX_TRUST_DOMAIN_LENGTH}`);
  if (!TRUST_DOMAIN.test(trustDomain)) {
    fail(`trust domain "${trustDomain}" may contain only lowercase letters, digits, ".", "-" and "_"`);
  }
  if (slash < 0) fail('path is missing: expected /ns/<namespace>/sa/<service-account>');
  const path = rest.slice(slash);
  const segments = path.slice(1).split('/');
  for (const seg of segments) {
    if (seg.length === 0) fail('path has an empty segment (double or trailing "/")');
    if (seg === '.' || seg === '..') fail('path segments "." and ".." are not allowed');
    if (!/^[A-Za-z0-9._-]+$/.test(seg))
      fail(`path segment "${truncate(seg)}" has a character outside [A-Za-z0-9._-]`);
  }
  if (segments.length !== 4 || segments[0] !== 'ns' || segments[2] !== 'sa') {
    fail(`path must be /ns/<namespace>/sa/<service-account>, got "${truncate(path)}"`);
  }
  const namespace = segments[1]!;
  const serviceAccount = segments[3]!;
  if (namespace.length > 63 || !DNS_LABEL.test(namespace)) {
    fail(`namespace "${truncate(namespace)}" is not a valid Kubernetes namespace name (DNS-1123 label)`);
  }
  if (serviceAccount.length > 253 || !DNS_SUBDOMAIN.test(serviceAccount)) {
    fail(`service account "${truncate(serviceAccount)}" is not a valid Kubernetes name (DNS-1123 subdomain)`);
  }
  return SpiffeId.fromValidatedParts(trustDomain, namespace, serviceAccount);
}

/** Like parseSpiffeId but returns undefined instead of throwing (for untrusted peers on hot paths). */
export function tryParseSpiffeId(input: string): SpiffeId | undefined {
  try {
    return parseSpiffeId(input);
  } catch {
    return undefined;
  }
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
