// Thin wrappers around `ip`, `nft` and friends. Every command is argv-based (no shell), so names
// and addresses never need quoting; failures carry the command line and stderr so a broken
// topology step says exactly which command failed and why.
import { execFile, execFileSync } from 'node:child_process';

export class ClusterError extends Error {
  readonly code: ClusterErrorCode;
  constructor(code: ClusterErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClusterError';
    this.code = code;
  }
}

export type ClusterErrorCode =
  | 'NOT_ROOT'
  | 'NETNS_UNSUPPORTED'
  | 'TOOL_MISSING'
  | 'COMMAND_FAILED'
  | 'NO_FREE_BLOCK'
  | 'BAD_INPUT'
  | 'DESTROYED'
  | 'APP_FAILED'
  | 'IPV6_UNSUPPORTED';

export interface RunResult {
  stdout: string;
  stderr: string;
}

const APT_HINT =
  'install it with: apt-get update && apt-get install -y iproute2 nftables iptables iputils-ping';

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].join(' ');
}

/** Runs a command to completion; rejects with a ClusterError naming the command and its stderr. */
export function runCommand(cmd: string, args: readonly string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          reject(
            new ClusterError('TOOL_MISSING', `\`${cmd}\` is not installed; ${APT_HINT}`, { cause: err }),
          );
          return;
        }
        reject(
          new ClusterError(
            'COMMAND_FAILED',
            `\`${describe(cmd, args)}\` failed: ${String(stderr).trim() || err.message}`,
            { cause: err },
          ),
        );
        return;
      }
      resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Synchronous variant for exit handlers, where nothing asynchronous gets to run. Never throws. */
export function runCommandSync(cmd: string, args: readonly string[]): { ok: boolean; stdout: string } {
  try {
    const stdout = execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    return { ok: true, stdout: stdout.toString() };
  } catch {
    return { ok: false, stdout: '' };
  }
}

/** Lists network namespace names (`ip netns list` prints `name (id: N)` per line). */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await runCommand('ip', ['netns', 'list']);
  return parseNetnsList(stdout);
}

export function listNetnsSync(): string[] {
  return parseNetnsList(runCommandSync('ip', ['netns', 'list']).stdout);
}

function parseNetnsList(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.length > 0);
}

/** Pids of processes living in a namespace (`ip netns pids`); empty when it is gone. */
export function netnsPidsSync(netns: string): number[] {
  const { stdout } = runCommandSync('ip', ['netns', 'pids', netns]);
  return stdout
    .split('\n')
    .map((s) => Number.parseInt(s, 10))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/**
 * Kills every process inside the namespaces, then deletes them. Processes keep a namespace (and
 * its veths and addresses) alive after `ip netns del`, so they go first. Synchronous because it
 * also runs from `process.on('exit')`.
 */
export function removeNetnsSync(names: readonly string[]): void {
  for (const name of names) {
    for (const pid of netnsPidsSync(name)) {
      if (pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const name of names) runCommandSync('ip', ['netns', 'del', name]);
}
