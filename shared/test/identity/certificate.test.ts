import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CertificateAuthority,
  IdentityError,
  identityFromCertificate,
  joinPem,
  normalizeSerial,
  parseSpiffeId,
  splitPemCertificates,
  verifyChain,
  type WorkloadCertificate,
} from '../../src/identity/index.js';
import { certWithSans } from './helpers.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');

describe('verifyChain', () => {
  let ca: CertificateAuthority;
  let other: CertificateAuthority;
  let cert: WorkloadCertificate;
  beforeAll(async () => {
    ca = await CertificateAuthority.init();
    other = await CertificateAuthority.init();
    cert = await ca.issue(WEB, { ttlSeconds: 3600 });
  });

  it('accepts a chain under its root and returns the identity', () => {
    expect(verifyChain(cert.certChainPem, cert.trustBundlePem)).toEqual({ ok: true, id: WEB });
  });

  it('accepts when the bundle holds several roots (rotation)', () => {
    expect(verifyChain(cert.certChainPem, joinPem([other.trustBundlePem, ca.trustBundlePem])).ok).toBe(true);
  });

  it('rejects a chain under a different root', () => {
    const r = verifyChain(cert.certChainPem, other.trustBundlePem);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/does not chain to any root/);
  });

  it('rejects an expired or not-yet-valid certificate', () => {
    const later = verifyChain(cert.certChainPem, cert.trustBundlePem, new Date(Date.now() + 2 * 3600_000));
    expect(!later.ok && later.reason).toMatch(/expired at/);
    const earlier = verifyChain(cert.certChainPem, cert.trustBundlePem, new Date(Date.now() - 3600_000));
    expect(!earlier.ok && earlier.reason).toMatch(/not valid before/);
  });

  it('rejects a CA certificate presented as a leaf, and empty input', () => {
    const r = verifyChain(ca.trustBundlePem, ca.trustBundlePem);
    expect(!r.ok && r.reason).toMatch(/is a CA certificate/);
    expect(verifyChain('', ca.trustBundlePem).ok).toBe(false);
    expect(verifyChain(cert.certChainPem, '').ok).toBe(false);
  });
});

describe('identityFromCertificate', () => {
  it('reads the SPIFFE id from a Node certificate or DER', async () => {
    const ca = await CertificateAuthority.init();
    const cert = await ca.issue(WEB);
    const der = splitPemCertificates(cert.certChainPem)[0]!;
    expect(identityFromCertificate(der).equals(WEB)).toBe(true);
    expect(identityFromCertificate(new X509Certificate(der)).equals(WEB)).toBe(true);
  });

  it('accepts DNS SANs next to the one URI (the CA server certificate) but rejects a root with no URI', async () => {
    const ca = await CertificateAuthority.init();
    const serving = await ca.issue(WEB, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    const der = splitPemCertificates(serving.certChainPem)[0]!;
    expect(identityFromCertificate(der).equals(WEB)).toBe(true);
    const root = splitPemCertificates(ca.trustBundlePem)[0]!;
    expect(() => identityFromCertificate(root)).toThrow(IdentityError);
    expect(() => identityFromCertificate(root)).toThrow(/no subjectAltName/);
    expect(() => identityFromCertificate(Buffer.from('nope'))).toThrow(/not valid DER/);
  });
});

describe('identityFromCertificate is strict', () => {
  it.each([
    [
      'two URI SANs',
      [
        { type: 'url', value: 'spiffe://cluster.local/ns/a/sa/b' },
        { type: 'url', value: 'spiffe://cluster.local/ns/a/sa/c' },
      ],
      /2 URI SANs/,
    ],
    ['a non-SPIFFE URI', [{ type: 'url', value: 'https://example.com/' }], /scheme must be "spiffe"/],
    ['a SPIFFE URI with a bad path', [{ type: 'url', value: 'spiffe://cluster.local/ns/a' }], /path must be/],
    ['only a DNS name', [{ type: 'dns', value: 'web.example.com' }], /no URI SAN/],
    ['no SAN', [], /no subjectAltName/],
  ] as const)('rejects a certificate with %s', async (_n, sans, reason) => {
    const der = await certWithSans([...sans]);
    expect(() => identityFromCertificate(der)).toThrow(IdentityError);
    expect(() => identityFromCertificate(der)).toThrow(reason);
  });

  it('reads IPv4 and IPv6 SANs next to the URI without confusing them', async () => {
    const der = await certWithSans([
      { type: 'ip', value: '10.1.2.3' },
      { type: 'ip', value: '2001:db8::1' },
      { type: 'url', value: 'spiffe://cluster.local/ns/a/sa/b' },
    ]);
    expect(identityFromCertificate(der).toString()).toBe('spiffe://cluster.local/ns/a/sa/b');
  });
});

describe('normalizeSerial', () => {
  it('compares serials regardless of case, padding and colons', () => {
    expect(normalizeSerial('00AB:CD')).toBe('abcd');
    expect(normalizeSerial('0x0abc')).toBe('abc');
    expect(() => normalizeSerial('xyz')).toThrow(/not hexadecimal/);
  });
});
