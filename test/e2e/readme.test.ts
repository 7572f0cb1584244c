// The README's two set-up commands are what users type on a fresh machine, and CI runs the second
// one verbatim. These checks hold the README, .ci/run and the one package list together, so what a
// user installs cannot drift from what CI installs or from what the code tells users to install.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

function packages(group: string): string[] {
  return execFileSync('bash', [join(ROOT, 'scripts/install-system-packages.sh'), '--print', group], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter(Boolean);
}

// Packages named in `apt-get install -y ...` hints that the code prints to users.
function aptHints(): { file: string; pkgs: string[] }[] {
  const files = execFileSync('git', ['ls-files', '*.ts', '*.sh', 'Dockerfile'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((f) => f && !f.startsWith('test/e2e/readme.test.ts'));
  const hints: { file: string; pkgs: string[] }[] = [];
  for (const file of files) {
    for (const m of read(file).matchAll(/apt-get install -y ((?:[a-z0-9][a-z0-9.+-]+ ?)+)/g)) {
      hints.push({ file, pkgs: (m[1] ?? '').trim().split(/\s+/) });
    }
  }
  return hints;
}

describe('README set-up commands', () => {
  const readme = read('README.md');
  const commandAfter = (heading: string) => {
    const lines = readme.split('\n');
    return lines[lines.indexOf(heading) + 1];
  };

  it('both commands install from the one package list, then npm ci', () => {
    expect(
      commandAfter(
        '# 1. Install, then run the local demo mesh (two nodes, a CA, two agents, sample apps; Ctrl-C ends it)',
      ),
    ).toBe('bash scripts/install-system-packages.sh demo && npm ci && npx hypha demo');
    expect(commandAfter('# 2. Run the tests')).toBe(
      'bash scripts/install-system-packages.sh test && npm ci && npm test',
    );
  });

  it('.ci/run runs the README test command itself and installs nothing on its own', () => {
    const ci = read('.ci/run');
    expect(ci).not.toMatch(/apt-get install/);
    const extracted = execFileSync(
      'bash',
      ['-c', `cd "${ROOT}" && awk '/^# 2\\. Run the tests/{getline; print; exit}' README.md`],
      {
        encoding: 'utf8',
      },
    ).trim();
    expect(ci).toContain("awk '/^# 2\\. Run the tests/{getline; print; exit}' README.md");
    expect(extracted).toBe(commandAfter('# 2. Run the tests'));
  });

  it('the test group holds every tool the tests and the demo need', () => {
    const test = packages('test');
    for (const p of packages('demo')) expect(test).toContain(p);
    for (const p of [
      'iproute2',
      'nftables',
      'iptables',
      'iputils-ping',
      'tcpdump',
      'openssl',
      'podman',
      'runc',
      'debootstrap',
      'stunnel4',
      'iperf3',
      'dnsutils',
      'prometheus',
    ])
      expect(test).toContain(p);
  });

  it('every "apt-get install -y" hint the code prints names packages from the list', () => {
    const all = new Set(packages('bench'));
    const hints = aptHints();
    expect(hints.length).toBeGreaterThan(3);
    const missing = hints.flatMap((h) => h.pkgs.filter((p) => !all.has(p)).map((p) => `${h.file}: ${p}`));
    expect(missing).toEqual([]);
  });

  it('an unknown group is refused with the groups it knows', () => {
    let stderr = '';
    try {
      execFileSync('bash', [join(ROOT, 'scripts/install-system-packages.sh'), '--print', 'everything'], {
        stdio: 'pipe',
      });
    } catch (err) {
      stderr = String((err as { stderr: Buffer }).stderr);
    }
    expect(stderr).toContain("unknown group 'everything' (demo, test or bench)");
  });
});
