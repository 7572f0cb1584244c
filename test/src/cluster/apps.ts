// Runs the sample apps (test/src/apps) inside namespaces with this process's Node. Apps are
// self-contained (only `node:` imports), so from sources (vitest) Node runs the .ts files
// directly by type stripping, and from dist the compiled .js files.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ClusterError } from './run.js';

export const SAMPLE_APPS = [
  'tcp-echo',
  'http-echo',
  'static-http',
  'load-client',
  'bytes',
  'churn-client',
  'grpc-echo',
] as const;
export type SampleApp = (typeof SAMPLE_APPS)[number];

/** Absolute path of a sample app next to this module (src → .ts, dist → .js). */
export function findAppPath(app: SampleApp): string {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const path = fileURLToPath(new URL(`../apps/${app}${ext}`, import.meta.url));
  if (!existsSync(path)) {
    throw new ClusterError(
      'APP_FAILED',
      `sample app ${app} not found at ${path}; build @hypha/test (npx turbo run build)`,
    );
  }
  return path;
}

export interface RunningApp {
  readonly process: ChildProcess;
  /** The port from the app's `listening` line (useful with `--port 0`). */
  readonly port: number;
  /** Every JSON line the app printed so far, in order. */
  readonly events: ReadonlyArray<Record<string, unknown>>;
  /** Resolves with the next printed event matching `predicate`. */
  waitFor(
    predicate: (event: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

type SpawnNode = (script: string, args: readonly string[]) => ChildProcess;

/** Starts a server app and resolves once it printed `{"event":"listening"}`. */
export function startApp(
  spawnNode: SpawnNode,
  app: SampleApp,
  args: readonly string[],
  timeoutMs = 10_000,
): Promise<RunningApp> {
  const child = spawnNode(findAppPath(app), args);
  const events: Array<Record<string, unknown>> = [];
  const waiters = new Set<{
    predicate: (e: Record<string, unknown>) => boolean;
    resolve: (e: Record<string, unknown>) => void;
  }>();
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  readJsonLines(child, (event) => {
    events.push(event);
    for (const waiter of waiters) {
      if (waiter.predicate(event)) {
        waiters.delete(waiter);
        waiter.resolve(event);
      }
    }
  });
  const waitFor = (
    predicate: (e: Record<string, unknown>) => boolean,
    ms = 10_000,
  ): Promise<Record<string, unknown>> => {
    const seen = events.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        predicate,
        resolve: (e: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new ClusterError(
            'APP_FAILED',
            `${app}: expected event not seen within ${ms} ms; stderr: ${stderr.trim()}`,
          ),
        );
      }, ms);
      waiters.add(waiter);
    });
  };
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => {
      reject(new ClusterError('APP_FAILED', `${app} exited (${code}) before listening: ${stderr.trim()}`));
    };
    child.once('exit', onExit);
    waitFor((e) => e.event === 'listening', timeoutMs).then(
      (e) => {
        child.removeListener('exit', onExit);
        resolve({ process: child, port: Number(e.port), events, waitFor, stop });
      },
      (err: unknown) => {
        child.kill('SIGKILL');
        reject(err);
      },
    );
  });
}

/** Runs a client app to completion and resolves with the last JSON line it printed. */
export function runApp(
  spawnNode: SpawnNode,
  app: SampleApp,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<Record<string, unknown>> {
  const child = spawnNode(findAppPath(app), args);
  let last: Record<string, unknown> | undefined;
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  readJsonLines(child, (event) => {
    last = event;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new ClusterError('APP_FAILED', `${app} ${args.join(' ')} did not finish within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0 && last) resolve(last);
      else
        reject(
          new ClusterError('APP_FAILED', `${app} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`),
        );
    });
  });
}

function readJsonLines(child: ChildProcess, onEvent: (event: Record<string, unknown>) => void): void {
  let buffered = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line.startsWith('{')) {
        try {
          onEvent(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // a partial or foreign line; apps print one JSON object per line
        }
      }
      newline = buffered.indexOf('\n');
    }
  });
}
