// `hypha policy explain --jwt TOKEN` (the built CLI): the token's claims (decoded, not verified)
// are what the waypoint's requestPrincipals and request.auth.* rules read; the output names the
// rule that matched and says the token was not verified.
// Needs a build first (`npx turbo run build`; `npm test` does it).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoConfigObjects } from '@hypha/shared/config';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));
const ISSUER = 'https://issuer.example';
let dir: string;
let config: string;

function explain(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const { HYPHA_CONFIG: _drop, ...env } = process.env;
    execFile(
      process.execPath,
      [
        BIN,
        'policy',
        'explain',
        '--config',
        config,
        '--from',
        'demo/client',
        '--to',
        'demo/echo:80',
        ...args,
      ],
      { timeout: 30_000, env },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const token = (sub: string, claims: Record<string, unknown> = {}) =>
  new SignJWT({ sub, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISSUER)
    .setAudience('echo')
    .sign(new TextEncoder().encode('a test secret, not checked by explain'));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-policy-jwt-'));
  const objects = [
    ...demoConfigObjects().map((o) =>
      o.kind === 'Service' && (o.metadata as { name: string }).name === 'echo'
        ? { ...o, metadata: { ...(o.metadata as object), labels: { 'hypha.dev/use-waypoint': 'waypoint' } } }
        : o,
    ),
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'demo', labels: { 'hypha.dev/waypoint-for': 'service' } },
      spec: {
        gatewayClassName: 'hypha-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    },
    {
      apiVersion: 'security.hypha.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'allow-alice-or-admins', namespace: 'demo' },
      spec: {
        targetRefs: [{ kind: 'Service', group: '', name: 'echo' }],
        action: 'ALLOW',
        rules: [
          { from: [{ source: { requestPrincipals: [`${ISSUER}/alice`] } }] },
          {
            from: [{ source: { requestPrincipals: [`${ISSUER}/*`] } }],
            when: [{ key: 'request.auth.claims[groups]', values: ['admins'] }],
          },
        ],
      },
    },
  ];
  config = join(dir, 'mesh.yaml');
  await writeFile(config, objects.map((o) => stringify(o)).join('---\n'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('hypha policy explain --jwt', () => {
  it("names the rule alice's token matches, and says the claims were not verified", async () => {
    const r = await explain('--jwt', await token('alice'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`token: request principal ${ISSUER}/alice (claims decoded, NOT verified`);
    expect(r.stdout).toContain('ALLOW demo/allow-alice-or-admins: rules[0] matches');
    expect(r.stdout).toContain(
      'decision: ALLOW: allowed by ALLOW policy demo/allow-alice-or-admins rules[0]',
    );
  });

  it("bob's token is denied with the reasons; with groups [admins] rules[1] matches", async () => {
    const bob = await explain('--jwt', await token('bob'));
    expect(bob.code).toBe(3);
    expect(bob.stdout).toContain(`from[0].source.requestPrincipals [${ISSUER}/alice]: "${ISSUER}/bob"`);
    expect(bob.stdout).toContain('when[0] request.auth.claims[groups] not in values (claim absent)');
    const admin = await explain('--jwt', await token('bob', { groups: ['admins'] }), '--json');
    expect(admin.code, admin.stderr).toBe(0);
    const j = JSON.parse(admin.stdout) as { waypoint: { policy: string; rule: number } };
    expect(j.waypoint).toMatchObject({ policy: 'demo/allow-alice-or-admins', rule: 1 });
  });

  it('without request flags the answer depends on the request; with a request but no --jwt there is no principal: denied', async () => {
    const depends = await explain();
    expect(depends.code).toBe(5);
    expect(depends.stdout).toContain('--host or --jwt');
    const r = await explain('--path', '/');
    expect(r.code).toBe(3);
    expect(r.stdout).toContain('no request principal (no verified token)');
  });

  it('a value that is not a JWT is a usage error', async () => {
    const r = await explain('--jwt', 'not-a-token');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--jwt: not a JWT/);
  });
});
