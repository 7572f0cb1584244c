// Certificates checked by a tool we did not write: the openssl CLI.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  parseSpiffeId,
  verifyChain,
} from '../../src/identity/index.js';
import { cat } from './helpers.js';

const run = promisify(execFile);
const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');

async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('openssl', args);
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

function firstPem(pem: string): string {
  const end = '-----END CERTIFICATE-----';
  return `${pem.slice(0, pem.indexOf(end) + end.length)}\n`;
}

describe('issued certificates under openssl', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hypha-openssl-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('shows an EC P-256 key, the URI SAN and both EKUs', async () => {
    const ca = await CertificateAuthority.init();
    const cert = await ca.issue(WEB);
    await writeFile(join(dir, 'leaf.pem'), firstPem(cert.certChainPem));
    const { code, out } = await openssl(['x509', '-in', join(dir, 'leaf.pem'), '-text', '-noout']);
    expect(code).toBe(0);
    expect(out).toMatch(/Public Key Algorithm: id-ecPublicKey/);
    expect(out).toMatch(/ASN1 OID: prime256v1/);
    expect(out).toMatch(/NIST CURVE: P-256/);
    expect(out).toMatch(
      /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\s*\n/,
    );
    expect(out).not.toMatch(/DNS:/);
    expect(out).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(out).toMatch(/CA:FALSE/);
    expect(out).toMatch(/Digital Signature, Key Agreement/);
    expect(out).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
  });

  it('openssl accepts the key and the CSR we generate', async () => {
    const keys = await generateKeyPair();
    await writeFile(join(dir, 'key.pem'), keys.privateKeyPem);
    await writeFile(join(dir, 'req.pem'), await createCsr(WEB, keys));
    const key = await openssl(['pkey', '-in', join(dir, 'key.pem'), '-noout', '-text']);
    expect(key.code).toBe(0);
    expect(key.out).toMatch(/prime256v1/);
    const req = await openssl(['req', '-in', join(dir, 'req.pem'), '-verify', '-noout', '-text']);
    expect(req.code).toBe(0);
    expect(req.out).toMatch(/verify OK|Certificate request self-signature verify OK/);
    expect(req.out).toMatch(/URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/);
  });

  it('openssl verify accepts the chain under its root and rejects it under another root', async () => {
    const ca = await CertificateAuthority.init();
    const otherCa = await CertificateAuthority.init();
    const cert = await ca.issue(WEB);
    const leaf = join(dir, 'v-leaf.pem');
    await writeFile(leaf, firstPem(cert.certChainPem));
    await writeFile(join(dir, 'v-chain.pem'), cert.certChainPem);
    await writeFile(join(dir, 'v-root.pem'), cert.trustBundlePem);
    await writeFile(join(dir, 'v-other.pem'), otherCa.trustBundlePem);
    const ok = await openssl([
      'verify',
      '-CAfile',
      join(dir, 'v-root.pem'),
      '-untrusted',
      join(dir, 'v-chain.pem'),
      leaf,
    ]);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/: OK/);
    const bad = await openssl([
      'verify',
      '-CAfile',
      join(dir, 'v-other.pem'),
      '-untrusted',
      join(dir, 'v-chain.pem'),
      leaf,
    ]);
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/unable to get local issuer certificate/);
  });

  it('openssl verify follows the intermediate of a plugged-in CA, with purpose sslclient and sslserver', async () => {
    const root = await CertificateAuthority.init({ commonName: 'Corp Root' });
    const inter = await root.createIntermediate();
    const cert = await inter.signCsr(await createCsr(WEB, await generateKeyPair()));
    await writeFile(join(dir, 'i-leaf.pem'), firstPem(cert.certChainPem));
    await writeFile(join(dir, 'i-chain.pem'), cert.certChainPem);
    await writeFile(join(dir, 'i-root.pem'), cert.trustBundlePem);
    for (const purpose of ['sslclient', 'sslserver']) {
      const ok = await openssl([
        'verify',
        '-purpose',
        purpose,
        '-CAfile',
        join(dir, 'i-root.pem'),
        '-untrusted',
        join(dir, 'i-chain.pem'),
        join(dir, 'i-leaf.pem'),
      ]);
      expect(ok.out).toMatch(/: OK/);
      expect(ok.code).toBe(0);
    }
    // Without the intermediate, openssl cannot build the path.
    const missing = await openssl(['verify', '-CAfile', join(dir, 'i-root.pem'), join(dir, 'i-leaf.pem')]);
    expect(missing.code).not.toBe(0);
  });

  it('loads an Istio-style cacerts directory made by openssl (EC root, RSA intermediate) and signs with it', async () => {
    const d = join(dir, 'cacerts');
    const ext = join(dir, 'ca.ext');
    await run('mkdir', ['-p', d]);
    await writeFile(
      ext,
      'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n',
    );
    const steps: string[][] = [
      ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(d, 'root-key.pem')],
      [
        'req',
        '-x509',
        '-new',
        '-key',
        join(d, 'root-key.pem'),
        '-subj',
        '/O=Istio/CN=Root CA',
        '-days',
        '3650',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-out',
        join(d, 'root-cert.pem'),
      ],
      ['genrsa', '-out', join(d, 'ca-key.pem'), '2048'],
      [
        'req',
        '-new',
        '-key',
        join(d, 'ca-key.pem'),
        '-subj',
        '/O=Istio/CN=Intermediate CA',
        '-out',
        join(d, 'ca.csr'),
      ],
      [
        'x509',
        '-req',
        '-in',
        join(d, 'ca.csr'),
        '-CA',
        join(d, 'root-cert.pem'),
        '-CAkey',
        join(d, 'root-key.pem'),
        '-CAcreateserial',
        '-days',
        '730',
        '-extfile',
        ext,
        '-out',
        join(d, 'ca-cert.pem'),
      ],
    ];
    for (const args of steps) expect((await openssl(args)).code).toBe(0);
    await writeFile(join(d, 'cert-chain.pem'), await cat(join(d, 'ca-cert.pem'), join(d, 'root-cert.pem')));
    const ca = await CertificateAuthority.load(d);
    expect(ca.isRoot).toBe(false);
    const cert = await ca.signCsr(await createCsr(WEB, await generateKeyPair()));
    expect(verifyChain(cert.certChainPem, cert.trustBundlePem)).toEqual({ ok: true, id: WEB });
    await writeFile(join(d, 'leaf.pem'), firstPem(cert.certChainPem));
    await writeFile(join(d, 'chain.pem'), cert.certChainPem);
    const ok = await openssl([
      'verify',
      '-CAfile',
      join(d, 'root-cert.pem'),
      '-untrusted',
      join(d, 'chain.pem'),
      join(d, 'leaf.pem'),
    ]);
    expect(ok.out).toMatch(/: OK/);
    const text = await openssl(['x509', '-in', join(d, 'leaf.pem'), '-noout', '-text']);
    expect(text.out).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    expect(text.out).toMatch(/Issuer: O = Istio, CN = Intermediate CA/);
  });

  it('signs a CSR made by openssl req (EC P-256 key, URI SAN), with text around the PEM block', async () => {
    const ca = await CertificateAuthority.init();
    const key = join(dir, 'o-key.pem');
    const req = join(dir, 'o-req.pem');
    expect((await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key])).code).toBe(
      0,
    );
    const made = await openssl([
      'req',
      '-new',
      '-key',
      key,
      '-subj',
      '/O=ignored',
      '-addext',
      `subjectAltName=URI:${WEB}`,
      '-text',
      '-out',
      req,
    ]);
    expect(made.code).toBe(0);
    const { readFile } = await import('node:fs/promises');
    const pem = await readFile(req, 'utf8');
    expect(pem).toMatch(/^Certificate Request:/);
    const cert = await ca.signCsr(pem);
    expect(cert.id.equals(WEB)).toBe(true);
    await writeFile(join(dir, 'o-leaf.pem'), firstPem(cert.certChainPem));
    const text = await openssl(['x509', '-in', join(dir, 'o-leaf.pem'), '-noout', '-text']);
    expect(text.out).not.toMatch(/O\s*=\s*ignored/);
    // The certificate certifies the openssl key.
    const pub = await openssl(['pkey', '-in', key, '-pubout']);
    const leafPub = await openssl(['x509', '-in', join(dir, 'o-leaf.pem'), '-noout', '-pubkey']);
    expect(leafPub.out).toBe(pub.out);
  });
});
