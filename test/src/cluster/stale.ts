// Removes what crashed runs left behind. Only namespaces carrying the harness marker
// (`hyt<3 hex>-`) are ever considered, and a run whose owner process is still alive is left
// alone, so calling this from one test file never breaks a cluster another file is using.
import { statSync } from 'node:fs';
import { CLUSTER_NETNS_PATTERN, OWNER_ALIAS_PREFIX } from './cluster.js';
import { listNetns, removeNetnsSync, runCommand } from './run.js';

export interface CleanupStaleOptions {
  /** Extra filter on namespace names; the harness marker is always required as well. */
  pattern?: RegExp;
  /** Remove matching runs even when their owner process is alive. */
  force?: boolean;
}

export interface CleanupStaleResult {
  removed: string[];
  kept: string[];
}

export async function cleanupStale(options: CleanupStaleOptions = {}): Promise<CleanupStaleResult> {
  const names = (await listNetns()).filter(
    (n) => CLUSTER_NETNS_PATTERN.test(n) && (options.pattern ? options.pattern.test(n) : true),
  );
  const byPrefix = new Map<string, string[]>();
  for (const name of names) {
    const prefix = name.slice(0, 6);
    byPrefix.set(prefix, [...(byPrefix.get(prefix) ?? []), name]);
  }
  const result: CleanupStaleResult = { removed: [], kept: [] };
  for (const [prefix, group] of byPrefix) {
    const owner = await fetchOwnerPid(`${prefix}-fabric`);
    const claimedJustNow = owner === undefined && isYoung(`${prefix}-fabric`);
    if (!options.force && ((owner !== undefined && isAlive(owner)) || claimedJustNow)) {
      result.kept.push(...group);
      continue;
    }
    // Fabric last: while it exists the run still looks claimed to a concurrent create().
    const ordered = [
      ...group.filter((n) => !n.endsWith('-fabric')),
      ...group.filter((n) => n.endsWith('-fabric')),
    ];
    removeNetnsSync(ordered);
    result.removed.push(...ordered);
  }
  return result;
}

async function fetchOwnerPid(fabricNetns: string): Promise<number | undefined> {
  try {
    const { stdout } = await runCommand('ip', ['-n', fabricNetns, '-j', 'link', 'show', 'br0']);
    const links = JSON.parse(stdout) as Array<{ ifalias?: string }>;
    const alias = links[0]?.ifalias ?? '';
    if (!alias.startsWith(OWNER_ALIAS_PREFIX)) return undefined;
    const pid = Number.parseInt(alias.slice(OWNER_ALIAS_PREFIX.length), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A run being created has its fabric namespace for a few milliseconds before the owner alias is
 * written; a young fabric without an owner is treated as live, not as a leftover.
 */
function isYoung(netns: string): boolean {
  try {
    return Date.now() - statSync(`/run/netns/${netns}`).mtimeMs < 30_000;
  } catch {
    return false;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
