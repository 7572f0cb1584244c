// `hypha ca serve --config kubernetes` as the CA Deployment runs it (the built CLI), against the
// stand-in API server: it stores a root, publishes the trust bundle, issues through TokenReview and
// stops cleanly on SIGTERM.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CaClient, type CaClientError, parseSpiffeId } from '@hypha/shared/identity';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedCaCluster, startKubeCa } from '../run-hypha.js';

const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));
const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');

describe('hypha ca serve --config kubernetes', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer();
    seedCaCluster(api);
  });
  afterAll(async () => {
    await api?.close();
  });

  it('serves certificates to agents and stops on SIGTERM', async () => {
    const ca = await startKubeCa(api.kubeconfigPath, 'hypha-system');
    const { child, url } = ca;
    expect(ca.log()).toMatch(/"root":"created"/);
    const cm = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'hypha-system') as unknown as {
      data: Record<string, string>;
    };
    const bundle = cm.data['root-cert.pem']!;
    const token = api.issueToken({
      namespace: 'hypha-system',
      serviceAccount: 'hypha-agent',
      audiences: ['hypha-ca'],
      pod: 'agent-1',
    });
    const client = new CaClient({ url, token, caTrustBundlePem: bundle, timeoutMs: 5000 });
    try {
      expect((await client.fetchWorkloadCertificate(WEB)).id.equals(WEB)).toBe(true);
      const other = new CaClient({ url, token: 'x'.repeat(40), caTrustBundlePem: bundle, timeoutMs: 5000 });
      const err = await other.fetchWorkloadCertificate(WEB).catch((e: unknown) => e);
      other.close();
      expect((err as CaClientError).code).toBe('CA_UNAUTHENTICATED');
    } finally {
      client.close();
    }
    // Its /metrics (plain HTTP, --metrics-address) counts both requests and has the heap figures.
    const metricsAt = /"metrics":"([^"]+)"/.exec(ca.log())?.[1];
    expect(metricsAt, ca.log()).toBeDefined();
    const metrics = await (await fetch(`http://${metricsAt}/metrics`)).text();
    expect(metrics).toMatch(/^hypha_ca_certificates_issued_total 1$/m);
    expect(metrics).toMatch(/^hypha_ca_requests_rejected_total 1$/m);
    expect(metrics).toMatch(/^nodejs_heap_size_used_bytes \d+/m);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('file mode still requires its files, with a usage error naming them', async () => {
    const child = spawn(process.execPath, [BIN, 'ca', 'serve', '--dir', '/nonexistent'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).toBe(2);
    expect(err).toMatch(/file mode needs --tokens, --pods/);
  });
});
