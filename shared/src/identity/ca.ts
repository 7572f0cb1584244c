// The certificate authority: holds a signing key and certificate (a self-signed root, or an
// intermediate plugged in through Istio's `cacerts` layout) and turns CSRs into workload
// certificates.
//
// Invariants:
// - A workload certificate carries exactly one SAN: the SPIFFE URI the CSR asked for, which must be
//   in this CA's trust domain. Nothing else from the CSR (subject, other extensions) is copied.
// - The CSR's self-signature is verified before anything in it is believed.
// - certChainPem = leaf, then the CA certificate and its intermediates; roots are never in the chain,
//   they travel in trustBundlePem (which may hold several roots during a rotation).
// - TTLs are clamped to [1 s, maxTtl] and never outlive the CA certificate.
import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  randomBytes,
} from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { derToPem, joinPem, normalizeSerial, splitPemCertificates, walkToRoot } from './certificate.js';
import { DerError } from './der.js';
import { CaError } from './errors.js';
import { createCsr, EC_P256_SIGNING, generateKeyPair } from './keys.js';
import {
  buildLeafCertificate,
  certificateFields,
  type ParsedCsr,
  parseCsrDer,
  parseIp,
  type SignerSpec,
  signerFor,
} from './pkix.js';
import { DEFAULT_TRUST_DOMAIN, parseSpiffeId, type SpiffeId } from './spiffe.js';
import { type WebCrypto, x509 } from './x509.js';

export const DEFAULT_CERT_TTL_SECONDS = 24 * 3600;
export const DEFAULT_MAX_CERT_TTL_SECONDS = 24 * 3600;
export const DEFAULT_ROOT_TTL_DAYS = 3650;
/** Certificates start this far in the past so small clock differences between nodes do not reject them. */
export const CLOCK_SKEW_BACKDATE_MS = 60_000;
const MAX_CSR_PEM_LENGTH = 16 * 1024;

/** File names of Istio's plug-in CA layout, plus our own metadata file. */
export const CA_FILES = {
  caCert: 'ca-cert.pem',
  caKey: 'ca-key.pem',
  rootCert: 'root-cert.pem',
  certChain: 'cert-chain.pem',
  meta: 'hypha-ca.json',
} as const;

export interface IssuedCertificate {
  id: SpiffeId;
  /** Lowercase hex, no leading zeros (see normalizeSerial). */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Leaf first, then intermediates, concatenated PEM. */
  certChainPem: string;
  /** One or more root certificates, concatenated PEM. */
  trustBundlePem: string;
}

export interface WorkloadCertificate extends IssuedCertificate {
  /** PKCS#8 PEM of the private key matching the leaf. */
  keyPem: string;
}

/** A CSR whose signature verified and whose single SPIFFE URI SAN was accepted. */
export interface VerifiedCsr {
  readonly id: SpiffeId;
  /** DER SubjectPublicKeyInfo from the CSR, copied into the certificate as is. */
  readonly spki: Buffer;
  readonly keyKind: 'ec' | 'rsa';
}

export interface CaOptions {
  /** Longest TTL a CSR may obtain; longer requests are clamped. Default 24 h. */
  maxTtlSeconds?: number;
  /** TTL when a request names none. Default 24 h (clamped to maxTtlSeconds). */
  defaultTtlSeconds?: number;
}

export interface CaInitOptions extends CaOptions {
  trustDomain?: string;
  ttlDays?: number;
  commonName?: string;
}

export interface CaLoadOptions extends CaOptions {
  /** Overrides the trust domain in hypha-ca.json (Istio cacerts carry none; default cluster.local). */
  trustDomain?: string;
}

export interface IssueOptions {
  ttlSeconds?: number;
  /** Extra SANs for serving certificates the CA issues to itself (never taken from CSRs). */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
}

interface SigningMaterial {
  key: WebCrypto.CryptoKey;
  keyPem: string;
  algorithm: WebCrypto.EcdsaParams | WebCrypto.RsaHashedImportParams;
  cert: x509.X509Certificate;
  /** CA certificate then its intermediates, roots excluded (empty when the CA is a root). */
  chain: x509.X509Certificate[];
  roots: x509.X509Certificate[];
  authorityKeyId: string;
  /** Hot-path signing: node:crypto key, raw issuer name DER. */
  signer: SignerSpec;
  issuerName: Buffer;
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly maxTtlSeconds: number;
  readonly defaultTtlSeconds: number;
  readonly #m: SigningMaterial;
  readonly #chainPem: string;
  readonly #bundlePem: string;

  private constructor(trustDomain: string, material: SigningMaterial, opts: CaOptions) {
    this.trustDomain = trustDomain;
    this.#m = material;
    this.maxTtlSeconds = positiveSeconds(opts.maxTtlSeconds, DEFAULT_MAX_CERT_TTL_SECONDS, 'maxTtlSeconds');
    this.defaultTtlSeconds = Math.min(
      positiveSeconds(opts.defaultTtlSeconds, DEFAULT_CERT_TTL_SECONDS, 'defaultTtlSeconds'),
      this.maxTtlSeconds,
    );
    this.#chainPem = joinPem(material.chain.map((c) => c.toString('pem')));
    this.#bundlePem = joinPem(material.roots.map((c) => c.toString('pem')));
  }

  /** A new CA with a fresh self-signed ECDSA P-256 root. */
  static async init(opts: CaInitOptions = {}): Promise<CertificateAuthority> {
    const trustDomain = validateTrustDomain(opts.trustDomain ?? DEFAULT_TRUST_DOMAIN);
    const ttlDays = opts.ttlDays ?? DEFAULT_ROOT_TTL_DAYS;
    if (!Number.isFinite(ttlDays) || ttlDays <= 0)
      throw new CaError('CA_INVALID', `ttlDays must be > 0, got ${ttlDays}`);
    const keys = await generateKeyPair();
    const now = Date.now();
    const name = `O=${trustDomain}, CN=${opts.commonName ?? 'Hypha Root CA'}`;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerialHex(),
      name,
      notBefore: new Date(now - CLOCK_SKEW_BACKDATE_MS),
      notAfter: new Date(now + ttlDays * 86_400_000),
      keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
      signingAlgorithm: EC_P256_SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const material = await materialFrom(keys.privateKeyPem, [cert], [cert]);
    return new CertificateAuthority(trustDomain, material, opts);
  }

  /**
   * Loads a CA from a directory in Istio's cacerts layout: ca-cert.pem (signing certificate),
   * ca-key.pem, root-cert.pem (one or more roots), cert-chain.pem (ca-cert and intermediates,
   * optionally ending with the root). Checks that the key matches and the chain reaches a root.
   */
  static async load(dir: string, opts: CaLoadOptions = {}): Promise<CertificateAuthority> {
    const read = async (name: string): Promise<string> => {
      try {
        return await readFile(join(dir, name), 'utf8');
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        const msg =
          e.code === 'ENOENT'
            ? `no CA in ${dir}: ${name} not found (create one with \`hypha ca init --dir ${dir}\`, or plug in Istio cacerts files)`
            : `cannot read ${join(dir, name)}: ${e.message}`;
        throw new CaError('CA_LOAD_FAILED', msg, { cause: err });
      }
    };
    // One file at a time, so a directory missing several files always names the same one first.
    const caCertPem = await read(CA_FILES.caCert);
    const caKeyPem = await read(CA_FILES.caKey);
    const rootPem = await read(CA_FILES.rootCert);
    const chainPem = await readOptional(join(dir, CA_FILES.certChain));
    let trustDomain = opts.trustDomain;
    if (trustDomain === undefined) {
      const meta = await readOptional(join(dir, CA_FILES.meta));
      if (meta !== undefined) {
        try {
          const parsed = JSON.parse(meta) as { trustDomain?: unknown };
          if (typeof parsed.trustDomain === 'string') trustDomain = parsed.trustDomain;
        } catch (err) {
          throw new CaError('CA_LOAD_FAILED', `${join(dir, CA_FILES.meta)} is not valid JSON`, {
            cause: err,
          });
        }
      }
    }
    trustDomain = validateTrustDomain(trustDomain ?? DEFAULT_TRUST_DOMAIN);
    const parse = (pem: string, file: string): x509.X509Certificate[] => {
      try {
        return splitPemCertificates(pem).map((d) => new x509.X509Certificate(d));
      } catch (err) {
        throw new CaError('CA_LOAD_FAILED', `${join(dir, file)}: not valid PEM certificates`, { cause: err });
      }
    };
    const caCerts = parse(caCertPem, CA_FILES.caCert);
    const roots = parse(rootPem, CA_FILES.rootCert);
    const chainCerts = chainPem === undefined ? [] : parse(chainPem, CA_FILES.certChain);
    if (caCerts.length === 0)
      throw new CaError('CA_LOAD_FAILED', `${join(dir, CA_FILES.caCert)} holds no certificate`);
    if (roots.length === 0)
      throw new CaError('CA_LOAD_FAILED', `${join(dir, CA_FILES.rootCert)} holds no certificate`);
    const caCert = caCerts[0]!;
    // cert-chain.pem conventionally starts with ca-cert.pem; tolerate it either way.
    const rest = chainCerts[0]?.equal(caCert) ? chainCerts.slice(1) : chainCerts;
    const material = await materialFrom(caKeyPem, [caCert, ...rest], roots, dir);
    return new CertificateAuthority(trustDomain, material, opts);
  }

  /** Writes the cacerts layout (key mode 0600) and hypha-ca.json. Refuses to overwrite unless told. */
  async save(dir: string, opts: { overwrite?: boolean } = {}): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!opts.overwrite && (await exists(join(dir, CA_FILES.caKey)))) {
      throw new CaError(
        'CA_EXISTS',
        `a CA already exists in ${dir} (${CA_FILES.caKey}); refusing to overwrite it (use --force to replace it)`,
      );
    }
    const m = this.#m;
    await writeAtomic(join(dir, CA_FILES.caKey), m.keyPem, 0o600);
    await writeAtomic(join(dir, CA_FILES.caCert), `${m.cert.toString('pem').trim()}\n`, 0o644);
    // Istio's convention: ca-cert, its intermediates, then the root(s), each once.
    const chainFile = [m.cert, ...m.chain, ...m.roots].filter(
      (c, i, all) => all.findIndex((o) => o.equal(c)) === i,
    );
    await writeAtomic(join(dir, CA_FILES.certChain), joinPem(chainFile.map((c) => c.toString('pem'))), 0o644);
    await writeAtomic(join(dir, CA_FILES.rootCert), this.#bundlePem, 0o644);
    await writeAtomic(
      join(dir, CA_FILES.meta),
      `${JSON.stringify({ trustDomain: this.trustDomain }, null, 2)}\n`,
      0o644,
    );
  }

  /** Root certificates that verify what this CA issues (concatenated PEM). */
  get trustBundlePem(): string {
    return this.#bundlePem;
  }

  /** The CA certificate followed by its intermediates; empty when the CA is a root. */
  get caChainPem(): string {
    return this.#chainPem;
  }

  get caCertificate(): NodeX509Certificate {
    return new NodeX509Certificate(Buffer.from(this.#m.cert.rawData));
  }

  /** True when the signing certificate is itself a root (not a plugged-in intermediate). */
  get isRoot(): boolean {
    return this.#m.roots.some((r) => r.equal(this.#m.cert));
  }

  /**
   * Parses a PEM CSR, verifies its signature and accepts exactly one SPIFFE URI SAN in this trust
   * domain. Throws CaError (a client error) saying what is wrong.
   */
  async verifyCsr(csrPem: string): Promise<VerifiedCsr> {
    if (typeof csrPem !== 'string' || csrPem.length === 0) throw new CaError('CSR_MALFORMED', 'CSR is empty');
    if (csrPem.length > MAX_CSR_PEM_LENGTH) {
      throw new CaError('CSR_MALFORMED', `CSR is larger than ${MAX_CSR_PEM_LENGTH} bytes`);
    }
    const blocks = [...csrPem.matchAll(/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/g)];
    if (blocks.length !== 1) {
      throw new CaError(
        'CSR_MALFORMED',
        blocks.length === 0
          ? 'CSR is not PEM: expected a "-----BEGIN CERTIFICATE REQUEST-----" block'
          : 'expected exactly one CSR PEM block',
      );
    }
    let csr: ParsedCsr;
    try {
      // Text around the block (e.g. `openssl req -text` output) is ignored.
      const body =
        /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([\s\S]*?)-----END (?:NEW )?CERTIFICATE REQUEST-----/.exec(
          csrPem,
        );
      if (!body) throw new DerError('PEM block has no END line');
      const b64 = body[1]!.replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/]+=*$/.test(b64)) throw new DerError('PEM body is not base64');
      csr = parseCsrDer(Buffer.from(b64, 'base64'));
    } catch (err) {
      throw new CaError('CSR_MALFORMED', `CSR cannot be parsed as PKCS#10: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const keyKind = checkCsrKey(csr.publicKey);
    if (!csr.signatureValid) {
      throw new CaError('CSR_BAD_SIGNATURE', 'CSR signature does not verify with the public key it contains');
    }
    const id = this.#csrIdentity(csr);
    return { id, spki: csr.spki, keyKind };
  }

  /** verifyCsr + sign. `expectedId` refuses a CSR for any other identity. */
  async signCsr(
    csrPem: string,
    opts: { ttlSeconds?: number; expectedId?: SpiffeId } = {},
  ): Promise<IssuedCertificate> {
    const verified = await this.verifyCsr(csrPem);
    if (opts.expectedId && !opts.expectedId.equals(verified.id)) {
      throw new CaError(
        'IDENTITY_MISMATCH',
        `CSR asks for ${verified.id} but ${opts.expectedId} was expected`,
      );
    }
    return this.signVerifiedCsr(
      verified,
      opts.ttlSeconds === undefined ? {} : { ttlSeconds: opts.ttlSeconds },
    );
  }

  /** Signs a CSR that verifyCsr accepted (lets a server authorize the identity in between). */
  async signVerifiedCsr(csr: VerifiedCsr, opts: { ttlSeconds?: number } = {}): Promise<IssuedCertificate> {
    const ttl = this.clampTtlSeconds(opts.ttlSeconds);
    return this.#sign(csr.id, csr.spki, csr.keyKind, ttl, [], []);
  }

  /**
   * Generates a key, a CSR and a certificate in one go (tests, `hypha ca issue`, the CA's own
   * serving certificate). The operator asked for this TTL directly, so it is bounded only by the
   * CA certificate's lifetime, not by maxTtlSeconds.
   */
  async issue(id: SpiffeId, opts: IssueOptions = {}): Promise<WorkloadCertificate> {
    if (id.trustDomain !== this.trustDomain) {
      throw new CaError(
        'TRUST_DOMAIN_MISMATCH',
        `${id} is not in this CA's trust domain "${this.trustDomain}"`,
      );
    }
    const ttl = opts.ttlSeconds === undefined ? this.defaultTtlSeconds : checkTtl(opts.ttlSeconds);
    const keys = await generateKeyPair();
    const csr = await this.verifyCsr(await createCsr(id, keys));
    const issued = await this.#sign(id, csr.spki, 'ec', ttl, opts.dnsNames ?? [], opts.ipAddresses ?? []);
    return { ...issued, keyPem: keys.privateKeyPem };
  }

  /** A new intermediate CA signed by this one (for plug-in setups and tests). */
  async createIntermediate(
    opts: { commonName?: string; ttlDays?: number } & CaOptions = {},
  ): Promise<CertificateAuthority> {
    const keys = await generateKeyPair();
    const now = Date.now();
    const ttlMs = Math.min((opts.ttlDays ?? 365) * 86_400_000, this.#m.cert.notAfter.getTime() - now);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: `O=${this.trustDomain}, CN=${opts.commonName ?? 'Hypha Intermediate CA'}`,
      issuer: this.#m.cert.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_BACKDATE_MS),
      notAfter: new Date(now + ttlMs),
      publicKey: keys.publicKey,
      signingKey: this.#m.key,
      signingAlgorithm: this.#m.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.AuthorityKeyIdentifierExtension(this.#m.authorityKeyId),
      ],
    });
    const material = await materialFrom(keys.privateKeyPem, [cert, ...this.#m.chain], this.#m.roots);
    return new CertificateAuthority(this.trustDomain, material, opts);
  }

  /** Requested TTL → TTL actually granted: default when absent, clamped to [1, maxTtlSeconds]. */
  clampTtlSeconds(requested: number | undefined): number {
    if (requested === undefined) return this.defaultTtlSeconds;
    return Math.min(checkTtl(requested), this.maxTtlSeconds);
  }

  #csrIdentity(csr: ParsedCsr): SpiffeId {
    if (csr.sanExtensionCount === 0 || !csr.sans) {
      throw new CaError(
        'CSR_SAN_REJECTED',
        `CSR has no subjectAltName: ask for exactly one URI SAN spiffe://${this.trustDomain}/ns/<ns>/sa/<sa>`,
      );
    }
    if (csr.sanExtensionCount > 1) {
      throw new CaError('CSR_SAN_REJECTED', 'CSR has more than one subjectAltName extension');
    }
    const names = csr.sans;
    const others = names.filter((n) => n.kind !== 'URI');
    if (others.length > 0) {
      const what = others.map((n) => `${n.kind}:${n.value}`).join(', ');
      throw new CaError(
        'CSR_SAN_REJECTED',
        `CSR asks for ${what}; workload certificates carry only a SPIFFE URI SAN`,
      );
    }
    if (names.length !== 1) {
      throw new CaError(
        'CSR_SAN_REJECTED',
        `CSR asks for ${names.length} URIs (${names.map((n) => n.value).join(', ')}); exactly one SPIFFE URI is allowed`,
      );
    }
    const uri = names[0]!.value;
    let id: SpiffeId;
    try {
      id = parseSpiffeId(uri);
    } catch (err) {
      throw new CaError('CSR_SAN_REJECTED', `CSR URI SAN: ${(err as Error).message}`, { cause: err });
    }
    if (id.trustDomain !== this.trustDomain) {
      throw new CaError(
        'TRUST_DOMAIN_MISMATCH',
        `CSR asks for ${id}, in trust domain "${id.trustDomain}"; this CA signs only "${this.trustDomain}"`,
      );
    }
    return id;
  }

  async #sign(
    id: SpiffeId,
    spki: Buffer,
    keyKind: 'ec' | 'rsa',
    ttlSeconds: number,
    dnsNames: readonly string[],
    ipAddresses: readonly string[],
  ): Promise<IssuedCertificate> {
    const m = this.#m;
    const now = Date.now();
    // Whole seconds: DER times carry no fractions, and the returned dates must match the certificate.
    const notBefore = new Date(Math.floor((now - CLOCK_SKEW_BACKDATE_MS) / 1000) * 1000);
    const notAfter = new Date(
      Math.floor(Math.min(now + ttlSeconds * 1000, m.cert.notAfter.getTime()) / 1000) * 1000,
    );
    if (notAfter.getTime() <= now) {
      throw new CaError(
        'CA_INVALID',
        `the CA certificate expired at ${m.cert.notAfter.toISOString()}; rotate the CA`,
      );
    }
    const serial = randomSerial();
    const der = buildLeafCertificate(
      {
        serial,
        issuerName: m.issuerName,
        notBefore,
        notAfter,
        spki,
        keyKind,
        authorityKeyId: Buffer.from(m.authorityKeyId, 'hex'),
        uri: id.toString(),
        dnsNames,
        ipAddresses: ipAddresses.map(parseIp),
      },
      m.signer,
    );
    return {
      id,
      serial: normalizeSerial(serial.toString('hex')),
      notBefore,
      notAfter,
      certChainPem: joinPem([derToPem(der), this.#chainPem]),
      trustBundlePem: this.#bundlePem,
    };
  }
}

/** 128 random bits; uint() adds the 00 sign byte when the top bit is set, so it stays positive. */
function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  if (bytes[0] === 0) bytes[0] = 1; // keep 16 significant bytes
  return bytes;
}

/** Hex serial for @peculiar/x509 (roots and intermediates). */
function randomSerialHex(): string {
  const bytes = randomSerial();
  return (bytes[0]! & 0x80) !== 0 ? `00${bytes.toString('hex')}` : bytes.toString('hex');
}

function checkTtl(ttlSeconds: number): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds < 1) {
    throw new CaError('TTL_INVALID', `ttlSeconds must be a number >= 1, got ${JSON.stringify(ttlSeconds)}`);
  }
  return Math.floor(ttlSeconds);
}

function positiveSeconds(value: number | undefined, dflt: number, name: string): number {
  if (value === undefined) return dflt;
  if (!Number.isFinite(value) || value < 1)
    throw new CaError('CA_INVALID', `${name} must be >= 1 second, got ${value}`);
  return Math.floor(value);
}

function validateTrustDomain(td: string): string {
  try {
    return parseSpiffeId(`spiffe://${td}/ns/x/sa/x`).trustDomain;
  } catch (err) {
    throw new CaError(
      'CA_INVALID',
      `invalid trust domain ${JSON.stringify(td)}: ${(err as Error).message.replace(/^invalid SPIFFE ID "[^"]*": /, '')}`,
      { cause: err },
    );
  }
}

function checkCsrKey(key: KeyObject): 'ec' | 'rsa' {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (d.namedCurve === 'prime256v1' || d.namedCurve === 'secp384r1') return 'ec';
    throw new CaError(
      'CSR_KEY_REJECTED',
      `CSR key is EC on curve ${d.namedCurve ?? 'unknown'}; use P-256 (or P-384)`,
    );
  }
  if (key.asymmetricKeyType === 'rsa') {
    if ((d.modulusLength ?? 0) >= 2048) return 'rsa';
    throw new CaError(
      'CSR_KEY_REJECTED',
      `CSR key is RSA-${d.modulusLength ?? '?'}; use ECDSA P-256 (or RSA >= 2048)`,
    );
  }
  throw new CaError(
    'CSR_KEY_REJECTED',
    `CSR key type ${key.asymmetricKeyType} is not accepted; use ECDSA P-256`,
  );
}

async function materialFrom(
  keyPem: string,
  chain: x509.X509Certificate[],
  roots: x509.X509Certificate[],
  dir?: string,
): Promise<SigningMaterial> {
  const where = dir ? ` in ${dir}` : '';
  const cert = chain[0]!;
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(keyPem);
  } catch (err) {
    throw new CaError(
      'CA_LOAD_FAILED',
      `${CA_FILES.caKey}${where} is not a readable private key: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const spki = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
  if (!Buffer.from(cert.publicKey.rawData).equals(spki)) {
    throw new CaError('CA_LOAD_FAILED', `${CA_FILES.caKey} does not match ${CA_FILES.caCert}${where}`);
  }
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca)
    throw new CaError(
      'CA_LOAD_FAILED',
      `${CA_FILES.caCert}${where} is not a CA certificate (basicConstraints CA:TRUE missing)`,
    );
  const nodeChain = chain.map((c) => new NodeX509Certificate(Buffer.from(c.rawData)));
  const nodeRoots = roots.map((c) => new NodeX509Certificate(Buffer.from(c.rawData)));
  const broken = walkToRoot(nodeChain, nodeRoots, new Date());
  if (broken)
    throw new CaError(
      'CA_LOAD_FAILED',
      `CA certificate${where} does not verify against ${CA_FILES.rootCert}: ${broken}`,
    );
  let algorithm: WebCrypto.EcdsaParams | WebCrypto.RsaHashedImportParams;
  let importAlg: WebCrypto.EcKeyImportParams | WebCrypto.RsaHashedImportParams;
  const details = keyObject.asymmetricKeyDetails ?? {};
  if (keyObject.asymmetricKeyType === 'ec') {
    const curve =
      details.namedCurve === 'prime256v1'
        ? 'P-256'
        : details.namedCurve === 'secp384r1'
          ? 'P-384'
          : undefined;
    if (!curve)
      throw new CaError(
        'CA_LOAD_FAILED',
        `CA key curve ${details.namedCurve} is not supported; use P-256 or P-384`,
      );
    importAlg = { name: 'ECDSA', namedCurve: curve };
    algorithm = { name: 'ECDSA', hash: curve === 'P-256' ? 'SHA-256' : 'SHA-384' };
  } else if (keyObject.asymmetricKeyType === 'rsa') {
    importAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    algorithm = importAlg;
  } else {
    throw new CaError(
      'CA_LOAD_FAILED',
      `CA key type ${keyObject.asymmetricKeyType} is not supported; use EC P-256 or RSA`,
    );
  }
  const key = keyObject.toCryptoKey(importAlg, false, ['sign']);
  const pkcs8Pem = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const authorityKeyId = ski?.keyId ?? Buffer.from(await cert.publicKey.getKeyIdentifier()).toString('hex');
  // Roots are not repeated in the chain even if cert-chain.pem ends with one.
  const intermediates = chain.filter((c) => !roots.some((r) => r.equal(c)));
  const { subjectName } = certificateFields(new Uint8Array(cert.rawData));
  return {
    key,
    keyPem: pkcs8Pem,
    algorithm,
    cert,
    chain: intermediates,
    roots,
    authorityKeyId,
    signer: signerFor(keyObject),
    issuerName: subjectName,
  };
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CaError('CA_LOAD_FAILED', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}
