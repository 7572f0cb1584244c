// Reading identities out of certificates and verifying chains against a trust bundle.
//
// Invariants:
// - A workload certificate names exactly one URI SAN, and it is a valid SPIFFE id (X509-SVID rule).
//   Other SAN types are ignored here (the CA's own serving certificate also carries DNS/IP names);
//   the CA never puts them into workload certificates.
// - verifyChain is synchronous (node:crypto), so it can run inside a TLS handshake callback.
//   It walks the chain in the order given (leaf first), and stops at the first certificate that is
//   either in the trust bundle or signed by a root in it.
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { DerError } from './der.js';
import { IdentityError } from './errors.js';
import { certificateFields } from './pkix.js';
import { parseSpiffeId, type SpiffeId, SpiffeIdError } from './spiffe.js';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\r\n]+([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----/g;
const MAX_CHAIN_LENGTH = 8;

/** Splits concatenated PEM into the DER of each CERTIFICATE block (other block types are skipped). */
export function splitPemCertificates(pem: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of pem.matchAll(PEM_CERT)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}

/** DER → PEM with a trailing newline, so PEMs concatenate cleanly. */
export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Joins PEM blocks with exactly one newline between them and one at the end. */
export function joinPem(blocks: readonly string[]): string {
  return blocks
    .map((b) => b.trim())
    .filter((b) => b.length > 0)
    .map((b) => `${b}\n`)
    .join('');
}

/** Serial numbers compare as lowercase hex without leading zeros (Node prints uppercase, some tools pad). */
export function normalizeSerial(serial: string): string {
  const s = serial.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '');
  if (!/^[0-9a-f]+$/.test(s)) throw new Error(`serial ${JSON.stringify(serial)} is not hexadecimal`);
  const stripped = s.replace(/^0+/, '');
  return stripped.length === 0 ? '0' : stripped;
}

/**
 * The SPIFFE id of a workload certificate: exactly one URI SAN, a valid SPIFFE id.
 * Throws IdentityError saying what is wrong otherwise.
 */
export function identityFromCertificate(cert: NodeX509Certificate | Uint8Array): SpiffeId {
  const der = cert instanceof NodeX509Certificate ? cert.raw : cert;
  let fields: ReturnType<typeof certificateFields>;
  try {
    fields = certificateFields(der);
  } catch (err) {
    const what = err instanceof DerError ? err.message : String(err);
    throw new IdentityError(`certificate is not valid DER X.509: ${what}`, { cause: err });
  }
  if (fields.sanExtensionCount === 0) {
    throw new IdentityError('certificate has no subjectAltName: expected one spiffe:// URI');
  }
  if (fields.sanExtensionCount > 1)
    throw new IdentityError('certificate has more than one subjectAltName extension');
  const uris = (fields.sans ?? []).filter((n) => n.kind === 'URI').map((n) => n.value);
  if (uris.length === 0) throw new IdentityError('certificate has no URI SAN: expected one spiffe:// URI');
  if (uris.length > 1) {
    throw new IdentityError(
      `certificate has ${uris.length} URI SANs (${uris.join(', ')}): expected exactly one`,
    );
  }
  try {
    return parseSpiffeId(uris[0]!);
  } catch (err) {
    if (err instanceof SpiffeIdError)
      throw new IdentityError(`certificate URI SAN: ${err.message}`, { cause: err });
    throw err;
  }
}

export type ChainVerification = { ok: true; id: SpiffeId } | { ok: false; reason: string };

/**
 * Verifies a leaf-first chain against a bundle of roots at time `at` (default now) and returns the
 * leaf's identity. Checks signatures, issuer names, validity periods and the CA flag of every
 * issuer. Does not check revocation (see the CA's revocation list) nor name constraints.
 */
export function verifyChain(
  certChainPem: string,
  trustBundlePem: string,
  at: Date = new Date(),
): ChainVerification {
  let chain: NodeX509Certificate[];
  let roots: NodeX509Certificate[];
  try {
    chain = splitPemCertificates(certChainPem).map((d) => new NodeX509Certificate(d));
  } catch (err) {
    return { ok: false, reason: `certificate chain is not valid PEM: ${(err as Error).message}` };
  }
  try {
    roots = splitPemCertificates(trustBundlePem).map((d) => new NodeX509Certificate(d));
  } catch (err) {
    return { ok: false, reason: `trust bundle is not valid PEM: ${(err as Error).message}` };
  }
  if (chain.length === 0) return { ok: false, reason: 'certificate chain holds no PEM CERTIFICATE block' };
  if (roots.length === 0) return { ok: false, reason: 'trust bundle holds no PEM CERTIFICATE block' };
  const leaf = chain[0]!;
  if (leaf.ca)
    return { ok: false, reason: 'leaf certificate is a CA certificate, not a workload certificate' };
  let id: SpiffeId;
  try {
    id = identityFromCertificate(leaf);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  const reason = walkToRoot(chain, roots, at);
  return reason === undefined ? { ok: true, id } : { ok: false, reason };
}

/** @internal Returns undefined when chain[0] leads to one of `roots`, else the reason it does not. */
export function walkToRoot(
  chain: readonly NodeX509Certificate[],
  roots: readonly NodeX509Certificate[],
  at: Date,
): string | undefined {
  const rootPrints = new Set(roots.map((r) => r.fingerprint256));
  let current = chain[0]!;
  for (let depth = 0; depth < MAX_CHAIN_LENGTH; depth++) {
    const validity = checkValidity(current, at, depth);
    if (validity) return validity;
    if (rootPrints.has(current.fingerprint256)) return undefined;
    const next = chain[depth + 1];
    if (next && current.checkIssued(next) && safeVerify(current, next)) {
      if (!next.ca)
        return `certificate #${depth + 1} in the chain signed #${depth} but is not a CA certificate`;
      current = next;
      continue;
    }
    for (const root of roots) {
      if (current.checkIssued(root) && safeVerify(current, root)) {
        if (!root.ca) return `root ${describe(root)} is not a CA certificate`;
        return checkValidity(root, at, depth + 1);
      }
    }
    return depth === 0 && !next
      ? `certificate issued by "${oneLine(current.issuer)}" does not chain to any root in the trust bundle`
      : `chain breaks at certificate #${depth} (${describe(current)}): its issuer is neither the next certificate nor a root in the trust bundle`;
  }
  return `chain longer than ${MAX_CHAIN_LENGTH} certificates`;
}

function checkValidity(cert: NodeX509Certificate, at: Date, depth: number): string | undefined {
  if (at < cert.validFromDate) {
    return `certificate #${depth} (${describe(cert)}) is not valid before ${cert.validFromDate.toISOString()}`;
  }
  if (at > cert.validToDate) {
    return `certificate #${depth} (${describe(cert)}) expired at ${cert.validToDate.toISOString()}`;
  }
  return undefined;
}

function safeVerify(cert: NodeX509Certificate, issuer: NodeX509Certificate): boolean {
  try {
    return cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function describe(cert: NodeX509Certificate): string {
  const subject = oneLine(cert.subject);
  if (subject) return `subject "${subject}"`;
  // Workload certificates have an empty subject: name them by their SAN.
  return cert.subjectAltName ? cert.subjectAltName : `serial ${normalizeSerial(cert.serialNumber)}`;
}

function oneLine(name: string | undefined): string {
  return (name ?? '').split('\n').filter(Boolean).join(', ');
}
