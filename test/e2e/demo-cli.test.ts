// `hypha demo` as a user runs it: `--check` passes every check including the agent upgrade under
// load, and the interactive demo says when one of its processes exits, then removes everything on
// Ctrl-C.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { HYPHA_BIN, runHypha } from '../../agent/test/run-hypha.js';
import { runCommand } from '../src/cluster/run.js';

const netnsList = async () => (await runCommand('ip', ['netns', 'list'])).stdout;

describe('hypha demo', () => {
  it('--check: every check passes, including an agent upgrade under load with nothing failed', async () => {
    const r = await runHypha(['demo', '--check'], { timeoutMs: 150_000 });
    expect(r.stdout).toMatch(
      /PASS {2}agent upgrade on node-a: \d+ connections during the upgrade, 0 failed \(slowest \d+\.\d\d s\); 20 of 20 live streams kept \(sha256-checked\)/,
    );
    expect(r.stdout).toContain('demo check passed');
    expect(r.code).toBe(0);
  }, 180_000);

  it('interactive: an agent that dies is reported with its status; Ctrl-C still removes every namespace', async () => {
    const child = spawn(process.execPath, [HYPHA_BIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const waitFor = (re: RegExp, ms: number) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${re} in demo output:\n${out}`)), ms);
        const check = () => {
          const m = out.match(re);
          if (m) {
            clearTimeout(timer);
            child.stdout.off('data', check);
            resolve(m);
          }
        };
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        child.stdout.on('data', check);
        check();
      });
    try {
      const nodes = await waitFor(/nodes: node-a \(\S+, netns (hyt[0-9a-f]{3})-node-a\)/, 120_000);
      await waitFor(/Press Ctrl-C to stop/, 120_000);
      const prefix = nodes[1] as string;
      // Kill node-b's agent the way a crash would.
      const pids = (await runCommand('ip', ['netns', 'pids', `${prefix}-node-b`])).stdout
        .split('\n')
        .filter(Boolean);
      for (const pid of pids) {
        const cmdline = (await runCommand('cat', [`/proc/${pid}/cmdline`]).catch(() => ({ stdout: '' })))
          .stdout;
        if (cmdline.includes('agent') && cmdline.includes('node-b')) process.kill(Number(pid), 'SIGKILL');
      }
      const said = await waitFor(/! agent node-b \(pid \d+\) exited with signal SIGKILL: [^\n]+/, 10_000);
      expect(said[0]).toContain('capture stays: fail closed');
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(out).toContain('stopping ...');
      expect(await netnsList()).not.toContain(prefix);
    } finally {
      child.kill('SIGKILL');
    }
  }, 180_000);
});
