// Fuzzing the `hypha` command line: random argv for every verb, each run a real child process of
// the built CLI in an empty directory, with HOME there, HYPHA_* unset and KUBECONFIG pointing at
// an API server that does not exist. Flags come from the verbs' own definitions (so every option
// is reached), with odd values, unknown flags, stray arguments and repeated options. What a user
// or a script would notice:
// - the exit code is 0, 1 or 2 (documented in `hypha --help`), within a few seconds; a
//   long-running verb (a daemon, `tap`) may instead still be running when we stop it;
// - stderr never shows a stack trace or an uncaught error, only a message;
// - a usage error (2) says what to do (`--help`, or the flag to fix).
// Not run: `agent` and `agent cleanup` (as root they set up or tear down host networking) and
// `demo` (starts a whole local mesh); their flags are parsed by the same code as the others'.
// Spawning Node is slow here, so this suite is small; replay with FUZZ_SEED (docs/reliability.md).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuzzParameters, fuzzTestTimeout } from '@hypha/test';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildProgram } from '../../src/cli/program.js';
import { HYPHA_BIN } from '../run-hypha.js';

interface Verb {
  path: string[];
  flags: { flag: string; takesValue: boolean }[];
  longRunning: boolean;
}

const SKIPPED = new Set(['agent', 'agent cleanup', 'demo']);
const LONG_RUNNING = new Set(['waypoint', 'ca serve', 'tap', 'dashboard']);

/** Every verb of the real command tree with its options (commander's own definitions). */
function listVerbs(): Verb[] {
  const out: Verb[] = [];
  type Cmd = ReturnType<typeof buildProgram>;
  const walk = (c: Cmd, path: string[]): void => {
    const name = path.join(' ');
    const runs = (c as unknown as { _actionHandler?: unknown })._actionHandler !== undefined;
    if (path.length > 0 && runs && !SKIPPED.has(name)) {
      out.push({
        path,
        flags: c.options.map((o) => ({
          flag: o.long ?? o.short ?? '',
          takesValue: o.required || o.optional,
        })),
        longRunning: LONG_RUNNING.has(name),
      });
    }
    for (const s of c.commands) walk(s as Cmd, [...path, s.name()]);
  };
  walk(buildProgram(), []);
  return out;
}

const VERBS = listVerbs();
let dir: string;

/** Values the flags get: odd numbers, durations, addresses, identities, and files that exist in odd shapes. */
function values(): string[] {
  return [
    '',
    '-',
    '--',
    'x',
    '0',
    '-1',
    '99999999999999999999',
    '1.5',
    'NaN',
    '10s',
    '-5m',
    '1h30x',
    '127.0.0.1:0',
    '127.0.0.1:1',
    '[::1]:0',
    ':99999',
    'unix:/nonexistent/hypha.sock',
    'http://127.0.0.1:1',
    'spiffe://cluster.local/ns/shop/sa/web',
    'spiffe://',
    'kubernetes',
    'file',
    'ns/name',
    'é\u0001ü\u007f',
    'a'.repeat(5000),
    join(dir, 'missing.yaml'),
    join(dir, 'empty.yaml'),
    join(dir, 'garbage.yaml'),
    join(dir, 'kubeconfig'),
    join(dir, 'a-directory'),
    'relative/dir',
  ];
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hypha-cli-fuzz-'));
  writeFileSync(join(dir, 'empty.yaml'), '');
  writeFileSync(join(dir, 'garbage.yaml'), 'kind: [unclosed\n\u0000\u00ff: :\n');
  mkdirSync(join(dir, 'a-directory'));
  // An API server nobody listens on: every Kubernetes call fails fast with ECONNREFUSED.
  writeFileSync(
    join(dir, 'kubeconfig'),
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
      'users: [{name: none, user: {token: nothing}}]',
      'contexts: [{name: none, context: {cluster: none, user: none, namespace: default}}]',
      'current-context: none',
    ].join('\n'),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  code: number | null;
  killed: boolean;
  stderr: string;
  stdout: string;
}

/** Runs `hypha args` in the scratch directory; a process still running at `timeoutMs` is stopped. */
function run(args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, KUBECONFIG: join(dir, 'kubeconfig') };
    const child = spawn(process.execPath, [HYPHA_BIN, ...args], {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < 200_000) stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 200_000) stderr += d.toString();
    });
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, killed, stderr, stdout });
    });
  });
}

/**
 * Daemons must not take ports other tests (or a local agent) use: whatever the random flags say,
 * the listeners move to port 0 on loopback (commander keeps the last value of a repeated option).
 */
function pinListeners(verb: Verb): string[] {
  const pins: string[] = [];
  for (const { flag } of verb.flags) {
    if (/^--(admin|metrics|readiness)-address$|^--listen$/.test(flag)) pins.push(flag, '127.0.0.1:0');
    if (flag === '--hbone-port') pins.push(flag, '0');
  }
  return pins;
}

/** One argv element or flag: data, not closures, so a counterexample reads as the command typed. */
type Part = { flag: string; value?: number } | { raw: string } | { value: number };

const argvFor = fc.constantFrom(...VERBS).chain((verb) =>
  fc
    .array(
      fc.oneof(
        {
          weight: 6,
          arbitrary:
            verb.flags.length === 0
              ? fc.constant<Part>({ raw: 'stray' })
              : fc
                  .tuple(fc.constantFrom(...verb.flags), fc.nat())
                  .map(([f, i]): Part => (f.takesValue ? { flag: f.flag, value: i } : { flag: f.flag })),
        },
        {
          weight: 1,
          arbitrary: fc
            .constantFrom('--bogus', '-z', '--help=x', '--json=1', '---', '--no-such-flag', 'stray', '-')
            .map((raw): Part => ({ raw })),
        },
        { weight: 1, arbitrary: fc.nat().map((value): Part => ({ value })) },
      ),
      { maxLength: 5 },
    )
    .map((parts) => ({ verb: verb.path.join(' '), parts })),
);

function argv(parts: readonly Part[], vals: readonly string[]): string[] {
  return parts.flatMap((p) => {
    const value = 'value' in p && p.value !== undefined ? [vals[p.value % vals.length]!] : [];
    if ('flag' in p) return [p.flag, ...value];
    if ('raw' in p) return [p.raw];
    return value;
  });
}

const params = fuzzParameters({ runs: 24, timeLimitMs: 30_000 });

test('random flags to every verb end with a documented exit code and a message, never a stack trace', {
  timeout: fuzzTestTimeout(params) + 30_000,
}, async () => {
  expect(VERBS.map((v) => v.path.join(' '))).toEqual(
    expect.arrayContaining(['ca init', 'policy explain', 'status']),
  );
  await fc.assert(
    fc.asyncProperty(argvFor, async ({ verb: name, parts }) => {
      const verb = VERBS.find((v) => v.path.join(' ') === name)!;
      const args = [...verb.path, ...argv(parts, values())];
      if (verb.longRunning) args.push(...pinListeners(verb));
      const r = await run(args, verb.longRunning ? 3_000 : 8_000);
      const what = `hypha ${args.map((a) => (a.length > 40 ? `${a.slice(0, 37)}...` : a)).join(' ')}\n${r.stderr.slice(0, 2000)}`;
      // Lines of a stack trace or of an uncaught error (JSON log lines are one line each).
      expect(r.stderr, what).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m);
      expect(r.stderr, what).not.toMatch(/^(Uncaught |\w*Error: |node:internal)/m);
      if (r.killed) {
        expect(verb.longRunning, `${what}\n(still running after the timeout)`).toBe(true);
        return;
      }
      expect([0, 1, 2], what).toContain(r.code);
      if (r.code === 2) expect(r.stderr, what).toMatch(/--help|usage|--[a-z-]+/);
      // A failure says something (a report such as `hypha check`'s goes to stdout).
      if (r.code === 1) expect((r.stderr + r.stdout).trim().length, what).toBeGreaterThan(0);
    }),
    params,
  );
});
