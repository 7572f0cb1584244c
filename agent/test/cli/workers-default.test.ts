// `hypha agent --workers auto` (the default): as many data-path workers as the CPU limit allows
// (a container's `resources.limits.cpu`, read from its cgroup), one process without a limit. The
// cgroup reader is checked against v1 and v2 layouts, and against a real cgroup with a quota.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { cpuLimit, defaultWorkers } from '../../src/agent/cpu-limit.js';
import { HYPHA_BIN, runHypha } from '../run-hypha.js';

const files = (map: Record<string, string>) => ({ read: (p: string) => map[p] });

describe('cpuLimit', () => {
  it('cgroup v2 in a container (own cgroup namespace): the top cpu.max is the limit', () => {
    expect(cpuLimit(files({ '/proc/self/cgroup': '0::/\n', '/r/cpu.max': '150000 100000\n' }), '/r')).toBe(
      1.5,
    );
  });

  it('cgroup v2: "max" is no limit; the smallest limit along the path wins', () => {
    expect(cpuLimit(files({ '/proc/self/cgroup': '0::/a/b\n', '/r/a/b/cpu.max': 'max 100000' }), '/r')).toBe(
      undefined,
    );
    expect(
      cpuLimit(
        files({
          '/proc/self/cgroup': '0::/a/b\n',
          '/r/a/b/cpu.max': '400000 100000',
          '/r/a/cpu.max': '200000 100000',
        }),
        '/r',
      ),
    ).toBe(2);
  });

  it('cgroup v1: cfs_quota_us / cfs_period_us, -1 is no limit, combined cpu,cpuacct mounts too', () => {
    const self = '4:memory:/x\n3:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n';
    expect(
      cpuLimit(
        files({
          '/proc/self/cgroup': self,
          '/r/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us': '250000\n',
          '/r/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us': '100000\n',
        }),
        '/r',
      ),
    ).toBe(2.5);
    expect(
      cpuLimit(
        files({
          '/proc/self/cgroup': '1:cpu:/\n',
          '/r/cpu/cpu.cfs_quota_us': '-1\n',
          '/r/cpu/cpu.cfs_period_us': '100000\n',
        }),
        '/r',
      ),
    ).toBe(undefined);
  });

  it('no /proc/self/cgroup (not Linux, or hidden): no limit', () => {
    expect(cpuLimit(files({}), '/r')).toBe(undefined);
  });
});

describe('defaultWorkers', () => {
  it('one worker per core of the limit, rounded up, never more than the CPUs available', () => {
    expect(defaultWorkers(undefined, 64).workers).toBe(1);
    expect(defaultWorkers(0.5, 64).workers).toBe(1);
    expect(defaultWorkers(1, 64).workers).toBe(1);
    expect(defaultWorkers(1.5, 64).workers).toBe(2);
    expect(defaultWorkers(8, 4).workers).toBe(4);
  });

  it('says why, so the log line explains the count', () => {
    expect(defaultWorkers(undefined, 2).reason).toMatch(/no CPU limit.*--workers N/);
    expect(defaultWorkers(1.5, 2).reason).toBe('CPU limit 1.5 cores, 2 CPUs available');
  });
});

function withoutWorkersEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.HYPHA_AGENT_WORKERS;
  return env;
}

/** A cgroup with a CPU quota of 1.5 cores (v1 `cpu` controller or v2), removed by the caller. */
function makeLimitedCgroup(): { procs: string; remove(): void } {
  const name = `hypha-test-${process.pid}-${Date.now()}`;
  if (existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')) {
    const dir = `/sys/fs/cgroup/cpu/${name}`;
    mkdirSync(dir);
    writeFileSync(`${dir}/cpu.cfs_period_us`, '100000');
    writeFileSync(`${dir}/cpu.cfs_quota_us`, '150000');
    return { procs: `${dir}/cgroup.procs`, remove: () => rmdirSync(dir) };
  }
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const self = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
    const parent = `/sys/fs/cgroup${self === '/' ? '' : self}`;
    const dir = `${parent}/${name}`;
    mkdirSync(dir);
    writeFileSync(`${dir}/cpu.max`, '150000 100000');
    return { procs: `${dir}/cgroup.procs`, remove: () => rmdirSync(dir) };
  }
  throw new Error(
    'no cgroup v1 cpu controller or cgroup v2 hierarchy under /sys/fs/cgroup: cannot make a CPU limit',
  );
}

describe('hypha agent under a CPU limit', () => {
  it('a 1.5-core limit gives two workers by default, and says so at start', async () => {
    const cg = makeLimitedCgroup();
    try {
      // The shell joins the cgroup, then becomes the agent; the agent reads its limit at start.
      const child = spawn(
        'sh',
        [
          '-c',
          `echo $$ > ${cg.procs} && exec "$0" "$@"`,
          process.execPath,
          HYPHA_BIN,
          'agent',
          '--node',
          'node-a',
          '--config',
          'file:/nonexistent/hypha-mesh.yaml',
          '--handoff-dir',
          'none',
          '--capture',
          'none',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], env: withoutWorkersEnv() },
      );
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "data path" line in 20 s:\n${out}`)), 20_000);
        const check = () => {
          const l = out.split('\n').find((x) => x.includes('data path:'));
          if (l) {
            clearTimeout(timer);
            resolve(l);
          }
        };
        child.stdout.on('data', check);
        child.stderr.on('data', check);
        child.once('exit', () => {
          check();
          clearTimeout(timer);
          reject(new Error(`the agent exited before saying how many workers:\n${out}`));
        });
      });
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const cpus = availableParallelism();
      const workers = Math.min(2, cpus);
      expect(JSON.parse(line)).toMatchObject({
        workers,
        msg: `data path: ${workers === 1 ? 'this process' : '2 worker processes'} (CPU limit 1.5 cores, ${cpus} CPUs available)`,
      });
    } finally {
      cg.remove();
    }
  });

  it('--help names the default and what it means', async () => {
    const r = await runHypha(['agent', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--workers <n\|auto\|all>[\s\S]*CPU limit[\s\S]*default:\s+"auto"/);
  });

  it('a bad --workers is a usage error naming the choices', async () => {
    const r = await runHypha(['agent', '--node', 'node-a', '--config', 'file:/x.yaml', '--workers', 'many']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--workers must be a whole number 1-256, "auto" or "all", got "many"/);
  });
});
