// `hypha agent` flags that are checked before the agent starts: a bad value exits 2 naming the flag.
import { describe, expect, it } from 'vitest';
import { runHypha } from '../run-hypha.js';

describe('hypha agent --cert-ttl', () => {
  it.each([['24'], ['1.5h'], ['500ms']])('refuses --cert-ttl %s with exit 2 and says why', async (ttl) => {
    const r = await runHypha([
      'agent',
      '--node',
      'node-a',
      '--config',
      'file:/nonexistent.yaml',
      '--cert-ttl',
      ttl,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--cert-ttl: invalid duration/);
  });

  it('is listed in --help with its default', async () => {
    const r = await runHypha(['agent', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--cert-ttl <duration>[\s\S]*default: "24h"/);
  });
});
