// Everything HBONE must refuse, checked over real TLS on loopback.

import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { connect as tlsConnect } from 'node:tls';
import { HBONE_CHANNELS, type HboneError } from '@hypha/shared/hbone';
import { CertificateAuthority, joinPem, SpiffeId, type WorkloadCertificate } from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  type RunningServer,
  rawH2Client,
  rawRequest,
  sleep,
  startEcho,
  startHboneServer,
} from './fixtures.js';

let mesh: Mesh;
let echo: Awaited<ReturnType<typeof startEcho>>;
let hbone: RunningServer;
let handled = 0;
const revoked = new Set<string>();
const refusals: { code: string; message: string }[] = [];
const onRefused = (m: unknown): void => {
  refusals.push(m as { code: string; message: string });
};

beforeAll(async () => {
  mesh = await createMesh();
  echo = await startEcho();
  hbone = await startHboneServer(mesh.server, {
    isRevoked: (peer) => revoked.has(peer.serial),
    handler: async (req) => {
      handled += 1;
      const { tcpHandler } = await import('./fixtures.js');
      return tcpHandler(req);
    },
  });
  subscribe(HBONE_CHANNELS.refused, onRefused);
});
afterAll(async () => {
  unsubscribe(HBONE_CHANNELS.refused, onRefused);
  await hbone.close();
  await closeServer(echo.server);
});

async function connectWith(source: WorkloadCertificate, expected = [mesh.serverId], port = hbone.port) {
  const pool = newPool({ connectTimeoutMs: 3000 });
  try {
    const t = await pool.connect({
      source,
      destination: { ip: '127.0.0.1', port },
      expectedIdentities: expected,
      authority: `127.0.0.1:${echo.port}`,
    });
    t.stream.end();
    return t;
  } finally {
    pool.close();
  }
}

async function refusal(p: Promise<unknown>): Promise<HboneError> {
  const err = await p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: unknown) => e,
  );
  return err as HboneError;
}

function lastRefusal(): string {
  return refusals.at(-1)?.message ?? '';
}

describe('client-side identity checks', () => {
  test('a server presenting an unexpected identity is refused before any stream', async () => {
    const before = handled;
    const err = await refusal(connectWith(mesh.client, [SpiffeId.of('cluster.local', 'shop', 'payments')]));
    expect(err.code).toBe('IDENTITY_ERROR');
    expect(err.message).toContain('presented spiffe://cluster.local/ns/shop/sa/db');
    expect(err.message).toContain('expected spiffe://cluster.local/ns/shop/sa/payments');
    expect(handled).toBe(before);
  });

  test('a server certificate from another root is refused', async () => {
    const other = await CertificateAuthority.init();
    const rogue = await startHboneServer(await other.issue(mesh.serverId));
    try {
      const err = await refusal(connectWith(mesh.client, [mesh.serverId], rogue.port));
      expect(err.code).toBe('TLS_FAILURE');
      expect(err.message).toMatch(/TLS handshake failed/);
    } finally {
      await rogue.close();
    }
  });
});

describe('server-side client checks', () => {
  test('works for a good client (control)', async () => {
    const t = await connectWith(mesh.client);
    expect(String(t.peer)).toBe(String(mesh.serverId));
  });

  test('a client certificate from another root is refused', async () => {
    const other = await CertificateAuthority.init();
    const err = await refusal(connectWith(await other.issue(mesh.clientId)));
    expect(err.code).toBe('TLS_FAILURE');
    expect(err.message).toMatch(/refused our client certificate|TLS handshake failed/);
  });

  test('an expired client certificate is refused', async () => {
    const short = await mesh.ca.issue(mesh.clientId, { ttlSeconds: 1 });
    await sleep(Math.max(0, short.notAfter.getTime() - Date.now()) + 1100);
    const err = await refusal(connectWith(short));
    expect(err.code).toBe('TLS_FAILURE');
  });

  test('a client from another trust domain is refused even when its root is trusted', async () => {
    const foreignCa = await CertificateAuthority.init({ trustDomain: 'partner.example' });
    const foreign = await foreignCa.issue(SpiffeId.of('partner.example', 'shop', 'web'));
    // A server that trusts both roots (a federated bundle) still requires its own trust domain.
    const bundle = joinPem([mesh.server.trustBundlePem, foreignCa.trustBundlePem]);
    const federated = await startHboneServer({ ...mesh.server, trustBundlePem: bundle });
    try {
      const err = await refusal(
        connectWith({ ...foreign, trustBundlePem: bundle }, [mesh.serverId], federated.port),
      );
      expect(err.code).toBe('TLS_FAILURE');
      expect(lastRefusal()).toContain('is not in trust domain "cluster.local"');
    } finally {
      await federated.close();
    }
  });

  test('a revoked client serial is refused', async () => {
    const doomed = await mesh.ca.issue(mesh.clientId);
    revoked.add(doomed.serial);
    const err = await refusal(connectWith(doomed));
    expect(err.code).toBe('TLS_FAILURE');
    expect(lastRefusal()).toContain(`serial ${doomed.serial}`);
    expect(lastRefusal()).toContain('revoked');
  });

  test('revoking a serial closes live connections that used it', async () => {
    const cert = await mesh.ca.issue(mesh.clientId);
    const pool = newPool();
    try {
      const t = await pool.connect({
        source: cert,
        destination: { ip: '127.0.0.1', port: hbone.port },
        expectedIdentities: [mesh.serverId],
        authority: `127.0.0.1:${echo.port}`,
      });
      t.stream.on('error', () => {});
      const closed = new Promise((r) => t.stream.once('close', r));
      expect(hbone.server.enforceRevocations()).toBe(0);
      revoked.add(cert.serial);
      expect(hbone.server.enforceRevocations()).toBe(1);
      await closed;
      expect(t.stream.rstCode).not.toBe(0);
    } finally {
      pool.close();
    }
  });

  test('a client without a certificate gets no HTTP/2 session', async () => {
    const before = hbone.server.stats().handshakesCompleted;
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: hbone.port,
      ca: mesh.server.trustBundlePem,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    let bytes = 0;
    const ended = await new Promise<string>((resolve) => {
      socket.on('data', (d: Buffer) => {
        bytes += d.length;
      });
      socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      socket.on('close', () => resolve('closed'));
    });
    expect(ended).toMatch(/CERTIFICATE_REQUIRED|closed|ECONNRESET/);
    expect(bytes).toBe(0);
    expect(hbone.server.stats().handshakesCompleted).toBe(before);
  });
});

describe('stream-level refusals (400)', () => {
  test('a non-CONNECT method gets 400', async () => {
    const s = rawH2Client(hbone.port, mesh.client);
    try {
      const before = handled;
      expect(await rawRequest(s, { ':method': 'GET', ':path': '/', ':scheme': 'https' })).toEqual({
        status: 400,
      });
      expect(lastRefusal()).toContain('only CONNECT');
      expect(handled).toBe(before);
    } finally {
      s.destroy();
    }
  });

  test.each(['example.com:80', '127.0.0.1', '127.0.0.1:0', '[::1:80'])(
    'authority %j gets 400',
    async (authority) => {
      const s = rawH2Client(hbone.port, mesh.client);
      try {
        const before = handled;
        expect(await rawRequest(s, { ':method': 'CONNECT', ':authority': authority })).toEqual({
          status: 400,
        });
        expect(handled).toBe(before);
      } finally {
        s.destroy();
      }
    },
  );

  test('malformed metadata headers get 400', async () => {
    const s = rawH2Client(hbone.port, mesh.client);
    try {
      const base = { ':method': 'CONNECT', ':authority': `127.0.0.1:${echo.port}` };
      expect(await rawRequest(s, { ...base, traceparent: 'nonsense' })).toEqual({ status: 400 });
      expect(await rawRequest(s, { ...base, forwarded: 'for=a, for=b' })).toEqual({ status: 400 });
      expect(await rawRequest(s, { ...base, baggage: 'no-equals-sign' })).toEqual({ status: 400 });
    } finally {
      s.destroy();
    }
  });

  test('headers above 64 KiB never reach the handler', async () => {
    const s = rawH2Client(hbone.port, mesh.client);
    try {
      const before = handled;
      const result = await rawRequest(s, {
        ':method': 'CONNECT',
        ':authority': `127.0.0.1:${echo.port}`,
        'x-big': 'a'.repeat(70 * 1024),
      });
      expect(result.status).not.toBe(200);
      expect(handled).toBe(before);
      // The same client can still open a normal tunnel afterwards on a fresh session.
      const t = await connectWith(mesh.client);
      expect(String(t.peer)).toBe(String(mesh.serverId));
    } finally {
      s.destroy();
    }
  });
});
