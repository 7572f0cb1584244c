// `hypha policy explain` as an operator runs it (the built CLI): argument errors exit 2 with one
// clear line, decisions exit 0 (allow) / 3 (deny) / 4 (mixed), failures exit 1.
// Needs a build first (`npx turbo run build`; `npm test` does it).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoConfigObjects } from '@hypha/shared/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const BIN = fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function hypha(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const { HYPHA_CONFIG: _drop, ...inherited } = process.env;
    execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: 30_000, env: { ...inherited, ...env } },
      (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let dir: string;
let config: string;
let strictConfig: string;
let portExemptConfig: string;
let waypointConfig: string;
let missingWaypointConfig: string;
let dryRunConfig: string;
let waypointDryRunConfig: string;

const DRY_RUN = { 'istio.io/dry-run': 'true' };

/** The demo with Service demo/echo bound to waypoint demo/waypoint, and L7 policies on it. */
function waypointObjects(gatewayName: string): object[] {
  const l7 = (name: string, spec: object) => ({
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: 'demo' },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: 'echo' }], ...spec },
  });
  return [
    ...demoConfigObjects().map((o) =>
      o.kind === 'Service' && (o.metadata as { name: string }).name === 'echo'
        ? { ...o, metadata: { ...(o.metadata as object), labels: { 'hypha.dev/use-waypoint': 'waypoint' } } }
        : o,
    ),
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: gatewayName, namespace: 'demo', labels: { 'hypha.dev/waypoint-for': 'service' } },
      spec: {
        gatewayClassName: 'hypha-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    },
    l7('deny-unconfirmed-admin', {
      action: 'DENY',
      rules: [
        {
          to: [{ operation: { paths: ['/admin/*'] } }],
          when: [{ key: 'request.headers[x-confirm]', notValues: ['yes'] }],
        },
      ],
    }),
    l7('allow-client', {
      action: 'ALLOW',
      rules: [
        { from: [{ source: { namespaces: ['ops'] } }] },
        {
          from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }],
          to: [{ operation: { methods: ['GET', 'DELETE'], hosts: ['echo.demo.svc.cluster.local'] } }],
        },
      ],
    }),
  ];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-policy-cli-'));
  const deny = {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'no-client-to-v2', namespace: 'demo' },
    spec: {
      selector: { matchLabels: { app: 'echo', version: 'v2' } },
      action: 'DENY',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }] }],
    },
  };
  const yaml = (objects: object[]) => objects.map((o) => stringify(o)).join('---\n');
  waypointConfig = join(dir, 'waypoint.yaml');
  await writeFile(waypointConfig, yaml(waypointObjects('waypoint')));
  missingWaypointConfig = join(dir, 'no-waypoint.yaml');
  await writeFile(missingWaypointConfig, yaml(waypointObjects('some-other-gateway')));
  config = join(dir, 'mesh.yaml');
  await writeFile(config, yaml([...demoConfigObjects(), deny]));
  // The same DENY as a dry run (L4), and a dry-run DENY on /admin/* at the waypoint (L7).
  dryRunConfig = join(dir, 'dry-run.yaml');
  await writeFile(
    dryRunConfig,
    yaml([...demoConfigObjects(), { ...deny, metadata: { ...deny.metadata, annotations: DRY_RUN } }]),
  );
  waypointDryRunConfig = join(dir, 'waypoint-dry-run.yaml');
  await writeFile(
    waypointDryRunConfig,
    yaml([
      ...waypointObjects('waypoint'),
      {
        apiVersion: 'security.hypha.dev/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'deny-admin', namespace: 'demo', annotations: DRY_RUN },
        spec: {
          targetRefs: [{ kind: 'Service', group: '', name: 'echo' }],
          action: 'DENY',
          rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
        },
      },
    ]),
  );
  strictConfig = join(dir, 'strict.yaml');
  await writeFile(
    strictConfig,
    yaml(
      demoConfigObjects().map((o) =>
        o.kind === 'Namespace' && (o.metadata as { name: string }).name === 'demo'
          ? {
              ...o,
              metadata: {
                name: 'demo',
                labels: { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/mtls-mode': 'strict' },
              },
            }
          : o,
      ),
    ),
  );
  // STRICT by the label, one port of the echo pods exempt by a PeerAuthentication.
  portExemptConfig = join(dir, 'port-exempt.yaml');
  await writeFile(
    portExemptConfig,
    `${await readFile(strictConfig, 'utf8')}---\n${stringify({
      apiVersion: 'security.hypha.dev/v1',
      kind: 'PeerAuthentication',
      metadata: { namespace: 'demo', name: 'echo-health' },
      spec: { selector: { matchLabels: { app: 'echo' } }, portLevelMtls: { 9090: { mode: 'PERMISSIVE' } } },
    })}`,
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const explain = (...args: string[]) => hypha(['policy', 'explain', ...args]);

describe('hypha policy explain: usage errors exit 2 with one clear line', () => {
  it.each([
    [['--from', 'demo/client', '--to', 'demo/echo:80'], /--config <path> is required.*HYPHA_CONFIG/],
    [['--config', 'CFG', '--to', 'demo/echo:80'], /--from .* is required/],
    [['--config', 'CFG', '--from', 'demo/client'], /--to .* is required/],
    [
      ['--config', 'CFG', '--from', 'demo/client', '--to', 'demo/echo'],
      /--to "demo\/echo" must be <namespace>/,
    ],
    [['--config', 'CFG', '--from', 'demo/client', '--to', 'demo/echo:0'], /--to port must be 1-65535/],
    [['--config', 'CFG', '--from', 'demo/client', '--to', 'demo/echo:70000'], /--to port must be 1-65535/],
    [['--config', 'CFG', '--from', 'client', '--to', 'demo/echo:80'], /--from "client" must be <namespace>/],
    [['--config', 'CFG', '--from', 'spiffe://x/y', '--to', 'demo/echo:80'], /--from: .*path/],
    [
      ['--config', 'CFG', '--from-ip', '10.0.0.300', '--to', 'demo/echo:80'],
      /--from-ip "10\.0\.0\.300" is not an IP/,
    ],
    [['--config', 'kubernetes', '--from', 'demo/client', '--to', 'demo/echo:80'], /reads a config file/],
    [
      ['--config', 'WCFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--header', 'x-user'],
      /--header "x-user" must be <name>=<value>.*--header x-user=alice/,
    ],
    [
      ['--config', 'WCFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--header', '=alice'],
      /--header "=alice" must be <name>=<value>/,
    ],
    [
      ['--config', 'WCFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--method', 'get'],
      /--method "get" must be an HTTP method in capitals/,
    ],
    [
      ['--config', 'WCFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--path', 'admin'],
      /--path "admin" must start with "\/"/,
    ],
    [
      ['--config', 'WCFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--header', 'Host=x'],
      /give the Host header with --host/,
    ],
    [
      ['--config', 'CFG', '--from', 'demo/client', '--to', 'demo/echo:80', '--path', '/admin'],
      /need a destination served by a waypoint, and service demo\/echo is not \(label .*hypha\.dev\/use-waypoint/,
    ],
  ])('%j', async (args, message) => {
    const r = await explain(...args.map((a) => (a === 'CFG' ? config : a === 'WCFG' ? waypointConfig : a)));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^hypha: usage error: /);
    expect(r.stderr.split('\n')[0]).toMatch(message);
  });

  it('an unknown flag is a usage error too', async () => {
    const r = await explain(
      '--config',
      config,
      '--from',
      'demo/client',
      '--to',
      'demo/echo:80',
      '--frm',
      'x',
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option '--frm'/);
  });
});

describe('hypha policy explain: decisions and failures', () => {
  it('allows (exit 0), denies (exit 3) and names the deciding policy and rule', async () => {
    const ok = await explain('--config', config, '--from', 'demo/client', '--to', 'demo/echo-v1:8080');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/decision: ALLOW: allowed: no ALLOW policy applies to demo\/echo-v1/);
    expect(ok.stdout).toMatch(/^result: ALLOW$/m);
    const no = await explain('--config', config, '--from', 'demo/client', '--to', 'demo/echo-v2:8080');
    expect(no.code).toBe(3);
    expect(no.stdout).toMatch(/DENY demo\/no-client-to-v2: rules\[0\] matches/);
    expect(no.stdout).toMatch(/^result: DENY$/m);
  });

  it('fans a Service out to its endpoints at their target ports: mixed is exit 4', async () => {
    const r = await explain('--config', config, '--from', 'demo/client', '--to', 'demo/echo:80', '--json');
    expect(r.code).toBe(4);
    const j = JSON.parse(r.stdout) as {
      decision: string;
      targets: { workload: string; port: number; decision: string }[];
    };
    expect(j.decision).toBe('mixed');
    expect(j.targets.map((t) => [t.workload, t.port, t.decision]).sort()).toEqual([
      ['demo/echo-v1', 8080, 'allow'],
      ['demo/echo-v2', 8080, 'deny'],
    ]);
  });

  it('reads $HYPHA_CONFIG (file:PATH) when --config is absent; a service account works as --from', async () => {
    const r = await explain('--from', 'demo/other', '--to', 'demo/echo-v2:8080', '--json');
    expect(r.code).toBe(2); // no config at all
    const withEnv = await hypha(
      ['policy', 'explain', '--from', 'demo/other', '--to', 'demo/echo-v2:8080', '--json'],
      {
        HYPHA_CONFIG: `file:${config}`,
      },
    );
    expect(withEnv.code).toBe(0);
    const j = JSON.parse(withEnv.stdout) as { from: { identity: string } };
    expect(j.from.identity).toBe('spiffe://cluster.local/ns/demo/sa/other');
  });

  it('a PeerAuthentication exempts one port of a STRICT workload, and explain names the rule', async () => {
    const exempt = await explain(
      '--config',
      portExemptConfig,
      '--from',
      'outside/plain',
      '--to',
      'demo/echo-v1:9090',
      '--json',
    );
    expect(exempt.code, exempt.stderr).toBe(0);
    const j = JSON.parse(exempt.stdout) as { targets: { mtls: unknown; decision: string }[] };
    expect(j.targets[0]).toMatchObject({
      decision: 'allow',
      mtls: {
        mode: 'permissive',
        rule: 'PeerAuthentication demo/echo-health portLevelMtls 9090: PERMISSIVE',
      },
    });
    const other = await explain(
      '--config',
      portExemptConfig,
      '--from',
      'outside/plain',
      '--to',
      'demo/echo-v1:8080',
    );
    expect(other.code).toBe(3);
    expect(other.stdout).toMatch(
      /mTLS: port 8080 is STRICT \(namespace label hypha\.dev\/mtls-mode=strict: STRICT\): plaintext is refused/,
    );
    expect(other.stdout).toMatch(
      /decision: DENY: plaintext refused: port 8080 of demo\/echo-v1 requires mTLS/,
    );
  });

  it('STRICT refuses plaintext from a pod outside the mesh before any policy; mesh pods still pass', async () => {
    const plain = await explain(
      '--config',
      strictConfig,
      '--from',
      'outside/plain',
      '--to',
      'demo/echo-v1:8080',
    );
    expect(plain.code).toBe(3);
    expect(plain.stdout).toMatch(/no identity \(plaintext\)/);
    expect(plain.stdout).toMatch(
      /mTLS: port 8080 is STRICT \(namespace label hypha\.dev\/mtls-mode=strict: STRICT\): plaintext is refused before any policy/,
    );
    const byIp = await explain(
      '--config',
      strictConfig,
      '--from-ip',
      '10.9.9.9',
      '--to',
      'demo/echo-v1:8080',
    );
    expect(byIp.code).toBe(3);
    const mesh = await explain(
      '--config',
      strictConfig,
      '--from',
      'demo/client',
      '--to',
      'demo/echo-v1:8080',
    );
    expect(mesh.code).toBe(0);
    const forced = await explain(
      '--config',
      strictConfig,
      '--from',
      'demo/client',
      '--plaintext',
      '--to',
      'demo/echo-v1:8080',
    );
    expect(forced.code).toBe(3);
  });

  it('failures exit 1 with one line: missing config, unknown destination, unknown service port', async () => {
    const missing = await explain(
      '--config',
      join(dir, 'nope.yaml'),
      '--from',
      'demo/client',
      '--to',
      'demo/echo:80',
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /^hypha: error: cannot read the mesh config .*nope\.yaml: no such file or directory \(pass the YAML/,
    );
    const unknown = await explain('--config', config, '--from', 'demo/client', '--to', 'demo/nothing:80');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('hypha: error: no pod or service demo/nothing in the mesh config\n');
    const port = await explain('--config', config, '--from', 'demo/client', '--to', 'demo/echo:81');
    expect(port.code).toBe(1);
    expect(port.stderr).toBe('hypha: error: service demo/echo has no port 81 (ports: 80)\n');
  });
});

interface DryRunJson {
  policy: string;
  would: string;
  rule: number | null;
}

describe('hypha policy explain: dry-run policies, shown apart from the enforced decision', () => {
  it('L4: a dry-run DENY leaves the connection allowed (exit 0) and says it would deny, in text', async () => {
    const r = await explain('--config', dryRunConfig, '--from', 'demo/client', '--to', 'demo/echo-v2:8080');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('DENY demo/no-client-to-v2 (dry-run): rules[0] matches');
    expect(r.stdout).toContain('decision: ALLOW: allowed: no ALLOW policy applies to demo/echo-v2');
    expect(r.stdout).toContain(
      'dry-run: policy demo/no-client-to-v2 would deny (rules[0]): denied by DENY policy demo/no-client-to-v2 rules[0]',
    );
    expect(r.stdout).toMatch(/^result: ALLOW$/m);
  });

  it('L4: --json carries the enforced decision and the dry-run result separately', async () => {
    const r = await explain(
      '--config',
      dryRunConfig,
      '--from',
      'demo/client',
      '--to',
      'demo/echo:80',
      '--json',
    );
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as {
      decision: string;
      targets: { workload: string; decision: string; dryRun: DryRunJson | null }[];
    };
    expect(j.decision).toBe('allow');
    const byName = Object.fromEntries(j.targets.map((t) => [t.workload, t]));
    expect(byName['demo/echo-v2']).toMatchObject({
      decision: 'allow',
      dryRun: { policy: 'demo/no-client-to-v2', would: 'deny', rule: 0 },
    });
    expect(byName['demo/echo-v1']).toMatchObject({ decision: 'allow', dryRun: null });
  });

  it('L7: a dry-run DENY at the waypoint leaves the request allowed and says it would deny', async () => {
    const args = ['--from', 'demo/client', '--to', 'demo/echo:80', '--path', '/admin/users'];
    const r = await explain('--config', waypointDryRunConfig, ...args, '--header', 'x-confirm=yes');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('DENY demo/deny-admin (dry-run): rules[0] matches');
    expect(r.stdout).toContain('decision: ALLOW: allowed by ALLOW policy demo/allow-client rules[1]');
    expect(r.stdout).toContain(
      'dry-run: policy demo/deny-admin would deny (rules[0]): denied by DENY policy demo/deny-admin rules[0]',
    );
    const j = JSON.parse(
      (await explain('--config', waypointDryRunConfig, ...args, '--header', 'x-confirm=yes', '--json'))
        .stdout,
    ) as { decision: string; waypoint: { decision: string; policies: string[]; dryRun: DryRunJson | null } };
    expect(j.decision).toBe('allow');
    expect(j.waypoint.decision).toBe('allow');
    expect(j.waypoint.dryRun).toEqual({ policy: 'demo/deny-admin', would: 'deny', rule: 0 });
    expect(j.waypoint.policies).toContain('DENY demo/deny-admin (dry-run)');
    // A path the dry-run policy does not cover: nothing would change.
    const other = JSON.parse(
      (
        await explain(
          '--config',
          waypointDryRunConfig,
          '--from',
          'demo/client',
          '--to',
          'demo/echo:80',
          '--path',
          '/items',
          '--json',
        )
      ).stdout,
    ) as { waypoint: { dryRun: DryRunJson | null } };
    expect(other.waypoint.dryRun).toBeNull();
  });
});

interface WaypointJson {
  decision: string;
  waypoint: {
    name: string;
    request: { method: string; path: string; host: string; headers: Record<string, string> } | null;
    policies: string[];
    decision: string;
    policy: string | null;
    rule: number | null;
    reason: string;
  } | null;
  targets: { workload: string; decision: string; lines: string[] }[];
}

describe('hypha policy explain: L7, through a waypoint', () => {
  const l7In = (cfg: string, ...args: string[]) =>
    explain('--config', cfg, '--from', 'demo/client', '--to', 'demo/echo:80', ...args);
  const l7 = (...args: string[]) => l7In(waypointConfig, ...args);

  it('names the DENY policy and rule that refuse a request (exit 3), in text', async () => {
    const r = await l7('--method', 'DELETE', '--path', '/admin/users');
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).toContain('waypoint demo/waypoint (L7): DENY');
    expect(r.stdout).toContain(
      'request DELETE /admin/users host echo.demo.svc.cluster.local from cluster.local/ns/demo/sa/client to demo/echo port 80',
    );
    expect(r.stdout).toContain('DENY demo/deny-unconfirmed-admin: rules[0] matches');
    expect(r.stdout).toContain('decision: DENY: denied by DENY policy demo/deny-unconfirmed-admin rules[0]');
    expect(r.stdout).toMatch(/^result: DENY$/m);
  });

  it('a header that lifts the DENY lets the ALLOW rule decide (exit 0), with its index, in JSON', async () => {
    const r = await l7('--method', 'DELETE', '--path', '/admin/users', '--header', 'X-Confirm=yes', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as WaypointJson;
    expect(j.decision).toBe('allow');
    expect(j.waypoint).toMatchObject({
      name: 'demo/waypoint',
      request: { method: 'DELETE', path: '/admin/users', headers: { 'x-confirm': 'yes' } },
      decision: 'allow',
      policy: 'demo/allow-client',
      rule: 1,
      reason: 'allowed by ALLOW policy demo/allow-client rules[1]',
    });
    // The endpoints then see the waypoint's identity, not the client's.
    expect(j.targets.map((t) => t.decision)).toEqual(['allow', 'allow']);
    expect(j.targets[0]!.lines[0]).toMatch(/^connection from cluster\.local\/ns\/demo\/sa\/waypoint to /);
  });

  it('--host decides hosts rules; no ALLOW rule matching denies without naming a policy', async () => {
    const r = await l7('--host', 'other.example', '--json');
    expect(r.code, r.stderr).toBe(3);
    const j = JSON.parse(r.stdout) as WaypointJson;
    expect(j.waypoint).toMatchObject({ decision: 'deny', policy: null, rule: null });
    expect(j.waypoint!.reason).toBe('denied: ALLOW policies apply (demo/allow-client) but none matched');
    const text = await l7('--host', 'other.example');
    expect(text.stdout).toContain(
      'ALLOW demo/allow-client: no rule matches (rules[0] from[0].source.namespaces [ops]: "demo"; rules[1] to[0].operation.hosts [echo.demo.svc.cluster.local]: "other.example")',
    );
  });

  it('without request flags: lists the L7 policies that apply and says the answer depends on the request (exit 5)', async () => {
    const r = await l7();
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toContain('waypoint demo/waypoint (L7): DEPENDS');
    expect(r.stdout).toContain(
      'L7 policies that apply: DENY demo/deny-unconfirmed-admin, ALLOW demo/allow-client',
    );
    expect(r.stdout).toContain('give --method, --path, --header <name>=<value>, --host or --jwt');
    expect(r.stdout).toMatch(/^result: DEPENDS$/m);
    const j = JSON.parse((await l7('--json')).stdout) as WaypointJson;
    expect(j.waypoint).toMatchObject({ decision: 'depends', request: null });
    expect(j.waypoint!.policies).toEqual(['DENY demo/deny-unconfirmed-admin', 'ALLOW demo/allow-client']);
  });

  it('a Service bound to a waypoint that does not exist is refused, fail closed (exit 3)', async () => {
    const r = await l7In(missingWaypointConfig, '--path', '/');
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).toContain(
      'decision: DENY: demo/echo is bound to waypoint demo/waypoint, which does not exist: refused (fail closed)',
    );
  });
});
