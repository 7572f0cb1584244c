// Runs the built `hypha` CLI the way a user does (a separate process) and collects what it printed.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { KubeApiServer } from '@hypha/test';

export const HYPHA_BIN = fileURLToPath(new URL('../bin/hypha.js', import.meta.url));

export interface HyphaRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function runHypha(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<HyphaRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [HYPHA_BIN, ...args],
      { timeout: opts.timeoutMs ?? 30_000, ...(opts.env ? { env: opts.env } : {}) },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err.code as number)
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export interface RunningKubeCa {
  child: ChildProcess;
  /** The CA's HTTPS URL, from its "hypha CA ready" log line. */
  url: string;
  /** Everything it logged so far (JSON lines on stderr). */
  log(): string;
}

/**
 * Starts `hypha ca serve --config kubernetes` against a (stand-in) API server's kubeconfig, in
 * namespace `namespace`, on a free loopback port; resolves once it logs that it is ready.
 */
export function startKubeCa(kubeconfigPath: string, namespace: string): Promise<RunningKubeCa> {
  const child = spawn(
    process.execPath,
    [
      HYPHA_BIN,
      'ca',
      'serve',
      '--config',
      'kubernetes',
      '--kubeconfig',
      kubeconfigPath,
      '--listen',
      '127.0.0.1:0',
      '--metrics-address',
      '127.0.0.1:0',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, POD_NAMESPACE: namespace } },
  );
  let log = '';
  child.stderr?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`CA did not become ready:\n${log}`));
    }, 20_000);
    const onData = (): void => {
      const m = /"url":"(https:\/\/127\.0\.0\.1:\d+)".*"msg":"hypha CA ready"/.exec(log);
      if (m) {
        clearTimeout(timer);
        child.stderr?.off('data', onData);
        resolve({ child, url: m[1]!, log: () => log });
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`CA exited with ${code}:\n${log}`));
    });
  });
}

/**
 * The objects a kube-mode CA needs to authorize node-1: namespaces hypha-system and shop, the
 * agent's ServiceAccount, and two pods on node-1 (the agent, and shop/web-1 running as `web`).
 */
export function seedCaCluster(api: KubeApiServer): void {
  for (const ns of ['hypha-system', 'shop'])
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  api.put({
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'hypha-agent', namespace: 'hypha-system' },
  });
  for (const [name, ns, sa] of [
    ['agent-1', 'hypha-system', 'hypha-agent'],
    ['web-1', 'shop', 'web'],
  ] as const) {
    api.put({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns },
      spec: { nodeName: 'node-1', serviceAccountName: sa, containers: [{ name: 'c', image: 'c' }] },
    });
  }
}
