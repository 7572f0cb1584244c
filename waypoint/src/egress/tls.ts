// TLS origination settings (TrafficPolicy `tls`) made usable: the CA bundle (inline PEM and/or a
// file) and, for MUTUAL, the client certificate from a kubernetes.io/tls Secret, in one
// SecureContext per policy version; per host, the SNI and the names the server must prove.
//
// Invariants:
// - Never falls back to plain text or to unverified TLS: settings that cannot be used (a missing
//   file or Secret, a PEM that does not parse) become `error`, and every connection under them
//   fails with that reason (503 UF).
// - Made once per TrafficPolicy object and Secret content (a Secret's new certificate makes a new
//   context, with a new id, so pooled connections made with the old one are not reused).
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { UpstreamTlsSpec } from '../traffic/policy.js';
import type { UpstreamTls } from '../upstream.js';

export interface TlsSecretInput {
  namespace: string;
  name: string;
  /** PEM `tls.crt`. */
  certificate: string;
  /** PEM `tls.key`. */
  privateKey: string;
}

/** One policy's TLS settings, resolved: the per-host views are made on first use. */
export interface EgressTls {
  readonly policy: string;
  readonly spec: UpstreamTlsSpec;
  readonly context: SecureContext | undefined;
  readonly error: string | undefined;
  readonly byHost: Map<string, UpstreamTls>;
}

let nextId = 1;
const resolved = new WeakMap<UpstreamTlsSpec, { secret: TlsSecretInput | undefined; tls: EgressTls }>();

/**
 * The usable form of a policy's `tls` (`policy` is `namespace/name`); `findSecret` looks up the
 * kubernetes.io/tls Secret `credentialName` names in the policy's namespace.
 */
export function resolveEgressTls(
  policy: string,
  spec: UpstreamTlsSpec,
  findSecret: (namespace: string, name: string) => TlsSecretInput | undefined,
): EgressTls {
  const namespace = policy.split('/')[0] ?? '';
  const secret = spec.credentialName === undefined ? undefined : findSecret(namespace, spec.credentialName);
  const hit = resolved.get(spec);
  if (hit !== undefined && sameSecret(hit.secret, secret)) return hit.tls;
  const tls = build(policy, namespace, spec, secret);
  resolved.set(spec, { secret, tls });
  return tls;
}

function sameSecret(a: TlsSecretInput | undefined, b: TlsSecretInput | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.certificate === b.certificate && a.privateKey === b.privateKey;
}

function build(
  policy: string,
  namespace: string,
  spec: UpstreamTlsSpec,
  secret: TlsSecretInput | undefined,
): EgressTls {
  const fail = (error: string): EgressTls => ({
    policy,
    spec,
    context: undefined,
    error: `TrafficPolicy ${policy} tls: ${error}`,
    byHost: new Map(),
  });
  const ca: string[] = [];
  if (spec.caCertificatesPem !== undefined) ca.push(spec.caCertificatesPem);
  if (spec.caCertificates !== undefined) {
    try {
      ca.push(readFileSync(spec.caCertificates, 'utf8'));
    } catch (err) {
      return fail(
        `cannot read caCertificates ${spec.caCertificates}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  }
  if (spec.mode === 'MUTUAL' && secret === undefined)
    return fail(`credentialName: no kubernetes.io/tls Secret ${namespace}/${spec.credentialName}`);
  let context: SecureContext;
  try {
    context = createSecureContext({
      ca,
      ...(secret !== undefined ? { cert: secret.certificate, key: secret.privateKey } : {}),
    });
  } catch (err) {
    const what =
      secret !== undefined ? `the CA bundle or Secret ${namespace}/${spec.credentialName}` : 'the CA bundle';
    return fail(`${what} is not usable PEM: ${(err as Error).message}`);
  }
  return { policy, spec, context, error: undefined, byHost: new Map() };
}

/** The settings for connections to `host` (the SNI unless `tls.sni` names one). */
export function upstreamTlsFor(tls: EgressTls, host: string): UpstreamTls {
  let u = tls.byHost.get(host);
  if (u === undefined) {
    u = {
      id: nextId++,
      servername: tls.spec.sni ?? host,
      subjectAltNames: tls.spec.subjectAltNames,
      context: tls.context,
      error: tls.error,
    };
    // Bounded by the hosts of the entries the policy targets.
    tls.byHost.set(host, u);
  }
  return u;
}
