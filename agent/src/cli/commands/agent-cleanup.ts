// Taking a node out of the mesh: the only ways capture rules are removed.
//
// - `hypha agent cleanup` on the node (what an uninstall runs where no Kubernetes does it): removes
//   the nftables table and the policy routing, and the stale hand-off socket.
// - In Kubernetes, a SIGTERM while the agent's own DaemonSet is gone or being deleted
//   (`hypha uninstall`, `kubectl delete ds`): nodeLeavesMesh() says so and the agent removes
//   capture on its way out. Any other SIGTERM (a rolling update, a deleted pod that the DaemonSet
//   recreates, a node drain), a crash, or an API server that does not answer keeps the rules:
//   when in doubt, fail closed.
import { existsSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import type { Logger } from '@hypha/shared';
import type { Command } from 'commander';
import type { ConfigSource } from '../../agent/config.js';
import { UsageError } from '../errors.js';

type KubeObject = {
  metadata?: { deletionTimestamp?: string; ownerReferences?: { kind?: string; name?: string }[] };
};

/**
 * True when this agent's DaemonSet is gone or being deleted: the node is leaving the mesh. Needs
 * POD_NAME and POD_NAMESPACE (the DaemonSet sets them). False, with a log line saying why, when it
 * cannot tell.
 */
export async function nodeLeavesMesh(
  source: Extract<ConfigSource, { kind: 'kubernetes' }>,
  log: Logger,
): Promise<boolean> {
  const pod = process.env.POD_NAME;
  const ns = process.env.POD_NAMESPACE;
  if (!pod || !ns) {
    log.info('POD_NAME/POD_NAMESPACE not set: cannot tell an uninstall from a restart; capture rules stay');
    return false;
  }
  try {
    const { fetchKube, KubeError, loadKubeConfig } = await import('@hypha/shared/kube');
    const kc = loadKubeConfig(source.kubeconfig ?? { inCluster: true });
    let owner: string | undefined;
    try {
      const p = (await fetchKube(kc, `/api/v1/namespaces/${ns}/pods/${pod}`, {
        timeoutMs: 5000,
      })) as KubeObject;
      owner = p.metadata?.ownerReferences?.find((o) => o.kind === 'DaemonSet')?.name;
    } catch (err) {
      // Our own pod already gone means the garbage collector removes the DaemonSet's pods.
      if (!(err instanceof KubeError && err.status === 404)) throw err;
    }
    owner ??= 'hypha-agent';
    try {
      const ds = (await fetchKube(kc, `/apis/apps/v1/namespaces/${ns}/daemonsets/${owner}`, {
        timeoutMs: 5000,
      })) as KubeObject;
      if (ds.metadata?.deletionTimestamp) {
        log.info({ daemonSet: owner }, 'the agent DaemonSet is being deleted: this node leaves the mesh');
        return true;
      }
      log.info({ daemonSet: owner }, 'the agent DaemonSet stays (restart or upgrade): capture rules stay');
      return false;
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) {
        log.info({ daemonSet: owner }, 'the agent DaemonSet is gone: this node leaves the mesh');
        return true;
      }
      throw err;
    }
  } catch (err) {
    log.warn(
      { err: (err as Error).message },
      'cannot tell whether the node leaves the mesh (API not reachable?); capture rules stay (fail closed); run "hypha agent cleanup" on the node to remove them',
    );
    return false;
  }
}

interface CleanupFlags {
  netns?: string;
  force: boolean;
}

export function registerCleanup(agentCmd: Command, defaultHandoffDir: string): void {
  agentCmd
    .command('cleanup')
    .description("remove this node's capture rules (the node leaves the mesh); run by uninstall on each node")
    .option('--netns <name>', 'the node network namespace (ip netns) to clean instead of the current one')
    .option('--force', 'remove the rules even while an agent is running on the node', false)
    .addHelpText(
      'after',
      `
Removes the nftables table "inet hypha" and the policy-routing rule and route the agent installed.
Mesh pods' traffic then flows directly, without mTLS or policy: only for a node leaving the mesh.
An agent that stops or crashes never removes them itself (fail closed).

--handoff-dir (an option of "hypha agent", default ${defaultHandoffDir}) names where a running
agent answers; its stale socket is removed.

Example:
  hypha agent cleanup                      on the node (as root, host network namespace)`,
    )
    .action(async (flags: CleanupFlags, cmd: Command) => {
      const handoffDir = String(cmd.parent?.opts().handoffDir ?? defaultHandoffDir);
      if (flags.netns !== undefined && !/^[A-Za-z0-9_.-]+$/.test(flags.netns))
        throw new UsageError(`--netns must be a network namespace name, got "${flags.netns}"`);
      const sock = `${handoffDir.replace(/\/+$/, '')}/agent.sock`;
      if (existsSync(sock) && !flags.force) {
        const { connect } = await import('node:net');
        const running = await new Promise<boolean>((resolve) => {
          const s = connect(sock);
          s.once('connect', () => {
            s.destroy();
            resolve(true);
          });
          s.once('error', () => resolve(false));
        });
        if (running) {
          throw new UsageError(
            `an agent is running on this node (it answers on ${sock}); stop it first, or pass --force to remove capture under it (its pods' traffic would then bypass the mesh)`,
          );
        }
      }
      const { createNodeCapture } = await import('../../capture/index.js');
      const capture = createNodeCapture(flags.netns !== undefined ? { netns: flags.netns } : {});
      const before = await capture.fetchState();
      await capture.stop();
      await unlink(sock).catch(() => {});
      const after = await capture.fetchState();
      if (after.installed || after.policyRouting.rules > 0) {
        process.stderr.write(
          'hypha: capture rules are still present after cleanup; check `nft list ruleset`\n',
        );
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        before.installed
          ? `removed capture: table inet hypha (${before.ruleCount} rules, ${before.meshPods.length} pods), ${before.policyRouting.rules} policy-routing rule(s)\n`
          : 'no capture rules were installed; nothing to remove\n',
      );
    });
}
