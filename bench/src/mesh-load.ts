// What the mesh benchmarks (l4, waypoint) share: running the open-loop load client inside a
// namespace, finding the bench's apps, and reading a process's CPU time and memory from /proc.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { LocalMesh } from '@hypha/test';

export class BenchLoadError extends Error {
  readonly code = 'LOAD_FAILED' as const;
  constructor(message: string) {
    super(message);
    this.name = 'BenchLoadError';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** bench/apps/<name> next to this module (src → .ts under vitest, dist → .js). */
export function findBenchApp(name: 'open-loop' | 'node-proxy' | 'tcp-pipe'): string {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const path = fileURLToPath(new URL(`./apps/${name}${ext}`, import.meta.url));
  if (!existsSync(path)) {
    throw new BenchLoadError(`bench app ${name} not found at ${path}; build the bench (npx turbo run build)`);
  }
  return path;
}

/** The open-loop load client (bench/apps/open-loop). */
export function findLoadApp(): string {
  return findBenchApp('open-loop');
}

/** Runs the open-loop client in a namespace; resolves with its JSON result line. */
export function runLoad(
  mesh: LocalMesh,
  netns: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  const child = mesh.cluster.spawnNode(netns, findLoadApp(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as Record<string, unknown>);
      else reject(new BenchLoadError(`open-loop ${args.join(' ')} exited with ${code}: ${err.trim()}`));
    });
  });
}

// /proc/<pid>/stat: fields after the ")" that ends the command name; utime and stime are the
// 12th and 13th of those (fields 14 and 15 of the whole line), in clock ticks.
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system) a process has used so far. */
export async function fetchCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** CPU seconds of a process and of its direct children (nginx: the master and its workers). */
export async function fetchTreeCpuSeconds(pid: number): Promise<number> {
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  const pids = [pid, ...children.split(' ').filter(Boolean).map(Number)];
  const cpu = await Promise.all(pids.map((p) => fetchCpuSeconds(p)));
  return cpu.reduce((a, b) => a + b, 0);
}

/** VmHWM is the peak resident set since the process started, VmRSS the current one; in MB. */
export async function fetchRssMb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? Number.NaN) / 1024;
}
