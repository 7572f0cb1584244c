// The CA server over real HTTPS on loopback.

import { appendFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { connect } from 'node:tls';
import {
  CaClientError,
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  parseSpiffeId,
  verifyChain,
} from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csrWithSans, tamperCsr } from '../../../shared/test/identity/helpers.js';
import { recordRevocation } from '../../src/ca/revocations.js';
import { type CaFixture, podYaml, startCaFixture, TOKEN_NODE1, TOKEN_NODE2 } from './fixtures.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const API = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api');

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
}

function call(
  f: CaFixture,
  method: string,
  path: string,
  opts: { token?: string; body?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    const req = request(`${f.url}${path}`, { method, headers, ca: f.ca.trustBundlePem }, (res) => {
      let text = '';
      res.on('data', (c) => {
        text += c;
      });
      res.on('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text);
        } catch {
          json = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function csrBody(csr: string, ttlSeconds?: number): Promise<string> {
  return JSON.stringify(ttlSeconds === undefined ? { csr } : { csr, ttlSeconds });
}

describe('CA server', () => {
  let f: CaFixture;
  beforeAll(async () => {
    f = await startCaFixture({ maxTtlSeconds: 3600 });
  });
  afterAll(async () => {
    await f.close();
  });

  it('issues a certificate to an agent for a pod on its node (happy path)', async () => {
    const keys = await generateKeyPair();
    const res = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: await csrBody(await createCsr(WEB, keys)),
    });
    expect(res.status).toBe(200);
    const { certChain, trustBundle } = res.json as { certChain: string[]; trustBundle: string[] };
    expect(certChain).toHaveLength(1);
    expect(trustBundle).toHaveLength(1);
    expect(certChain[0]).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(verifyChain(certChain.join(''), trustBundle.join(''))).toEqual({ ok: true, id: WEB });
    // Through the typed client too, which checks the answer itself.
    const cert = await f.client(TOKEN_NODE2).fetchWorkloadCertificate(API);
    expect(cert.id.equals(API)).toBe(true);
    expect(cert.keyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(cert.trustBundlePem).toBe(f.ca.trustBundlePem);
  });

  it('answers 401 without a token or with an unknown one', async () => {
    const body = await csrBody(await createCsr(WEB, await generateKeyPair()));
    const none = await call(f, 'POST', '/v1/certificates', { body });
    expect(none.status).toBe(401);
    expect(none.json.error).toBe('UNAUTHENTICATED');
    expect(none.json.message).toMatch(/Authorization: Bearer/);
    expect(none.headers['www-authenticate']).toMatch(/Bearer/);
    const bad = await call(f, 'POST', '/v1/certificates', { token: 'not-a-known-token-xxxxxxxx', body });
    expect(bad.status).toBe(401);
    expect(bad.json.message).toMatch(/unknown bearer token/);
    const err = await f
      .client('wrong-token-wrong-token-wrong')
      .fetchWorkloadCertificate(WEB)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaClientError);
    expect((err as CaClientError).code).toBe('CA_UNAUTHENTICATED');
    expect((err as CaClientError).retryable).toBe(false);
  });

  it('answers 403 when the identity belongs to a pod on another node', async () => {
    const res = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: await csrBody(await createCsr(API, await generateKeyPair())),
    });
    expect(res.status).toBe(403);
    expect(res.json.error).toBe('FORBIDDEN');
    expect(res.json.message).toMatch(/node "node-1" runs no pod with service account shop\/api/);
    const err = await f
      .client(TOKEN_NODE1)
      .fetchWorkloadCertificate(API)
      .catch((e: unknown) => e);
    expect((err as CaClientError).code).toBe('CA_FORBIDDEN');
  });

  it('follows the pods file: a pod scheduled later becomes obtainable', async () => {
    const late = parseSpiffeId('spiffe://cluster.local/ns/late/sa/worker');
    await expect(f.client(TOKEN_NODE1).fetchWorkloadCertificate(late)).rejects.toMatchObject({
      code: 'CA_FORBIDDEN',
    });
    await appendFile(f.podsFile, `---\n${podYaml('worker-1', 'late', 'worker', 'node-1')}`);
    const cert = await f.client(TOKEN_NODE1).fetchWorkloadCertificate(late);
    expect(cert.id.equals(late)).toBe(true);
  });

  it.each([
    ['a malformed CSR', async () => 'not a csr', 'CSR_MALFORMED', /not PEM/],
    [
      'a CSR with a bad signature',
      async () => tamperCsr(await createCsr(WEB, await generateKeyPair()), 'sa/web', 'sa/wex'),
      'CSR_BAD_SIGNATURE',
      /signature does not verify/,
    ],
    [
      'a CSR asking for a DNS SAN',
      async () => csrWithSans([{ type: 'dns', value: 'web.shop.svc.cluster.local' }]),
      'CSR_SAN_REJECTED',
      /DNS:web\.shop\.svc\.cluster\.local/,
    ],
    [
      'a CSR for another trust domain',
      async () => csrWithSans([{ type: 'url', value: 'spiffe://other.org/ns/shop/sa/web' }]),
      'TRUST_DOMAIN_MISMATCH',
      /trust domain "other\.org"/,
    ],
  ])('answers 400 with the reason for %s', async (_n, makeCsr, code, reason) => {
    const res = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: await csrBody(await makeCsr()),
    });
    expect(res.status).toBe(400);
    expect(res.json.error).toBe(code);
    expect(res.json.message).toMatch(reason);
  });

  it('answers 400 for a body that is not the expected JSON, and 413 for a huge one', async () => {
    const notJson = await call(f, 'POST', '/v1/certificates', { token: TOKEN_NODE1, body: 'csr=abc' });
    expect(notJson.status).toBe(400);
    expect(notJson.json.message).toMatch(/not JSON/);
    const noCsr = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: '{"ttlSeconds": 5}',
    });
    expect(noCsr.status).toBe(400);
    expect(noCsr.json.message).toMatch(/"csr"/);
    const huge = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: JSON.stringify({ csr: 'x'.repeat(200_000) }),
    });
    expect(huge.status).toBe(413);
    expect(huge.json.error).toBe('BODY_TOO_LARGE');
  });

  it('clamps a TTL above the maximum to the maximum', async () => {
    const keys = await generateKeyPair();
    const res = await call(f, 'POST', '/v1/certificates', {
      token: TOKEN_NODE1,
      body: await csrBody(await createCsr(WEB, keys), 7 * 86400),
    });
    expect(res.status).toBe(200);
    const ttl = (Date.parse(res.json.notAfter as string) - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
    const short = await f.client().fetchCertificate(WEB, keys, { ttlSeconds: 600 });
    expect((short.notAfter.getTime() - Date.now()) / 1000).toBeLessThanOrEqual(600);
  });

  it('lists revoked serials and identities, and refuses to issue a revoked identity', async () => {
    const before = await call(f, 'GET', '/v1/revocations');
    expect(before.status).toBe(200);
    const v0 = before.json.version as number;
    const cert = await f.client().fetchWorkloadCertificate(WEB);
    await recordRevocation(join(f.dir, 'ca'), { serial: cert.serial });
    const after = await f.client().fetchRevocations();
    expect(after.version).toBe(v0 + 1);
    expect(after.serials).toContain(cert.serial);

    const revokedId = parseSpiffeId('spiffe://cluster.local/ns/late2/sa/gone');
    await appendFile(f.podsFile, `---\n${podYaml('gone-1', 'late2', 'gone', 'node-1')}`);
    await f.client().fetchWorkloadCertificate(revokedId);
    await recordRevocation(join(f.dir, 'ca'), { id: revokedId });
    const list = await f.client().fetchRevocations();
    expect(list.ids).toContain(revokedId.toString());
    const err = await f
      .client()
      .fetchWorkloadCertificate(revokedId)
      .catch((e: unknown) => e);
    expect((err as CaClientError).code).toBe('CA_FORBIDDEN');
    expect((err as CaClientError).serverCode).toBe('IDENTITY_REVOKED');
  });

  it('answers 404 and 405 with JSON errors', async () => {
    expect((await call(f, 'GET', '/v1/nope')).status).toBe(404);
    const wrongMethod = await call(f, 'GET', '/v1/certificates', { token: TOKEN_NODE1 });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.json.error).toBe('METHOD_NOT_ALLOWED');
  });

  it('presents a certificate for its own SPIFFE id, which the client checks', async () => {
    expect(f.server.serverId.toString()).toBe('spiffe://cluster.local/ns/hypha-system/sa/hypha-ca');
    const { CaClient } = await import('@hypha/shared/identity');
    const otherRoot = await CertificateAuthority.init();
    const wrongRoot = new CaClient({
      url: f.url,
      token: TOKEN_NODE1,
      caTrustBundlePem: otherRoot.trustBundlePem,
    });
    const e1 = await wrongRoot.fetchWorkloadCertificate(WEB).catch((e: unknown) => e);
    wrongRoot.close();
    expect((e1 as CaClientError).code).toBe('CA_SERVER_IDENTITY');
    expect((e1 as Error).message).toMatch(/does not verify against the configured root/);
    const wrongId = new CaClient({
      url: f.url,
      token: TOKEN_NODE1,
      caTrustBundlePem: f.ca.trustBundlePem,
      caId: WEB,
    });
    const e2 = await wrongId.fetchWorkloadCertificate(WEB).catch((e: unknown) => e);
    wrongId.close();
    expect((e2 as CaClientError).code).toBe('CA_SERVER_IDENTITY');
    expect((e2 as Error).message).toMatch(
      /presented spiffe:\/\/cluster\.local\/ns\/hypha-system\/sa\/hypha-ca/,
    );
  });
});

describe('CA client failures', () => {
  it('reports an unreachable CA as retryable CA_UNREACHABLE', async () => {
    const f = await startCaFixture();
    const client = f.client();
    await f.close();
    const err = await client.fetchWorkloadCertificate(WEB).catch((e: unknown) => e);
    expect((err as CaClientError).code).toBe('CA_UNREACHABLE');
    expect((err as CaClientError).retryable).toBe(true);
    expect((err as Error).message).toMatch(/cannot reach the CA/);
  });

  it('cuts off a client that never finishes its request headers', async () => {
    const f = await startCaFixture({ requestTimeoutMs: 1000 });
    try {
      const closedAfter = await new Promise<number>((resolve, reject) => {
        const sock = connect({
          host: '127.0.0.1',
          port: f.server.address.port,
          ca: f.ca.trustBundlePem,
          servername: 'localhost',
        });
        const t0 = Date.now();
        sock.on('secureConnect', () => sock.write('POST /v1/certificates HTTP/1.1\r\nHost: x\r\n'));
        sock.on('data', () => {});
        sock.on('close', () => resolve(Date.now() - t0));
        sock.on('error', reject);
        setTimeout(() => reject(new Error('server kept the stalled connection open')), 8000).unref();
      });
      expect(closedAfter).toBeGreaterThanOrEqual(900);
      expect(closedAfter).toBeLessThan(5000);
    } finally {
      await f.close();
    }
  });

  it('closes gracefully while idle keep-alive connections are open', async () => {
    const f = await startCaFixture();
    await f.client().fetchWorkloadCertificate(WEB);
    const t0 = Date.now();
    await f.close();
    expect(Date.now() - t0).toBeLessThan(1500);
  });
});
