// The CPU limit this process runs under (a container's `resources.limits.cpu`), read from its cgroup:
// cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD") or cgroup v1 `cpu.cfs_quota_us` /
// `cpu.cfs_period_us` (-1: none). Every ancestor cgroup is read too, and the smallest limit wins,
// because that is what the kernel enforces. Node's os.availableParallelism() counts the CPUs the
// process may be scheduled on (the cpuset) and ignores quotas, so a pod limited to 2 CPUs on a
// 64-core node would see 64.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export interface CgroupFiles {
  /** Reads a file; undefined when it does not exist or cannot be read. */
  read(path: string): string | undefined;
}

const realFiles: CgroupFiles = {
  read(path) {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  },
};

/** `/a/b/c` → [`/a/b/c`, `/a/b`, `/a`, ``]: a cgroup and its ancestors, relative to a mount. */
function selfAndAncestors(path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  const out: string[] = [];
  for (let i = parts.length; i >= 0; i--)
    out.push(
      parts
        .slice(0, i)
        .map((p) => `/${p}`)
        .join(''),
    );
  return out;
}

function quotaV2(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === undefined || quota === 'max') return undefined;
  const q = Number(quota);
  const p = Number(period ?? 100_000);
  return q > 0 && p > 0 ? q / p : undefined;
}

function quotaV1(quota: string | undefined, period: string | undefined): number | undefined {
  if (quota === undefined || period === undefined) return undefined;
  const q = Number(quota.trim());
  const p = Number(period.trim());
  return q > 0 && p > 0 ? q / p : undefined;
}

function smallest(values: (number | undefined)[]): number | undefined {
  const set = values.filter((v): v is number => v !== undefined);
  return set.length === 0 ? undefined : Math.min(...set);
}

/**
 * The CPU limit in cores (1.5 for `cpu: 1500m`), or undefined without one. `root` is where the
 * cgroup file systems are mounted (tests pass a directory of fixtures).
 */
export function cpuLimit(files: CgroupFiles = realFiles, root = '/sys/fs/cgroup'): number | undefined {
  const self = files.read('/proc/self/cgroup');
  if (self === undefined) return undefined;
  const found: (number | undefined)[] = [];
  for (const line of self.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (m === null) continue;
    const [, id, controllers, path] = m as unknown as [string, string, string, string];
    if (id === '0' && controllers === '') {
      // cgroup v2 (unified). In a container with its own cgroup namespace the path is `/` and the
      // mount's top is the container's cgroup, whose cpu.max is the limit.
      for (const dir of selfAndAncestors(path)) found.push(quotaV2(files.read(`${root}${dir}/cpu.max`)));
      for (const dir of selfAndAncestors(path))
        found.push(quotaV2(files.read(`${root}/unified${dir}/cpu.max`)));
    } else if (controllers.split(',').includes('cpu')) {
      for (const mount of [`${root}/cpu`, `${root}/cpu,cpuacct`, `${root}/cpuacct,cpu`]) {
        for (const dir of selfAndAncestors(path)) {
          found.push(
            quotaV1(
              files.read(`${mount}${dir}/cpu.cfs_quota_us`),
              files.read(`${mount}${dir}/cpu.cfs_period_us`),
            ),
          );
        }
      }
    }
  }
  return smallest(found);
}

export interface WorkerDefault {
  workers: number;
  /** For the log line: why this many. */
  reason: string;
}

/**
 * `--workers auto` (the default): one data-path worker per core of the CPU limit (rounded up, at most
 * the CPUs available); 1 without a limit, which keeps everything in this one process. Without a
 * limit the agent does not assume the node's cores are its to take: set a CPU limit or --workers.
 */
export function defaultWorkers(limit = cpuLimit(), cpus = availableParallelism()): WorkerDefault {
  if (limit === undefined) {
    return {
      workers: 1,
      reason: 'no CPU limit: one process (set a CPU limit or --workers N for more cores)',
    };
  }
  const workers = Math.max(1, Math.min(Math.ceil(limit - 1e-9), cpus));
  return { workers, reason: `CPU limit ${Number(limit.toFixed(3))} cores, ${cpus} CPUs available` };
}
