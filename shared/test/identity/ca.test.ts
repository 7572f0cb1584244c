import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CaError,
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  identityFromCertificate,
  parseSpiffeId,
  splitPemCertificates,
  verifyChain,
} from '../../src/identity/index.js';
import { csrWithSans, tamperCsr } from './helpers.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const API = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api');

async function caErrorOf(p: Promise<unknown>): Promise<CaError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    return err as CaError;
  }
  throw new Error('expected a CaError, got success');
}

describe('CertificateAuthority', () => {
  let ca: CertificateAuthority;
  let dir: string;
  beforeAll(async () => {
    ca = await CertificateAuthority.init();
    dir = await mkdtemp(join(tmpdir(), 'hypha-ca-test-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('signs a CSR into a certificate with only the SPIFFE URI SAN, both EKUs, and a 128-bit serial', async () => {
    const keys = await generateKeyPair();
    const issued = await ca.signCsr(await createCsr(WEB, keys));
    expect(issued.id.equals(WEB)).toBe(true);
    const [leafDer, ...rest] = splitPemCertificates(issued.certChainPem);
    expect(rest).toHaveLength(0); // root CA: leaf only, the root travels in the trust bundle
    const leaf = new X509Certificate(leafDer!);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/web');
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.ca).toBe(false);
    expect(issued.serial).toMatch(/^[0-9a-f]{31,32}$/);
    expect(leaf.serialNumber.toLowerCase().replace(/^0+/, '')).toBe(issued.serial);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(identityFromCertificate(leaf).toString()).toBe(WEB.toString());
    expect(verifyChain(issued.certChainPem, issued.trustBundlePem)).toEqual({ ok: true, id: WEB });
    // default TTL 24 h
    const ttl = (issued.notAfter.getTime() - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(24 * 3600 - 60);
    expect(ttl).toBeLessThanOrEqual(24 * 3600);
  });

  it('gives every certificate a different serial', async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) serials.add((await ca.issue(API, { ttlSeconds: 60 })).serial);
    expect(serials.size).toBe(20);
  });

  it('clamps a TTL above the maximum instead of refusing it', async () => {
    const small = await CertificateAuthority.init({ maxTtlSeconds: 3600 });
    const issued = await small.signCsr(await createCsr(WEB, await generateKeyPair()), {
      ttlSeconds: 7 * 86400,
    });
    const ttl = (issued.notAfter.getTime() - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
    const short = await small.signCsr(await createCsr(WEB, await generateKeyPair()), { ttlSeconds: 120 });
    expect((short.notAfter.getTime() - Date.now()) / 1000).toBeLessThanOrEqual(120);
    expect(
      (await caErrorOf(small.signCsr(await createCsr(WEB, await generateKeyPair()), { ttlSeconds: 0 }))).code,
    ).toBe('TTL_INVALID');
  });

  it.each([
    ['a DNS SAN', [{ type: 'dns', value: 'web.shop.svc' }], 'CSR_SAN_REJECTED', /DNS:web\.shop\.svc/],
    ['an IP SAN', [{ type: 'ip', value: '10.0.0.1' }], 'CSR_SAN_REJECTED', /IP:10\.0\.0\.1/],
    ['an email SAN', [{ type: 'email', value: 'a@b.c' }], 'CSR_SAN_REJECTED', /email:a@b\.c/],
    [
      'a SPIFFE URI plus a DNS SAN',
      [
        { type: 'url', value: WEB.toString() },
        { type: 'dns', value: 'web' },
      ],
      'CSR_SAN_REJECTED',
      /DNS:web/,
    ],
    [
      'two URIs',
      [
        { type: 'url', value: WEB.toString() },
        { type: 'url', value: API.toString() },
      ],
      'CSR_SAN_REJECTED',
      /2 URIs/,
    ],
    [
      'a non-SPIFFE URI',
      [{ type: 'url', value: 'https://example.com/x' }],
      'CSR_SAN_REJECTED',
      /scheme must be "spiffe"/,
    ],
    ['no SAN at all', [], 'CSR_SAN_REJECTED', /no subjectAltName/],
    [
      'another trust domain',
      [{ type: 'url', value: 'spiffe://evil.example/ns/shop/sa/web' }],
      'TRUST_DOMAIN_MISMATCH',
      /"evil\.example".*only "cluster\.local"/,
    ],
  ] as const)('refuses a CSR with %s', async (_name, sans, code, reason) => {
    const err = await caErrorOf(ca.signCsr(await csrWithSans([...sans])));
    expect(err.code).toBe(code);
    expect(err.isClientError).toBe(true);
    expect(err.message).toMatch(reason);
  });

  it('refuses a CSR whose signature does not verify', async () => {
    const good = await createCsr(WEB, await generateKeyPair());
    const bad = tamperCsr(good, 'sa/web', 'sa/wex');
    const err = await caErrorOf(ca.signCsr(bad));
    expect(err.code).toBe('CSR_BAD_SIGNATURE');
  });

  it.each([
    ['not PEM', 'hello', /not PEM/],
    [
      'PEM with garbage inside',
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
      /cannot be parsed/,
    ],
    ['empty', '', /empty/],
  ])('refuses a malformed CSR (%s)', async (_n, pem, reason) => {
    const err = await caErrorOf(ca.signCsr(pem));
    expect(err.code).toBe('CSR_MALFORMED');
    expect(err.message).toMatch(reason);
  });

  it('refuses a CSR for another identity when one is expected', async () => {
    const err = await caErrorOf(
      ca.signCsr(await createCsr(WEB, await generateKeyPair()), { expectedId: API }),
    );
    expect(err.code).toBe('IDENTITY_MISMATCH');
  });

  it('saves the Istio cacerts layout with a private key file and loads it back', async () => {
    const d = join(dir, 'saved');
    const original = await CertificateAuthority.init({ trustDomain: 'example.org' });
    await original.save(d);
    expect((await stat(join(d, 'ca-key.pem'))).mode & 0o777).toBe(0o600);
    for (const f of ['ca-cert.pem', 'root-cert.pem', 'cert-chain.pem']) {
      expect(await readFile(join(d, f), 'utf8')).toContain('BEGIN CERTIFICATE');
    }
    const loaded = await CertificateAuthority.load(d);
    expect(loaded.trustDomain).toBe('example.org');
    expect(loaded.trustBundlePem).toBe(original.trustBundlePem);
    const issued = await loaded.issue(parseSpiffeId('spiffe://example.org/ns/a/sa/b'));
    expect(verifyChain(issued.certChainPem, original.trustBundlePem).ok).toBe(true);
    expect((await caErrorOf(original.save(d))).code).toBe('CA_EXISTS');
    await original.save(d, { overwrite: true });
  });

  it('refuses to load a key that does not match the CA certificate', async () => {
    const d = join(dir, 'mismatch');
    await (await CertificateAuthority.init()).save(d);
    const other = join(dir, 'other');
    await (await CertificateAuthority.init()).save(other);
    await writeFile(join(d, 'ca-key.pem'), await readFile(join(other, 'ca-key.pem')));
    const err = await caErrorOf(CertificateAuthority.load(d));
    expect(err.code).toBe('CA_LOAD_FAILED');
    expect(err.message).toMatch(/ca-key\.pem does not match ca-cert\.pem/);
    const missing = await caErrorOf(CertificateAuthority.load(join(dir, 'nope')));
    expect(missing.message).toMatch(/hypha ca init/);
  });

  it('as a plugged-in intermediate, puts the intermediate in the chain and verifies against the root', async () => {
    const root = await CertificateAuthority.init({ commonName: 'Corp Root' });
    const inter = await root.createIntermediate({ commonName: 'Cluster Intermediate' });
    const d = join(dir, 'intermediate');
    await inter.save(d);
    const loaded = await CertificateAuthority.load(d);
    expect(loaded.isRoot).toBe(false);
    const issued = await loaded.signCsr(await createCsr(WEB, await generateKeyPair()));
    const chain = splitPemCertificates(issued.certChainPem).map((d) => new X509Certificate(d));
    expect(chain).toHaveLength(2);
    expect(chain[1]!.subject).toContain('Cluster Intermediate');
    expect(issued.trustBundlePem).toBe(root.trustBundlePem);
    expect(verifyChain(issued.certChainPem, root.trustBundlePem)).toEqual({ ok: true, id: WEB });
    // Without the intermediate the leaf does not reach the root.
    const leafOnly = issued.certChainPem.slice(
      0,
      issued.certChainPem.indexOf('-----END CERTIFICATE-----') + 26,
    );
    expect(verifyChain(leafOnly, root.trustBundlePem).ok).toBe(false);
  });

  it('works with node:tls for mutual TLS, and each side reads the other identity', async () => {
    const server = await ca.issue(WEB);
    const client = await ca.issue(API);
    const srv = createServer(
      {
        key: server.keyPem,
        cert: server.certChainPem,
        ca: server.trustBundlePem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
      },
      (sock) => {
        const peer = sock.getPeerX509Certificate();
        sock.end(peer ? identityFromCertificate(peer).toString() : 'none');
      },
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    try {
      const { seenByServer, serverId } = await new Promise<{ seenByServer: string; serverId: string }>(
        (resolve, reject) => {
          const sock: TLSSocket = connect({
            host: '127.0.0.1',
            port,
            key: client.keyPem,
            cert: client.certChainPem,
            ca: client.trustBundlePem,
            checkServerIdentity: () => undefined,
          });
          let data = '';
          sock.on('secureConnect', () => {
            const peer = sock.getPeerX509Certificate()!;
            sock.on('data', (d) => {
              data += d;
            });
            sock.on('end', () =>
              resolve({ seenByServer: data, serverId: identityFromCertificate(peer).toString() }),
            );
          });
          sock.on('error', reject);
        },
      );
      expect(seenByServer).toBe(API.toString());
      expect(serverId).toBe(WEB.toString());
    } finally {
      srv.close();
    }
  });

  it('rejects the CA trust domain when it is invalid', async () => {
    expect((await caErrorOf(CertificateAuthority.init({ trustDomain: 'Bad Domain' }))).message).toMatch(
      /invalid trust domain/,
    );
  });
});
