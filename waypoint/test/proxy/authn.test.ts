// RequestAuthentication and AuthorizationPolicy on tokens through a real waypoint: a JWT verified
// by the waypoint (RS256, inline jwks), its subject and claims read by an ALLOW policy.
import net from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  send,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const ISSUER = 'https://issuer.example';
let backend: Backend;
let tw: TestWaypoint;
const access = captureLog();
let key: Awaited<ReturnType<typeof generateKeyPair>>;

const token = (sub: string, claims: Record<string, unknown> = {}, exp = '1h') =>
  new SignJWT({ sub, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setAudience('reviews')
    .setIssuedAt()
    .setExpirationTime(exp)
    .sign(key.privateKey);

beforeAll(async () => {
  key = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(key.publicKey)), kid: 'k1', alg: 'RS256' };
  backend = await startBackend('reviews');
  tw = await startWaypoint(
    {
      services: [service('reviews', '10.96.7.1', [backend])],
      requestAuthentications: [
        {
          apiVersion: 'security.hypha.dev/v1',
          kind: 'RequestAuthentication',
          metadata: { name: 'jwt', namespace: 'shop' },
          spec: {
            targetRefs: [{ kind: 'Service', name: 'reviews' }],
            jwtRules: [
              {
                issuer: ISSUER,
                audiences: ['reviews'],
                jwks: JSON.stringify({ keys: [jwk] }),
                outputClaimToHeaders: [{ header: 'x-jwt-sub', claim: 'sub' }],
              },
            ],
          },
        },
      ],
      authorizationPolicies: [
        {
          apiVersion: 'security.hypha.dev/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'allow-alice-or-admins', namespace: 'shop' },
          spec: {
            targetRefs: [{ kind: 'Service', name: 'reviews' }],
            action: 'ALLOW',
            rules: [
              { from: [{ source: { requestPrincipals: ['https://issuer.example/alice'] } }] },
              {
                from: [{ source: { requestPrincipals: ['https://issuer.example/*'] } }],
                when: [{ key: 'request.auth.claims[groups]', values: ['admins'] }],
              },
            ],
          },
        },
      ],
    },
    { host: '10.96.7.1', port: 80 },
    { accessLog: access.logger },
  );
});

afterAll(async () => {
  await tw.close();
  await backend.close();
});

const bearer = async (t: Promise<string>) => ({ authorization: `Bearer ${await t}` });
const lineFor = (id: string) => access.lines.find((l) => l.x_request_id === id);

describe('requestPrincipals and claims through the waypoint', () => {
  it("lets alice's token through, without the token header and with her subject as x-jwt-sub", async () => {
    const before = backend.requests.length;
    const r = await send(tw.pool, '/reviews', { headers: await bearer(token('alice')) });
    expect(r.status).toBe(200);
    const seen = backend.requests[before]!;
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers['x-jwt-sub']).toBe('alice');
  });

  it("refuses bob's valid token with 403, and admits bob once his token says he is in admins", async () => {
    const bob = await send(tw.pool, '/reviews', { headers: await bearer(token('bob')) });
    expect(bob.status).toBe(403);
    expect(bob.body).toBe('RBAC: access denied');
    const admin = await send(tw.pool, '/reviews', {
      headers: await bearer(token('bob', { groups: ['admins'] })),
    });
    expect(admin.status).toBe(200);
  });

  it('refuses a request without a token with 403 (authentication passes it, authorization does not)', async () => {
    expect((await send(tw.pool, '/reviews')).status).toBe(403);
  });

  it('refuses an invalid token with 401, the reason in the body and access log, flag UAEX', async () => {
    const before = backend.requests.length;
    const r = await send(tw.pool, '/reviews', {
      headers: { ...(await bearer(token('alice', {}, '-1m'))), 'x-request-id': 'expired-1' },
    });
    expect(r.status).toBe(401);
    expect(r.body).toBe('Jwt is expired');
    expect(r.headers['www-authenticate']).toMatch(/^Bearer /);
    expect(backend.requests.length).toBe(before);
    const line = lineFor('expired-1');
    expect(line).toMatchObject({
      response_code: 401,
      response_flags: 'UAEX',
      authn_failure: 'Jwt is expired',
    });
  });
});

/** Sends a WebSocket upgrade request by hand and returns what the waypoint answers, up to close. */
function upgrade(authorization: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(tw.port, '127.0.0.1', () => {
      s.write(
        'GET /chat HTTP/1.1\r\nHost: reviews.shop.svc.cluster.local\r\nConnection: Upgrade\r\n' +
          `Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: ${authorization}\r\n\r\n`,
      );
    });
    let got = '';
    s.on('data', (d) => {
      got += d.toString();
    });
    s.once('close', () => resolve(got));
    s.once('error', reject);
  });
}

describe('upgrades (WebSocket) are authenticated too', () => {
  it('an invalid token gets 401 with the reason; a valid token of a subject the policy refuses gets 403', async () => {
    const expired = await upgrade(`Bearer ${await token('alice', {}, '-1m')}`);
    expect(expired).toMatch(/^HTTP\/1\.1 401 /);
    expect(expired).toContain('www-authenticate: Bearer');
    expect(expired).toMatch(/Jwt is expired$/);
    expect(await upgrade(`Bearer ${await token('bob')}`)).toMatch(/^HTTP\/1\.1 403 /);
  });
});
