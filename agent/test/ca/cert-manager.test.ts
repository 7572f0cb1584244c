// The certificate manager against a real CA server: renewal, the CA going away, and coming back.

import { join } from 'node:path';
import { CaClient, CertManager, parseSpiffeId, verifyChain } from '@hypha/shared/identity';
import { afterEach, describe, expect, it } from 'vitest';
import { PodFileNodeAuthorizer, StaticTokenAuthenticator } from '../../src/ca/auth.js';
import { CaServer } from '../../src/ca/server.js';
import { type CaFixture, startCaFixture, TOKEN_NODE1 } from './fixtures.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');

async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 8000): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('CertManager with a real CA server', () => {
  let f: CaFixture | undefined;
  let restarted: CaServer | undefined;
  let manager: CertManager | undefined;
  afterEach(async () => {
    manager?.close();
    await restarted?.close(500);
    await f?.close();
  });

  it('renews at half life, keeps the old certificate while the CA is down, and recovers when it returns', async () => {
    f = await startCaFixture();
    const port = f.server.address.port;
    const client = new CaClient({
      url: f.url,
      token: TOKEN_NODE1,
      caTrustBundlePem: f.ca.trustBundlePem,
      timeoutMs: 1000,
    });
    manager = new CertManager({
      provider: (id) => client.fetchWorkloadCertificate(id, { ttlSeconds: 4 }),
      initialBackoffMs: 100,
      maxBackoffMs: 400,
    });
    const first = await manager.fetchCertificate(WEB);
    expect(verifyChain(first.certChainPem, first.trustBundlePem).ok).toBe(true);
    const t0 = Date.now();

    // Renewal at ~2 s (half of 4 s, jitter ≤ 10 %).
    const second = await waitFor('renewal', () => {
      const c = manager!.findCertificate(WEB);
      return c && c.serial !== first.serial ? c : undefined;
    });
    // Half of the life left at receipt (jittered), so well after the start and before expiry. The
    // bounds are loose because a loaded machine delays both the issuing and the timers.
    const renewedAt = Date.now();
    expect(renewedAt - t0).toBeGreaterThan(1000);
    expect(renewedAt).toBeLessThan(first.notAfter.getTime());

    // CA down: renewal fails, the current certificate stays in use.
    await f.server.close(200);
    await waitFor('a failed renewal', () =>
      manager!.listCertificates()[0]!.failures >= 2 ? true : undefined,
    );
    const status = manager.listCertificates()[0]!;
    expect(status.lastError).toMatch(/cannot reach the CA|CA answered|socket hang up|ECONN/);
    expect(manager.findCertificate(WEB)?.serial).toBe(second.serial);

    // CA back on the same address: the next retry gets a fresh certificate.
    restarted = await CaServer.create({
      ca: f.ca,
      authenticator: await StaticTokenAuthenticator.fromFile(join(f.dir, 'tokens.yaml')),
      authorizer: await PodFileNodeAuthorizer.fromPath(f.podsFile),
      host: '127.0.0.1',
      port,
    });
    await restarted.start();
    const third = await waitFor('recovery', () => {
      const c = manager!.findCertificate(WEB);
      return c && c.serial !== second.serial ? c : undefined;
    });
    expect(verifyChain(third.certChainPem, third.trustBundlePem)).toEqual({ ok: true, id: WEB });
    expect(manager.listCertificates()[0]).toMatchObject({ failures: 0, state: 'ready' });
    client.close();
  });
});
