// What a running daemon says about itself in its /config_dump: the Hypha release it runs, the Node
// runtime, its pid and when it started. The dashboard's health page shows these per node, so an
// operator mid-upgrade sees which agents already run the new release.
import { readFileSync } from 'node:fs';

export interface DaemonInfo {
  /** The Hypha release (the workspace version, the same as `hypha --version`). */
  version: string;
  node: string;
  pid: number;
  startedAt: string;
}

let version: string | undefined;
const startedAt = new Date(Date.now() - process.uptime() * 1000).toISOString();

export function daemonInfo(): DaemonInfo {
  if (version === undefined) {
    try {
      // dist/daemon/info.js → the package's package.json; every workspace carries the release version.
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version?: string;
      };
      version = pkg.version ?? 'unknown';
    } catch {
      version = 'unknown';
    }
  }
  return { version, node: process.version, pid: process.pid, startedAt };
}
