// The CLI loads a verb's modules only when that verb runs: `hypha --help` and `hypha <verb> --help`
// load commander and the option definitions, not the Kubernetes client, the waypoint engine,
// OpenTelemetry, prom-client, yaml or the test harness the demo uses. Each run records every module
// it loads through a `module.registerHooks` load hook (--import), so these tests check which files
// loaded, not how long or how much memory that took.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/program.js';
import { HYPHA_BIN } from '../run-hypha.js';

/** Loaded module URLs that mean a verb's heavy dependencies came in with the CLI. */
const HEAVY = [
  '/node_modules/@kubernetes/client-node/',
  '/node_modules/@opentelemetry/',
  '/node_modules/prom-client/',
  '/node_modules/yaml/',
  '/node_modules/undici/',
  '/node_modules/@peculiar/',
  '/node_modules/zod/',
  '/test/dist/', // @hypha/test: the demo's cluster harness
  '/waypoint/dist/', // @hypha/waypoint: the L7 engine
  '/shared/dist/hbone/',
  '/shared/dist/kube/',
  '/shared/dist/telemetry/',
  '/shared/dist/config/',
  '/shared/dist/policy/',
  '/shared/dist/identity/ca', // ca.js, ca-client.js (x509 and ASN.1)
  '/agent/dist/agent/app.js',
  '/test/dist/mesh/',
  '/agent/dist/ca/server.js',
  '/waypoint/dist/daemon/app.js',
  '/waypoint/dist/daemon/render.js',
];

// Preloaded with --import: records the URL of every module loaded (ESM and CommonJS) and writes
// the list to $HYPHA_TEST_MODULES_OUT when the process exits.
const RECORDER = `data:text/javascript,${encodeURIComponent(`
import { registerHooks } from 'node:module';
import { writeFileSync } from 'node:fs';
const seen = [];
registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });
process.on('exit', () => writeFileSync(process.env.HYPHA_TEST_MODULES_OUT, seen.join('\\n')));
`)}`;

let dir: string;
let runs = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-lazy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the built CLI with `args`; resolves to its exit code, stdout and the modules it loaded. */
async function loadedBy(
  args: readonly string[],
): Promise<{ code: number; stdout: string; modules: string[] }> {
  const out = join(dir, `modules-${runs++}.txt`);
  const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', RECORDER, HYPHA_BIN, ...args],
      { timeout: 30_000, env: { ...process.env, HYPHA_TEST_MODULES_OUT: out } },
      (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
    );
  });
  const modules = (await readFile(out, 'utf8')).split('\n').filter(Boolean);
  return { code, stdout, modules };
}

function heavyIn(modules: readonly string[]): string[] {
  return modules.filter((url) => HEAVY.some((h) => url.includes(h)));
}

/** Every command path under `hypha`: [], ['agent'], ['agent', 'cleanup'], ['ca'], ['ca', 'init'], ... */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return [prefix, ...cmd.commands.flatMap((c) => commandPaths(c, [...prefix, c.name()]))];
}

describe('hypha loads a verb’s modules only when the verb runs', () => {
  it('the recorder sees what the CLI loads (so an empty heavy list means something)', async () => {
    const { code, stdout, modules } = await loadedBy(['--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('Usage: hypha');
    expect(modules.some((u) => u.includes('/node_modules/commander/'))).toBe(true);
    expect(modules.some((u) => u.endsWith('/agent/dist/cli/program.js'))).toBe(true);
    // And it does see a heavy module when one loads: yaml, by rendering the manifests.
    const print = await loadedBy(['install', '--print']);
    expect(print.code).toBe(0);
    expect(heavyIn(print.modules).some((u) => u.includes('/node_modules/yaml/'))).toBe(true);
  });

  it('hypha --help and --version load none of the heavy modules', async () => {
    for (const args of [['--help'], ['--version']]) {
      const { code, modules } = await loadedBy(args);
      expect(code).toBe(0);
      expect(heavyIn(modules), args.join(' ')).toEqual([]);
    }
  });

  it('hypha <verb> --help loads none of them, for every verb and subverb', async () => {
    const paths = commandPaths(buildProgram()).filter((p) => p.length > 0);
    expect(paths.length).toBeGreaterThan(9);
    for (const path of paths) {
      const { code, stdout, modules } = await loadedBy([...path, '--help']);
      expect(code, path.join(' ')).toBe(0);
      expect(stdout).toContain(`Usage: hypha ${path.join(' ')}`);
      expect(heavyIn(modules), path.join(' ')).toEqual([]);
    }
  });

  it('a usage error loads none of them either', async () => {
    const { code, modules } = await loadedBy(['ca', 'init', '--no-such-flag']);
    expect(code).toBe(2);
    expect(heavyIn(modules)).toEqual([]);
  });
});

/** What only `hypha demo` and the tests may load: the cluster harness, the stand-in API server, the mesh runner. */
const HARNESS = ['/test/dist/', '/test/src/', '/node_modules/@hypha/test/'];

describe('the agent and the waypoint never load the demo or the test harness', () => {
  it('their daemons and command modules import nothing of @hypha/test', async () => {
    const out = join(dir, `modules-${runs++}.txt`);
    const root = new URL('../../../', import.meta.url);
    const entries = [
      'agent/dist/cli/commands/agent.js',
      'agent/dist/agent/app.js',
      'agent/dist/cli/commands/waypoint.js',
      'waypoint/dist/daemon/app.js',
      'agent/dist/cli/commands/ca.js',
      'agent/dist/ca/server.js',
    ].map((p) => new URL(p, root).href);
    const script = `for (const u of ${JSON.stringify(entries)}) await import(u);`;
    const code = await new Promise<number>((resolve) => {
      execFile(
        process.execPath,
        ['--import', RECORDER, '--input-type=module', '-e', script],
        { timeout: 30_000, env: { ...process.env, HYPHA_TEST_MODULES_OUT: out } },
        (err) => resolve(err ? 1 : 0),
      );
    });
    expect(code).toBe(0);
    const modules = (await readFile(out, 'utf8')).split('\n').filter(Boolean);
    // The recorder saw the daemons load (so an empty list below means something).
    expect(modules.some((u) => u.endsWith('/waypoint/dist/daemon/app.js'))).toBe(true);
    expect(modules.some((u) => u.endsWith('/agent/dist/agent/app.js'))).toBe(true);
    expect(modules.filter((u) => HARNESS.some((h) => u.includes(h)))).toEqual([]);
    // Nor the Kubernetes client library, in any mode (kubernetes mode: below).
    expect(modules.filter((u) => u.includes('/node_modules/@kubernetes/client-node/'))).toEqual([]);
  });
});

// The recorder for long-running daemons: SIGUSR2 writes the list and exits (some daemons take
// SIGTERM only once started, and a signal death skips 'exit' handlers).
const DAEMON_RECORDER = `data:text/javascript,${encodeURIComponent(`
import { registerHooks } from 'node:module';
import { writeFileSync } from 'node:fs';
const seen = [];
registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });
process.on('SIGUSR2', () => { writeFileSync(process.env.HYPHA_TEST_MODULES_OUT, seen.join('\\n')); process.exit(0); });
`)}`;

/** The Kubernetes client library: ~850 modules and ~77 MB of RSS at import (docs/benchmarks.md). */
const KUBE_CLIENT = '/node_modules/@kubernetes/client-node/';

/**
 * Runs a daemon of the built CLI until it logs `readyMsg`, then stops it (SIGUSR2 to the recorder);
 * resolves to the modules it loaded. Fails with its output if it never gets there.
 */
async function daemonModules(args: readonly string[], readyMsg: string): Promise<string[]> {
  const out = join(dir, `modules-${runs++}.txt`);
  const child = spawn(process.execPath, ['--import', DAEMON_RECORDER, HYPHA_BIN, ...args], {
    env: { ...process.env, HYPHA_TEST_MODULES_OUT: out },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let ready = false;
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const line of output.split('\n')) {
      if (!ready && line.includes(`"msg":"${readyMsg}"`)) {
        ready = true;
        child.kill('SIGUSR2');
      }
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
  await new Promise<void>((resolve) => child.on('exit', () => resolve()));
  clearTimeout(kill);
  if (!ready) throw new Error(`hypha ${args.join(' ')} never logged "${readyMsg}":\n${output.slice(-4000)}`);
  return (await readFile(out, 'utf8')).split('\n').filter(Boolean);
}

describe('in kubernetes mode the daemons never load the Kubernetes client library', () => {
  let api: KubeApiServer;
  let kubeconfig: string;

  beforeAll(async () => {
    api = await createKubeApiServer({});
    for (const name of ['hypha-system', 'shop'])
      api.put({
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name, labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
      });
    kubeconfig = api.kubeconfigPath;
    await writeFile(
      join(dir, 'ca-token'),
      api.issueToken({ namespace: 'hypha-system', serviceAccount: 'hypha-agent', audiences: ['hypha-ca'] }),
    );
  });
  afterAll(async () => {
    await api?.close();
  });

  it('the CA (root Secret, revocation ConfigMap watch, pod informer) syncs with the API and loads none of it', async () => {
    const modules = await daemonModules(
      ['ca', 'serve', '--config', 'kubernetes', '--kubeconfig', kubeconfig, '--listen', '127.0.0.1:0'],
      'hypha CA ready',
    );
    expect(modules.some((u) => u.endsWith('/agent/dist/ca/kube-revocations.js'))).toBe(true);
    expect(modules.some((u) => u.endsWith('/shared/dist/kube/informer.js'))).toBe(true);
    expect(modules.filter((u) => u.includes(KUBE_CLIENT))).toEqual([]);
    // The CA published its root: the agent and waypoint below trust it (no CA runs for them; they
    // are stopped once their config is synced, before they ask for certificates).
    const bundle = api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', 'hypha-system') as
      | { data?: Record<string, string> }
      | undefined;
    await writeFile(join(dir, 'root-cert.pem'), Object.values(bundle?.data ?? {})[0] ?? '');
  });

  const meshFlags = () => [
    '--config',
    `kubernetes:${kubeconfig}`,
    '--ca-address',
    'https://127.0.0.1:1',
    '--ca-token-file',
    join(dir, 'ca-token'),
    '--ca-root-file',
    join(dir, 'root-cert.pem'),
    '--hbone-port',
    '0',
    '--admin-address',
    '127.0.0.1:0',
    '--metrics-address',
    '127.0.0.1:0',
    '--readiness-address',
    '127.0.0.1:0',
  ];

  it('the agent syncs from the API and loads none of it', async () => {
    const modules = await daemonModules(
      [
        'agent',
        '--node',
        'node-a',
        ...meshFlags(),
        '--capture',
        'none',
        '--handoff-dir',
        'none',
        '--outbound-port',
        '0',
        '--inbound-port',
        '0',
      ],
      'initial sync from the Kubernetes API complete',
    );
    expect(modules.some((u) => u.endsWith('/shared/dist/kube/source.js'))).toBe(true);
    expect(modules.filter((u) => u.includes(KUBE_CLIENT))).toEqual([]);
  });

  it('the waypoint syncs from the API and loads none of it', async () => {
    const modules = await daemonModules(
      ['waypoint', '--name', 'wp', '--namespace', 'shop', ...meshFlags()],
      'initial sync from the Kubernetes API complete',
    );
    expect(modules.some((u) => u.endsWith('/waypoint/dist/status/reporter.js'))).toBe(true);
    expect(modules.filter((u) => u.includes(KUBE_CLIENT))).toEqual([]);
  });
});
