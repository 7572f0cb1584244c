// `npm run bench -- ca [--json] [--quick]`: how fast the CA signs, over its real HTTPS API.
//
// The CA runs as its own process (`hypha ca serve`, as in production) so the load generator does
// not share its event loop; CPU time of that process is read from /proc, which gives signatures
// per CPU-second: the "1000 signatures/s on one core" budget of issue 2.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCsr, generateKeyPair, parseSpiffeId } from '@hypha/shared/identity';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const HYPHA_BIN = fileURLToPath(new URL('../../../agent/bin/hypha.js', import.meta.url));
const TOKEN = 'bench-token-0123456789abcdef0123456789';
const IDENTITIES = 64;
const CLIENTS = 16;
const SIGN_BUDGET_PER_CPU_SECOND = 1000;

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const seconds = opts.quick ? 2 : 8;
  const results: BenchResult[] = [];
  results.push(await measureKeyAndCsr(seconds));
  results.push(...(await measureSigning(seconds)));
  return {
    suite: 'ca',
    environment: { command: `npm run bench -- ca${opts.quick ? ' --quick' : ''}`, clients: CLIENTS, seconds },
    results,
  };
}

/** ECDSA P-256 key generation + PKCS#10 CSR, 8 at a time (WebCrypto works off the main thread). */
async function measureKeyAndCsr(seconds: number): Promise<BenchResult> {
  const id = parseSpiffeId('spiffe://cluster.local/ns/bench/sa/bench');
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const worker = async () => {
    while (performance.now() < end) {
      await createCsr(id, await generateKeyPair());
      done++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 8 }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  return { name: 'key+CSR generations per second', value: done / elapsed, unit: 'ops/s' };
}

async function measureSigning(seconds: number): Promise<BenchResult[]> {
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-ca-'));
  const child = { proc: undefined as ReturnType<typeof spawn> | undefined };
  try {
    const init = await runCli(['ca', 'init', '--dir', join(dir, 'ca')]);
    if (init.code !== 0) throw new Error(`hypha ca init failed: ${init.stderr}`);
    await writeFile(join(dir, 'tokens.yaml'), `tokens:\n  - token: ${TOKEN}\n    node: bench-node\n`);
    const pods = Array.from(
      { length: IDENTITIES },
      (_, i) =>
        `kind: Pod\nmetadata: {name: p${i}, namespace: bench}\nspec: {nodeName: bench-node, serviceAccountName: sa-${i}}\n`,
    );
    await writeFile(join(dir, 'pods.yaml'), pods.join('---\n'));
    const root = await readFile(join(dir, 'ca', 'root-cert.pem'), 'utf8');
    const csrs = await Promise.all(
      Array.from({ length: IDENTITIES }, async (_, i) =>
        JSON.stringify({
          csr: await createCsr(
            parseSpiffeId(`spiffe://cluster.local/ns/bench/sa/sa-${i}`),
            await generateKeyPair(),
          ),
        }),
      ),
    );
    // HYPHA_BENCH_CA_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p" profiles the CA process.
    const nodeArgs = (process.env.HYPHA_BENCH_CA_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const proc = spawn(
      process.execPath,
      [
        ...nodeArgs,
        HYPHA_BIN,
        '--log-level',
        'warn',
        'ca',
        'serve',
        '--dir',
        join(dir, 'ca'),
        '--tokens',
        join(dir, 'tokens.yaml'),
        '--pods',
        join(dir, 'pods.yaml'),
        '--listen',
        '127.0.0.1:0',
        '--metrics-address',
        'off',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.proc = proc;
    // --log-level warn hides the "ready" line; find the port from /proc instead of logs.
    const port = await waitForListeningPort(proc.pid!, 15_000);
    const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS, ca: root });
    const post = (body: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            path: '/v1/certificates',
            method: 'POST',
            agent,
            servername: 'localhost',
            headers: {
              authorization: `Bearer ${TOKEN}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    // Warm-up: connections, JIT.
    await Promise.all(Array.from({ length: CLIENTS * 4 }, (_, i) => post(csrs[i % csrs.length]!)));
    const cpu0 = await processCpuSeconds(proc.pid!);
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    let ok = 0;
    let failed = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (performance.now() < end) {
          const status = await post(csrs[next++ % csrs.length]!);
          if (status === 200) ok++;
          else failed++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = (await processCpuSeconds(proc.pid!)) - cpu0;
    agent.destroy();
    if (failed > 0 && ok === 0) throw new Error(`every signing request failed (${failed})`);
    const perCpuSecond = ok / Math.max(cpu, 1e-9);
    return [
      {
        name: `CSRs signed per second over HTTPS (${CLIENTS} keep-alive clients)`,
        value: ok / elapsed,
        unit: 'req/s',
      },
      {
        name: 'CSRs signed per CPU-second of the CA process',
        value: perCpuSecond,
        unit: 'req/cpu-s',
        budget: `>= ${SIGN_BUDGET_PER_CPU_SECOND}`,
        met: perCpuSecond >= SIGN_BUDGET_PER_CPU_SECOND,
      },
      { name: 'failed signing requests', value: failed, unit: 'requests' },
    ];
  } finally {
    if (child.proc && child.proc.exitCode === null) {
      const exited = new Promise((r) => child.proc!.once('exit', r));
      child.proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
  }
}

function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [HYPHA_BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('exit', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of /proc/<pid>/stat (1-based; here offset by the 2 skipped).
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** The TCP port a process listens on, from /proc/net/tcp via its socket inodes. */
async function waitForListeningPort(pid: number, timeoutMs: number): Promise<number> {
  const { readdir, readlink } = await import('node:fs/promises');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const inodes = new Set<string>();
      for (const fd of await readdir(`/proc/${pid}/fd`)) {
        const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m) inodes.add(m[1]!);
      }
      const tcp = await readFile(`/proc/${pid}/net/tcp`, 'utf8');
      for (const line of tcp.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        // st 0A = LISTEN
        if (cols[3] === '0A' && inodes.has(cols[9] ?? ''))
          return Number.parseInt(cols[1]!.split(':')[1]!, 16);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new Error('the CA server exited before listening');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the CA server did not start listening in time');
}
