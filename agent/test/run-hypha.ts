// Runs the built `hypha` CLI the way a user does (a separate process) and collects what it printed.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
