// The container image, built from the repo's Dockerfile the way an operator builds it
// (manifests/image/build.sh: podman, with a local stand-in for node:24-slim because these machines
// reach no container registry), then run: the CLI answers, the N-API addon loads in the runtime
// stage, the process is not root, the tools node-mode capture calls are there, the CA works, and
// no build-only files ship.
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { verifyChain } from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const TAG = `localhost/hypha:e2e-${process.pid}`;
const PODMAN = ['--runtime', 'runc'];
const LIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=4096:4096'];

async function inImage(args: string[], opts: { entrypoint?: string; volume?: string } = {}) {
  const extra = [
    ...(opts.entrypoint ? ['--entrypoint', opts.entrypoint] : []),
    ...(opts.volume ? ['-v', opts.volume] : []),
  ];
  try {
    const { stdout, stderr } = await run(
      'podman',
      [...PODMAN, 'run', '--rm', '--network', 'none', ...LIMITS, ...extra, TAG, ...args],
      { timeout: 60_000 },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('container image (Dockerfile, multi-stage, Node 24)', () => {
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hypha-image-'));
    // The first build on a machine makes the base (debootstrap) and every layer: several minutes.
    try {
      await run('bash', [join(ROOT, 'manifests/image/build.sh'), '--tag', TAG], {
        timeout: 25 * 60_000,
        maxBuffer: 64 * 1024 * 1024,
      });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(
        `image build failed: ${e.message}\n${(e.stdout ?? '').slice(-3000)}\n${(e.stderr ?? '').slice(-3000)}`,
      );
    }
  }, 26 * 60_000);

  afterAll(async () => {
    // Only the tag goes; the layers stay in podman's cache so the next build is quick.
    await run('podman', [...PODMAN, 'rmi', TAG]).catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('answers --version and --help through its entrypoint', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'agent', 'package.json'), 'utf8')) as {
      version: string;
    };
    const version = await inImage(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);
    const help = await inImage([]);
    expect(help.code).toBe(0);
    for (const verb of ['agent', 'ca', 'waypoint', 'install', 'check']) expect(help.stdout).toContain(verb);
  });

  it("runs the agent DaemonSet's container command (its V8 flags included) as written in the manifest", async () => {
    const docs = parseAllDocuments(await readFile(join(ROOT, 'manifests/base/agent.yaml'), 'utf8')).map((d) =>
      d.toJS(),
    );
    const ds = docs.find((d) => d?.kind === 'DaemonSet');
    const command = ds.spec.template.spec.containers.find((c: { name: string }) => c.name === 'agent')
      .command as string[];
    // An agent that gets past its start-up checks and then fails on a missing config file: it
    // must not warn about missing V8 flags, so node received the manifest's flags.
    const r = await inImage(
      [...command.slice(1), 'agent', '--node', 'n1', '--config', 'file:/nonexistent/mesh.yaml'],
      {
        entrypoint: command[0]!,
      },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('config path does not exist');
    expect(r.stderr).not.toContain("started without the agent's V8 flags");
  });

  it('runs as uid 10001 and loads the N-API addon built in the builder stage', async () => {
    const res = await inImage(
      [
        '-e',
        "const m = require('/app/agent/native/build/Release/hypha_native.node'); console.log(JSON.stringify({ uid: process.getuid(), node: process.version, exports: Object.keys(m).sort() }))",
      ],
      { entrypoint: 'node' },
    );
    expect(res.stderr).toBe('');
    const out = JSON.parse(res.stdout) as { uid: number; node: string; exports: string[] };
    expect(out.uid).toBe(10001);
    expect(out.node).toMatch(/^v24\./);
    expect(out.exports).toEqual(expect.arrayContaining(['getOriginalDst', 'setTransparent', 'setMark']));
  });

  it('has nft and ip for node-mode capture, and ships no dev dependencies, TypeScript sources or test harness', async () => {
    const res = await inImage(
      [
        '-c',
        'for t in nft ip; do command -v $t || echo "missing $t"; done; ' +
          'for p in node_modules/vitest node_modules/typescript node_modules/@biomejs agent/src shared/src test; do [ -e "/app/$p" ] && echo "present $p"; done; true',
      ],
      { entrypoint: 'sh' },
    );
    expect(res.code).toBe(0);
    expect(res.stdout).not.toMatch(/missing|present/);
  });

  it('hypha demo in the image says it needs a checkout, as the image ships no test harness', async () => {
    const res = await inImage(['demo', '--check']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('hypha demo needs the test-cluster harness');
    expect(res.stderr).toContain('npx hypha demo');
  });

  it('the CA inside the image creates a root and issues a workload certificate that verifies', async () => {
    const out = join(work, 'out');
    await run('mkdir', ['-p', out]);
    await chmod(out, 0o777); // written by uid 10001 inside the container
    const init = await inImage(['ca', 'init', '--dir', '/out/ca'], { volume: `${out}:/out` });
    expect(init.code, init.stderr).toBe(0);
    const issue = await inImage(
      [
        'ca',
        'issue',
        '--dir',
        '/out/ca',
        '--id',
        'spiffe://cluster.local/ns/shop/sa/web',
        '--out',
        '/out/web',
      ],
      { volume: `${out}:/out` },
    );
    expect(issue.code, issue.stderr).toBe(0);
    const chain = await readFile(join(out, 'web', 'cert-chain.pem'), 'utf8');
    const roots = await readFile(join(out, 'ca', 'root-cert.pem'), 'utf8');
    const verdict = verifyChain(chain, roots);
    if (!verdict.ok) throw new Error(`the image's certificate does not verify: ${verdict.reason}`);
    expect(String(verdict.id)).toBe('spiffe://cluster.local/ns/shop/sa/web');
  });
});
