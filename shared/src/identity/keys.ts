// Workload keys and certificate signing requests.
// Keys are ECDSA P-256 from WebCrypto (see ARCHITECTURE section 7: ~13x faster to sign than RSA-2048,
// which bounds the handshake rate). Private keys are extractable only so they can be handed to
// node:tls as PKCS#8 PEM.
import { derToPem } from './certificate.js';
import type { SpiffeId } from './spiffe.js';
import { subtle, type WebCrypto, x509 } from './x509.js';

export const EC_P256_SIGNING: WebCrypto.EcKeyGenParams & WebCrypto.EcdsaParams = {
  name: 'ECDSA',
  namedCurve: 'P-256',
  hash: 'SHA-256',
};

export interface KeyPair {
  privateKey: WebCrypto.CryptoKey;
  publicKey: WebCrypto.CryptoKey;
  /** PKCS#8 PEM of the private key, as node:tls wants it. */
  privateKeyPem: string;
}

export async function generateKeyPair(): Promise<KeyPair> {
  const pair = (await subtle.generateKey(EC_P256_SIGNING, true, [
    'sign',
    'verify',
  ])) as WebCrypto.CryptoKeyPair;
  const pkcs8 = await subtle.exportKey('pkcs8', pair.privateKey);
  return {
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    privateKeyPem: derToPem(new Uint8Array(pkcs8), 'PRIVATE KEY'),
  };
}

/** A PKCS#10 CSR (PEM) with an empty subject and exactly one URI SAN: the SPIFFE id. */
export async function createCsr(id: SpiffeId, keys: KeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: EC_P256_SIGNING,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }], true)],
  });
  return `${csr.toString('pem').trim()}\n`;
}
