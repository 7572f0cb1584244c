// `hypha policy explain` on dual-stack and IPv6-only configs (the built CLI): IPv6 ipBlocks decide
// by the address evaluated, a dual-stack source says which address that was, IPv6 targets print in
// brackets. Needs a build first (`npx turbo run build`; `npm test` does it).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoConfigObjects } from '@hypha/shared/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));

function explain(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const { HYPHA_CONFIG: _drop, ...env } = process.env;
    execFile(
      process.execPath,
      [BIN, 'policy', 'explain', ...args],
      { timeout: 30_000, env },
      (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

const IPS6 = { client: 'fd00:1::a', echoV1: 'fd00:1::b', echoV2: 'fd00:2::a', plain: 'fd00:2::b' };
const denyV6Block = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-v6', namespace: 'demo' },
  spec: {
    selector: { matchLabels: { app: 'echo' } },
    action: 'DENY',
    rules: [{ from: [{ source: { ipBlocks: ['fd00:1::/64'] } }] }],
  },
};

let dir: string;
let dual: string;
let v6only: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-policy-v6-'));
  const yaml = (objects: object[]) => objects.map((o) => stringify(o)).join('---\n');
  dual = join(dir, 'dual.yaml');
  await writeFile(dual, yaml([...demoConfigObjects({ ips6: IPS6, echoVip6: 'fd00:96::10' }), denyV6Block]));
  v6only = join(dir, 'v6only.yaml');
  await writeFile(v6only, yaml([...demoConfigObjects({ ips: IPS6, echoVip: 'fd00:96::10' }), denyV6Block]));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('hypha policy explain with IPv6', () => {
  it('a dual-stack pod is evaluated from its first address, and says which one and how to pick the other', async () => {
    const r = await explain('--config', dual, '--from', 'demo/client', '--to', 'demo/echo-v2:8080');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      'the pod also has fd00:1::a; evaluated from 10.244.1.10 (add --from-ip to choose)',
    );
  });

  it('from the IPv6 address, the IPv6 ipBlock denies', async () => {
    const r = await explain(
      '--config',
      dual,
      '--from',
      'demo/client',
      '--from-ip',
      'FD00:1:0::a',
      '--to',
      'demo/echo-v2:8080',
      '--json',
    );
    expect(r.code, r.stderr).toBe(3);
    const json = JSON.parse(r.stdout) as {
      decision: string;
      from: { ip: string };
      targets: { policy: string | null; decision: string }[];
    };
    expect(json.from.ip).toBe('fd00:1::a');
    expect(json.targets).toMatchObject([{ decision: 'deny', policy: 'demo/deny-v6' }]);
  });

  it('on an IPv6-only config, targets print as [addr]:port and the block decides', async () => {
    const r = await explain('--config', v6only, '--from', 'demo/client', '--to', 'demo/echo:80');
    expect(r.code, r.stdout).toBe(3);
    expect(r.stdout).toContain('demo/echo-v1 [fd00:1::b]:8080 (node node-a): DENY');
    expect(r.stdout).toContain('demo/echo-v2 [fd00:2::a]:8080 (node node-b): DENY');
  });
});
