// Test helpers: build CSRs the production code would never build (DNS SANs, other trust domains...).

import { readFile } from 'node:fs/promises';
import { generateKeyPair, type KeyPair } from '../../src/identity/keys.js';
import { x509 } from '../../src/identity/x509.js';

export type SanEntry = { type: 'url' | 'dns' | 'ip' | 'email'; value: string };

export async function csrWithSans(sans: SanEntry[], keys?: KeyPair): Promise<string> {
  const k = keys ?? (await generateKeyPair());
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=test',
    keys: { privateKey: k.privateKey, publicKey: k.publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : [],
  });
  return csr.toString('pem');
}

/** A CSR whose signed content was changed after signing (same length, so it still parses). */
export function tamperCsr(csrPem: string, from: string, to: string): string {
  const b64 = csrPem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  const i = der.indexOf(Buffer.from(from));
  if (i < 0 || from.length !== to.length) throw new Error('tamperCsr: pattern not found');
  Buffer.from(to).copy(der, i);
  const lines = der.toString('base64').match(/.{1,64}/g)!;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

export async function cat(...files: string[]): Promise<string> {
  return (await Promise.all(files.map((f) => readFile(f, 'utf8')))).join('');
}

/** A certificate with arbitrary SANs, signed by a throwaway key (to test identity extraction). */
export async function certWithSans(sans: SanEntry[]): Promise<Buffer> {
  const k = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=odd',
    keys: { privateKey: k.privateKey, publicKey: k.publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : [],
  });
  return Buffer.from(cert.rawData);
}
