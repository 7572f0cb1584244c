// Workload certificates and CSRs in DER, built and read with ./der.ts and signed with node:crypto
// (synchronous, native). This is the hot path: CSR verification and signing in the CA, SPIFFE id
// extraction on every mTLS handshake. Root and intermediate creation, which are rare, use
// @peculiar/x509 (see ca.ts).
import { createHash, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import {
  bitString,
  bool,
  children,
  content,
  ctx,
  DerError,
  decodeOid,
  expectTag,
  NULL_DER,
  octets,
  oid,
  raw,
  readRoot,
  seq,
  set,
  smallInt,
  TAG,
  type Tlv,
  time,
  uint,
} from './der.js';

export const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  sha384WithRsa: '1.2.840.113549.1.1.12',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  authorityKeyId: '2.5.29.35',
  subjectKeyId: '2.5.29.14',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

const HASH_OF_SIG_ALG: Record<string, string> = {
  [OID.ecdsaWithSha256]: 'sha256',
  [OID.ecdsaWithSha384]: 'sha384',
  [OID.sha256WithRsa]: 'sha256',
  [OID.sha384WithRsa]: 'sha384',
};

export type GeneralNameKind =
  | 'URI'
  | 'DNS'
  | 'IP'
  | 'email'
  | 'otherName'
  | 'dirName'
  | 'RID'
  | 'x400'
  | 'ediParty';
export interface GeneralName {
  kind: GeneralNameKind;
  value: string;
}

/** How the CA signs: algorithm identifier DER and the hash for crypto.sign. */
export interface SignerSpec {
  key: KeyObject;
  hash: 'sha256' | 'sha384';
  algorithmId: Buffer;
}

export function signerFor(key: KeyObject): SignerSpec {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { key, hash: 'sha256', algorithmId: seq(oid(OID.ecdsaWithSha256)) };
    if (curve === 'secp384r1') return { key, hash: 'sha384', algorithmId: seq(oid(OID.ecdsaWithSha384)) };
    throw new DerError(`EC curve ${curve} is not supported; use P-256 or P-384`);
  }
  if (key.asymmetricKeyType === 'rsa')
    return { key, hash: 'sha256', algorithmId: seq(oid(OID.sha256WithRsa), NULL_DER) };
  throw new DerError(`key type ${key.asymmetricKeyType} is not supported`);
}

function signed(tbs: Buffer, signer: SignerSpec): Buffer {
  const signature = sign(signer.hash, tbs, signer.key);
  return seq(tbs, signer.algorithmId, bitString(signature));
}

// ---- CSRs ----

/** PKCS#10 with an empty subject and one extension request: SAN = the URI, critical. */
export function buildCsrDer(uri: string, privateKey: KeyObject): Buffer {
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const san = extension(OID.subjectAltName, true, seq(ctx(6, Buffer.from(uri, 'ascii'), false)));
  const attributes = ctx(0, seq(oid(OID.extensionRequest), set(seq(san))), true);
  const cri = seq(smallInt(0), seq(), spki, attributes);
  return signed(cri, signerFor(privateKey));
}

export interface ParsedCsr {
  spki: Buffer;
  publicKey: KeyObject;
  /** Names of the subjectAltName extension request; undefined when the CSR asks for none. */
  sans: GeneralName[] | undefined;
  sanExtensionCount: number;
  signatureValid: boolean;
}

export function parseCsrDer(der: Uint8Array): ParsedCsr {
  const root = expectTag(readRoot(der), TAG.SEQUENCE, 'CSR');
  const [cri, alg, sig] = children(der, root);
  expectTag(cri, TAG.SEQUENCE, 'CertificationRequestInfo');
  expectTag(alg, TAG.SEQUENCE, 'signatureAlgorithm');
  expectTag(sig, TAG.BIT_STRING, 'signature');
  const criParts = children(der, cri!);
  expectTag(criParts[0], TAG.INTEGER, 'version');
  expectTag(criParts[1], TAG.SEQUENCE, 'subject');
  const spkiTlv = expectTag(criParts[2], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const spki = Buffer.from(raw(der, spkiTlv));
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (err) {
    throw new DerError(`public key cannot be read: ${(err as Error).message}`);
  }
  const algOid = decodeOid(content(der, expectTag(children(der, alg!)[0], TAG.OID, 'algorithm')));
  const hash = HASH_OF_SIG_ALG[algOid];
  if (!hash) throw new DerError(`signature algorithm ${algOid} is not supported`);
  const sigBytes = content(der, sig!);
  let signatureValid = false;
  if (sigBytes[0] === 0) {
    try {
      signatureValid = verify(hash, raw(der, cri!), publicKey, sigBytes.subarray(1));
    } catch {
      signatureValid = false;
    }
  }
  let sans: GeneralName[] | undefined;
  let sanExtensionCount = 0;
  const attrs = criParts[3];
  if (attrs && attrs.tag === 0xa0) {
    for (const attr of children(der, attrs)) {
      const [type, values] = children(der, expectTag(attr, TAG.SEQUENCE, 'attribute'));
      if (decodeOid(content(der, expectTag(type, TAG.OID, 'attribute type'))) !== OID.extensionRequest)
        continue;
      for (const exts of children(der, expectTag(values, TAG.SET, 'attribute values'))) {
        for (const ext of children(der, expectTag(exts, TAG.SEQUENCE, 'extensions'))) {
          const e = readExtension(der, ext);
          if (e.oid !== OID.subjectAltName) continue;
          sanExtensionCount++;
          sans = readGeneralNames(e.value);
        }
      }
    }
  }
  return { spki, publicKey, sans, sanExtensionCount, signatureValid };
}

// ---- certificates ----

export interface LeafSpec {
  serial: Buffer;
  issuerName: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  keyKind: 'ec' | 'rsa';
  authorityKeyId: Buffer;
  uri: string;
  dnsNames: readonly string[];
  ipAddresses: readonly Buffer[];
}

export function buildLeafCertificate(spec: LeafSpec, signer: SignerSpec): Buffer {
  // keyUsage bits: digitalSignature(0) + keyAgreement(4) for EC, + keyEncipherment(2) for RSA.
  const keyUsage =
    spec.keyKind === 'ec' ? bitString(Buffer.from([0x88]), 3) : bitString(Buffer.from([0xa0]), 5);
  const names = [
    ctx(6, Buffer.from(spec.uri, 'ascii'), false),
    ...spec.dnsNames.map((d) => ctx(2, Buffer.from(d, 'ascii'), false)),
    ...spec.ipAddresses.map((ip) => ctx(7, ip, false)),
  ];
  const extensions = seq(
    extension(OID.basicConstraints, true, seq()),
    extension(OID.keyUsage, true, keyUsage),
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
    extension(OID.authorityKeyId, false, seq(ctx(0, spec.authorityKeyId, false))),
    // Empty subject → the SAN is critical (RFC 5280 4.2.1.6).
    extension(OID.subjectAltName, true, seq(...names)),
  );
  const tbs = seq(
    ctx(0, smallInt(2), true),
    uint(spec.serial),
    signer.algorithmId,
    spec.issuerName,
    seq(time(spec.notBefore), time(spec.notAfter)),
    seq(),
    spec.spki,
    ctx(3, extensions, true),
  );
  return signed(tbs, signer);
}

export interface CertificateFields {
  subjectName: Buffer;
  spki: Buffer;
  subjectKeyId: Buffer | undefined;
  sans: GeneralName[] | undefined;
  sanExtensionCount: number;
}

/** Subject, public key, SKI and SAN of a DER certificate. */
export function certificateFields(der: Uint8Array): CertificateFields {
  const root = expectTag(readRoot(der), TAG.SEQUENCE, 'certificate');
  const tbs = expectTag(children(der, root)[0], TAG.SEQUENCE, 'tbsCertificate');
  const parts = children(der, tbs);
  let i = parts[0]?.tag === 0xa0 ? 1 : 0; // optional [0] version
  i += 3; // serial, signature, issuer
  i += 1; // validity
  const subject = expectTag(parts[i], TAG.SEQUENCE, 'subject');
  const spki = expectTag(parts[i + 1], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  let subjectKeyId: Buffer | undefined;
  let sans: GeneralName[] | undefined;
  let sanExtensionCount = 0;
  const extsTagged = parts.slice(i + 2).find((t) => t.tag === 0xa3);
  if (extsTagged) {
    const exts = expectTag(children(der, extsTagged)[0], TAG.SEQUENCE, 'extensions');
    for (const ext of children(der, exts)) {
      const e = readExtension(der, ext);
      if (e.oid === OID.subjectAltName) {
        sanExtensionCount++;
        sans = readGeneralNames(e.value);
      } else if (e.oid === OID.subjectKeyId) {
        const v = readRoot(e.value);
        subjectKeyId = Buffer.from(content(e.value, expectTag(v, TAG.OCTET_STRING, 'subjectKeyIdentifier')));
      }
    }
  }
  return {
    subjectName: Buffer.from(raw(der, subject)),
    spki: Buffer.from(raw(der, spki)),
    subjectKeyId,
    sans,
    sanExtensionCount,
  };
}

/** RFC 5280 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(spki: Uint8Array): Buffer {
  const root = readRoot(spki);
  const bits = expectTag(children(spki, root)[1], TAG.BIT_STRING, 'subjectPublicKey');
  return createHash('sha1').update(content(spki, bits).subarray(1)).digest();
}

// ---- helpers ----

function extension(id: string, critical: boolean, value: Uint8Array): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function readExtension(der: Uint8Array, ext: Tlv): { oid: string; value: Buffer } {
  const parts = children(der, expectTag(ext, TAG.SEQUENCE, 'extension'));
  const id = decodeOid(content(der, expectTag(parts[0], TAG.OID, 'extension id')));
  const valueTlv = parts[1]?.tag === TAG.BOOLEAN ? parts[2] : parts[1];
  return {
    oid: id,
    value: Buffer.from(content(der, expectTag(valueTlv, TAG.OCTET_STRING, 'extension value'))),
  };
}

const NAME_KINDS: Record<number, GeneralNameKind> = {
  160: 'otherName',
  129: 'email',
  130: 'DNS',
  163: 'x400',
  164: 'dirName',
  165: 'ediParty',
  134: 'URI',
  135: 'IP',
  136: 'RID',
};

function readGeneralNames(value: Buffer): GeneralName[] {
  const root = expectTag(readRoot(value), TAG.SEQUENCE, 'GeneralNames');
  return children(value, root).map((t) => {
    const kind = NAME_KINDS[t.tag];
    if (!kind) throw new DerError(`unknown GeneralName tag 0x${t.tag.toString(16)}`);
    const body = content(value, t);
    if (kind === 'IP') return { kind, value: formatIp(body) };
    if (kind === 'URI' || kind === 'DNS' || kind === 'email') return { kind, value: body.toString('latin1') };
    return { kind, value: body.toString('hex') };
  });
}

function formatIp(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  if (b.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
    return groups.join(':');
  }
  return b.toString('hex');
}

export function parseIp(text: string): Buffer {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const parts = text.split('.').map(Number);
    if (parts.every((p) => p <= 255)) return Buffer.from(parts);
  }
  if (text.includes(':')) {
    const [head, tail] = text.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const fill = text.includes('::') ? 8 - h.length - t.length : 0;
    const groups = [...h, ...Array<string>(fill).fill('0'), ...t];
    if (groups.length === 8 && groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) {
      const b = Buffer.alloc(16);
      for (const [i, g] of groups.entries()) b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
      return b;
    }
  }
  throw new DerError(`"${text}" is not an IPv4 or IPv6 address`);
}
