// Filter 2 alone: RequestAuthentication. Tokens are signed here with jose (RS256 and ES256); the
// remote key sets are served by a local HTTP JWKS server; the clocks (token time, cache intervals)
// are driven by the test, never slept on.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwksCache } from '../../src/authn/jwks.js';
import { authnFilter } from '../../src/pipeline/authn.js';
import type { Outcome, RequestContext } from '../../src/pipeline/context.js';
import { requestOf, snapshotOf, svc } from './fixtures.js';

const ISSUER = 'https://issuer.example';
const NOW = Date.UTC(2026, 0, 1) / 1000; // token clock, seconds

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
let rsa: KeyPair;
let ec: KeyPair;
let other: KeyPair;
let rsaJwk: JWK;
let ecJwk: JWK;
let otherJwk: JWK;

async function jwkOf(k: KeyPair, kid: string, alg: string): Promise<JWK> {
  return { ...(await exportJWK(k.publicKey)), kid, alg, use: 'sig' };
}

function sign(
  key: KeyPair,
  kid: string,
  alg: 'RS256' | 'ES256',
  claims: JWTPayload = {},
  over: { iss?: string; aud?: string; exp?: number; nbf?: number } = {},
): Promise<string> {
  return new SignJWT({ sub: 'alice', groups: ['admins'], ...claims })
    .setProtectedHeader({ alg, kid })
    .setIssuer(over.iss ?? ISSUER)
    .setAudience(over.aud ?? 'reviews')
    .setIssuedAt(NOW - 60)
    .setNotBefore(over.nbf ?? NOW - 60)
    .setExpirationTime(over.exp ?? NOW + 3600)
    .sign(key.privateKey);
}

/** A JWKS server whose key set and availability the test changes. */
let jwksServer: http.Server;
let served: { keys: JWK[] } = { keys: [] };
let jwksUp = true;
let jwksHits = 0;
let jwksUri = '';

beforeAll(async () => {
  rsa = await generateKeyPair('RS256');
  ec = await generateKeyPair('ES256');
  other = await generateKeyPair('RS256');
  rsaJwk = await jwkOf(rsa, 'rsa-1', 'RS256');
  ecJwk = await jwkOf(ec, 'ec-1', 'ES256');
  otherJwk = await jwkOf(other, 'rsa-2', 'RS256');
  jwksServer = http.createServer((_req, res) => {
    jwksHits++;
    if (!jwksUp) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(served));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
});

afterAll(() => new Promise<void>((r) => jwksServer.close(() => r())));

const requestAuthn = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'RequestAuthentication',
  metadata: { name, namespace: 'shop' },
  spec: { targetRefs: [{ kind: 'Service', name: 'reviews' }], ...spec },
});

function snapWith(rule: Record<string, unknown>) {
  return snapshotOf({
    services: [svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }])],
    requestAuthentications: [
      requestAuthn('jwt', { jwtRules: [{ issuer: ISSUER, audiences: ['reviews'], ...rule }] }),
    ],
  });
}

const inline = () => snapWith({ jwks: JSON.stringify({ keys: [rsaJwk, ecJwk] }) });

/** Runs the filter; `seen` is the context `next` got (undefined when the filter answered). */
async function run(
  snap: ReturnType<typeof snapshotOf>,
  headers: Record<string, string>,
  opts: { url?: string; jwks?: JwksCache; nowMs?: number } = {},
): Promise<{ out: Outcome; status: number; seen: RequestContext | undefined; rc: RequestContext }> {
  const { rc } = requestOf(snap, { headers, url: opts.url ?? '/' });
  let seen: RequestContext | undefined;
  const filter = authnFilter({ jwks: opts.jwks ?? new JwksCache(), now: () => opts.nowMs ?? NOW * 1000 });
  const out = await filter.run(rc, (r) => {
    seen = r;
    return { kind: 'local', status: 200, body: 'next' };
  });
  return { out, status: out.kind === 'local' ? out.status : -1, seen, rc };
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('authn filter: inline jwks', () => {
  it.each([
    ['RS256', () => sign(rsa, 'rsa-1', 'RS256')],
    ['ES256', () => sign(ec, 'ec-1', 'ES256')],
  ])(
    'a valid %s token passes with its principal and claims on the request; the header is removed',
    async (_alg, make) => {
      const { out, seen } = await run(inline(), bearer(await make()));
      expect(out).toMatchObject({ status: 200, body: 'next' });
      expect(seen?.auth).toMatchObject({
        principal: 'https://issuer.example/alice',
        audiences: ['reviews'],
        claims: { groups: ['admins'] },
      });
      expect(seen?.headers.authorization).toBeUndefined();
    },
  );

  it('a request without a token passes, with no principal (authorization decides)', async () => {
    const { out, seen } = await run(inline(), {});
    expect(out).toMatchObject({ status: 200 });
    expect(seen?.auth).toBeUndefined();
  });

  it.each([
    ['expired', { exp: NOW - 10 }, 'Jwt is expired'],
    ['not yet valid', { nbf: NOW + 600 }, 'Jwt not yet valid'],
    ['from another issuer', { iss: 'https://evil.example' }, 'Jwt issuer is not configured'],
    ['for another audience', { aud: 'payments' }, 'Audiences in Jwt are not allowed'],
  ])('a token %s gets 401 with the reason, flag UAEX', async (_what, over, reason) => {
    const { out, seen, rc } = await run(inline(), bearer(await sign(rsa, 'rsa-1', 'RS256', {}, over)));
    expect(seen).toBeUndefined();
    expect(out).toMatchObject({ kind: 'local', status: 401, body: reason, flag: 'UAEX' });
    expect(rc.authnFailure).toBe(reason);
  });

  it('a token signed by another key (bad signature) gets 401 Jwt verification fails', async () => {
    // Same kid as the configured key, other private key.
    const forged = await sign(other, 'rsa-1', 'RS256');
    const { out } = await run(inline(), bearer(forged));
    expect(out).toMatchObject({ status: 401, body: 'Jwt verification fails' });
    const good = await sign(rsa, 'rsa-1', 'RS256');
    const [h, p] = good.split('.');
    const tampered = `${h}.${p}.${forged.split('.')[2]}`;
    expect((await run(inline(), bearer(tampered))).out).toMatchObject({
      status: 401,
      body: 'Jwt verification fails',
    });
  });

  it('garbage in the header gets 401', async () => {
    expect((await run(inline(), bearer('not-a-jwt'))).out).toMatchObject({
      status: 401,
      body: 'Jwt is not in the form of Header.Payload.Signature',
    });
  });

  it('fromHeaders, fromParams, forwardOriginalToken and outputClaimToHeaders', async () => {
    const snap = snapWith({
      jwks: JSON.stringify({ keys: [rsaJwk] }),
      fromHeaders: [{ name: 'x-jwt' }],
      fromParams: ['access_token'],
      forwardOriginalToken: true,
      outputClaimToHeaders: [
        { header: 'x-sub', claim: 'sub' },
        { header: 'x-groups', claim: 'groups' },
      ],
    });
    const token = await sign(rsa, 'rsa-1', 'RS256');
    const fromHeader = await run(snap, { 'x-jwt': token });
    expect(fromHeader.seen?.headers['x-jwt']).toBe(token);
    expect(fromHeader.seen?.headers['x-sub']).toBe('alice');
    expect(fromHeader.seen?.headers['x-groups']).toBe('["admins"]');
    const fromParam = await run(snap, {}, { url: `/items?access_token=${token}` });
    expect(fromParam.seen?.auth?.principal).toBe('https://issuer.example/alice');
    // Authorization: Bearer is not read when fromHeaders is set.
    expect((await run(snap, bearer(token))).seen?.auth).toBeUndefined();
  });
});

describe('authn filter: jwksUri', () => {
  it('fetches once and caches; rotation: an unknown kid triggers one refresh, then verifies', async () => {
    served = { keys: [rsaJwk] };
    jwksUp = true;
    jwksHits = 0;
    let t = 0;
    const jwks = new JwksCache({ now: () => t, retryDelayMs: 0 });
    const snap = snapWith({ jwksUri });
    expect((await run(snap, bearer(await sign(rsa, 'rsa-1', 'RS256')), { jwks })).status).toBe(200);
    expect((await run(snap, bearer(await sign(rsa, 'rsa-1', 'RS256')), { jwks })).status).toBe(200);
    expect(jwksHits).toBe(1);
    // The issuer rotates to a new key: the first token with the new kid refetches the set.
    served = { keys: [rsaJwk, otherJwk] };
    t = 1000;
    expect((await run(snap, bearer(await sign(other, 'rsa-2', 'RS256')), { jwks })).status).toBe(200);
    expect(jwksHits).toBe(2);
  });

  it('an unknown kid triggers at most one refresh per interval, then 401', async () => {
    served = { keys: [rsaJwk] };
    jwksUp = true;
    jwksHits = 0;
    let t = 0;
    const jwks = new JwksCache({ now: () => t, kidRefreshIntervalMs: 60_000, retryDelayMs: 0 });
    const snap = snapWith({ jwksUri });
    const unknown = await sign(other, 'rsa-9', 'RS256');
    const first = await run(snap, bearer(unknown), { jwks });
    expect(first.out).toMatchObject({
      status: 401,
      body: "Jwks doesn't have key to match kid or alg from Jwt",
    });
    expect(jwksHits).toBe(2); // the first fetch, and one refresh for the unknown kid
    t = 30_000;
    expect((await run(snap, bearer(unknown), { jwks })).status).toBe(401);
    expect(jwksHits).toBe(2); // within the interval: no refetch
    t = 61_000;
    expect((await run(snap, bearer(unknown), { jwks })).status).toBe(401);
    expect(jwksHits).toBe(3);
  });

  it('the JWKS server down: the last good keys stay in use after a failed periodic refresh (bounded retry)', async () => {
    served = { keys: [ecJwk] };
    jwksUp = true;
    jwksHits = 0;
    let t = 0;
    const failures: string[] = [];
    const jwks = new JwksCache({
      now: () => t,
      refreshIntervalMs: 300_000,
      attempts: 3,
      retryDelayMs: 0,
      onFetchError: (_uri, err) => failures.push(err.message),
    });
    const snap = snapWith({ jwksUri });
    const token = await sign(ec, 'ec-1', 'ES256');
    expect((await run(snap, bearer(token), { jwks })).status).toBe(200);
    jwksUp = false;
    t = 301_000; // stale: refresh, every try fails
    expect((await run(snap, bearer(token), { jwks })).status).toBe(200);
    expect(jwksHits).toBe(1 + 3);
    expect(failures).toEqual([expect.stringContaining('HTTP 503')]);
    // The failed refresh waits a full interval before the next.
    t = 302_000;
    expect((await run(snap, bearer(token), { jwks })).status).toBe(200);
    expect(jwksHits).toBe(4);
  });

  it('with no key set ever fetched, a token gets 401', async () => {
    jwksUp = false;
    const jwks = new JwksCache({ now: () => 0, attempts: 2, retryDelayMs: 0 });
    const { out } = await run(snapWith({ jwksUri }), bearer(await sign(rsa, 'rsa-1', 'RS256')), { jwks });
    expect(out).toMatchObject({ status: 401, body: 'Jwks remote fetch is failed' });
    jwksUp = true;
  });
});

describe('RequestAuthentication config', () => {
  it('a selector policy is the agents’ form and compiles to nothing at the waypoint', () => {
    const snap = snapshotOf({
      services: [svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }])],
      requestAuthentications: [
        {
          kind: 'RequestAuthentication',
          metadata: { name: 's', namespace: 'shop' },
          spec: {
            selector: { matchLabels: { app: 'reviews' } },
            jwtRules: [{ issuer: ISSUER, jwksUri: 'http://x/' }],
          },
        },
      ],
    });
    expect(snap.authn.size).toBe(0);
  });

  it('rejects a bad inline jwks and a rule with both jwks and jwksUri, by field', () => {
    expect(() => snapWith({ jwks: '{not json' })).toThrow(
      /RequestAuthentication shop\/jwt: field spec\.jwtRules\[0\]\.jwks/,
    );
    expect(() => snapWith({ jwks: '{"keys":[]}', jwksUri: 'http://x/' })).toThrow(/spec\.jwtRules\[0\]/);
  });
});
