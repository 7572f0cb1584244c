// Request authentication, authorization on tokens, local rate limits and dry-run policies through a
// real waypoint in the namespace cluster (issue 15). The key set is served by an identity provider
// pod in the cluster (namespace idp, outside the mesh): the waypoint fetches it over the fabric,
// follows its rotation and keeps the last good keys while it is down.
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterPod, RunningApp } from '@hypha/test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWaypointScenario, until, type WaypointScenario } from './waypoint-fixture.js';

const ISSUER = 'https://idp.example';
type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

let s: WaypointScenario;
let dir: string;
let jwksFile: string;
let idp: ClusterPod;
let idpApp: RunningApp;
let k1: KeyPair;
let k2: KeyPair;

const jwkOf = async (k: KeyPair, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: 'ES256' });
const serveKeys = async (...keys: [KeyPair, string][]) =>
  writeFile(jwksFile, JSON.stringify({ keys: await Promise.all(keys.map(([k, kid]) => jwkOf(k, kid))) }));

const token = (
  key: KeyPair,
  kid: string,
  sub: string,
  o: { claims?: object; exp?: string; aud?: string } = {},
) =>
  new SignJWT({ sub, ...o.claims })
    .setProtectedHeader({ alg: 'ES256', kid })
    .setIssuer(ISSUER)
    .setAudience(o.aud ?? 'echo')
    .setIssuedAt()
    .setExpirationTime(o.exp ?? '1h')
    .sign(key.privateKey);

interface Reply {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  error?: string;
}

let callers = 0;
/**
 * GETs from the client pod, `n` times in a row; the replies in order. Each call is its own caller
 * for the rate limit (header x-user) unless `headers` names one.
 */
async function get(path: string, headers: Record<string, string> = {}, n = 1): Promise<Reply[]> {
  const url = `http://${s.vips.echo}${path}`;
  const h = { 'x-user': `caller-${++callers}`, ...headers };
  const script = `(async()=>{const out=[];for(let i=0;i<${n};i++){try{const r=await fetch(${JSON.stringify(url)},{headers:${JSON.stringify(h)}});out.push({status:r.status,headers:Object.fromEntries(r.headers),body:(await r.text()).slice(0,300)})}catch(e){out.push({error:String(e.cause?.code??e.message)})}}process.stdout.write(JSON.stringify(out))})()`;
  return JSON.parse(await s.runInClient(script)) as Reply[];
}
const status = async (path: string, headers: Record<string, string> = {}) =>
  (await get(path, headers))[0]!.status;
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

/** Sum of the waypoint's samples of `name` carrying every label in `labels` (in any order). */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = await s.mesh.fetchInNode('node-b', `http://${s.waypoint.pod.ip}:15020/metrics`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      sum += Number(line.split(' ').pop());
  }
  return sum;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-authn-'));
  jwksFile = join(dir, 'jwks.json');
  [k1, k2] = await Promise.all([generateKeyPair('ES256'), generateKeyPair('ES256')]);
  await serveKeys([k1, 'k1']);
  s = await startWaypointScenario();
  idp = await s.mesh.addPod('node-a', 'idp', 'idp');
  idpApp = await s.mesh.cluster.startApp(idp, 'static-http', ['--port', '8080', '--file', jwksFile]);
  await s.setExtra([
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'RequestAuthentication',
      metadata: { name: 'idp', namespace: 'demo' },
      spec: {
        targetRefs: [{ kind: 'Service', name: 'echo' }],
        jwtRules: [{ issuer: ISSUER, audiences: ['echo'], jwksUri: `http://${idp.ip}:8080/jwks.json` }],
      },
    },
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'token-holders', namespace: 'demo' },
      spec: {
        targetRefs: [{ kind: 'Service', name: 'echo' }],
        action: 'ALLOW',
        rules: [
          { to: [{ operation: { paths: ['/public/*'] } }] },
          { from: [{ source: { requestPrincipals: [`${ISSUER}/alice`] } }] },
          {
            from: [{ source: { requestPrincipals: [`${ISSUER}/*`] } }],
            when: [{ key: 'request.auth.claims[groups]', values: ['admins'] }],
          },
        ],
      },
    },
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'deny-beta', namespace: 'demo', annotations: { 'istio.io/dry-run': 'true' } },
      spec: {
        targetRefs: [{ kind: 'Service', name: 'echo' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/public/beta'] } }] }],
      },
    },
    {
      apiVersion: 'traffic.hypha.dev/v1alpha1',
      kind: 'TrafficPolicy',
      metadata: { name: 'echo-limits', namespace: 'demo' },
      // 3 requests per caller (header x-user), then one more a minute: the test sees the refusals.
      spec: {
        targetRefs: [{ kind: 'Service', name: 'echo' }],
        rateLimits: [{ name: 'per-user', requests: 1, interval: '60s', burst: 3, key: 'header:x-user' }],
      },
    },
  ]);
  await until(async () => (await status('/private', { 'x-user': 'warmup' })) === 403, 20_000);
}, 120_000);

afterAll(async () => {
  await s?.mesh.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('request authentication through the waypoint, keys from a JWKS server in the cluster', () => {
  it("admits alice's token and an admin's; refuses another subject and no token with 403", async () => {
    expect(await status('/private', bearer(await token(k1, 'k1', 'alice')))).toBe(200);
    expect(
      await status('/private', bearer(await token(k1, 'k1', 'bob', { claims: { groups: ['admins'] } }))),
    ).toBe(200);
    expect(await status('/private', bearer(await token(k1, 'k1', 'bob')))).toBe(403);
    expect(await status('/private')).toBe(403);
    // The JWKS server was asked once or so, not per request.
    expect(idpApp.events.filter((e) => e.event === 'request').length).toBeLessThanOrEqual(2);
  });

  it('an expired token, a wrong audience and a forged signature get 401 with the reason', async () => {
    const expired = await get('/private', bearer(await token(k1, 'k1', 'alice', { exp: '-10m' })));
    expect(expired[0]).toMatchObject({ status: 401 });
    expect(expired[0]!.body).toMatch(/exp/i);
    const audience = await get('/private', bearer(await token(k1, 'k1', 'alice', { aud: 'other' })));
    expect(audience[0]).toMatchObject({ status: 401 });
    expect(audience[0]!.body).toMatch(/aud/i);
    // Signed by k2 but claiming k1's kid.
    expect(await status('/private', bearer(await token(k2, 'k1', 'alice')))).toBe(401);
    const line = await s.waypoint.waitFor(
      (e) => e.component === 'access' && e.response_code === 401 && e.response_flags === 'UAEX',
      5000,
    );
    expect(JSON.stringify(line)).toMatch(/exp|aud|signature/i);
  });

  it('follows a key rotation at the issuer: an unknown kid refetches the set once, then verifies', async () => {
    const before = idpApp.events.filter((e) => e.event === 'request').length;
    await serveKeys([k1, 'k1'], [k2, 'k2']);
    expect(await status('/private', bearer(await token(k2, 'k2', 'alice')))).toBe(200);
    expect(idpApp.events.filter((e) => e.event === 'request').length).toBe(before + 1);
    expect(await status('/private', bearer(await token(k2, 'k2', 'alice')))).toBe(200);
    expect(idpApp.events.filter((e) => e.event === 'request').length).toBe(before + 1);
  });

  it('with the JWKS server down, the last good keys stay in use', async () => {
    await unlink(jwksFile); // the server now answers 503
    await idpApp.stop();
    expect(await status('/private', bearer(await token(k2, 'k2', 'alice')))).toBe(200);
    expect(await status('/private', bearer(await token(k1, 'k1', 'alice')))).toBe(200);
    expect(await status('/private', bearer(await token(k2, 'k2', 'bob')))).toBe(403);
  });
});

describe('local rate limit and dry-run through the waypoint', () => {
  it('a caller over its burst gets 429 with retry-after and x-ratelimit-*; another caller is unaffected', async () => {
    const replies = await get('/public/a', { 'x-user': 'carol' }, 5);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 429, 429]);
    expect(replies[3]!.headers).toMatchObject({ 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '0' });
    expect(Number(replies[3]!.headers!['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(replies[3]!.body).toBe('local_rate_limited');
    expect((await get('/public/a', { 'x-user': 'dave' }))[0]!.status).toBe(200);
    expect(await metric('istio_requests_total', { response_code: '429', response_flags: 'RL' })).toBe(2);
    expect(await metric('hypha_waypoint_ratelimit_total', { limit: 'per-user', decision: 'limited' })).toBe(
      2,
    );
  });

  it('a dry-run DENY lets the request through, logs "would deny" and counts it', async () => {
    const r = await get('/public/beta', { 'x-user': 'erin' });
    expect(r[0]!.status).toBe(200);
    const line = await s.waypoint.waitFor(
      (e) => typeof e.msg === 'string' && e.msg.includes('dry-run policy demo/deny-beta would deny'),
      5000,
    );
    expect(line.path ?? line.msg).toBeDefined();
    expect(await metric('hypha_authz_dry_run_total', { policy: 'demo/deny-beta', would: 'deny' })).toBe(1);
  });
});
