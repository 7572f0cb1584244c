import { describe, expect, it } from 'vitest';
import { describeRelease, releaseFreedMemory, releaseStartupMemory } from '../../src/daemon/memory.js';

describe('releaseFreedMemory', () => {
  it('gives the pages of a large dropped load back to the kernel', () => {
    // A load's worth of garbage: 2M small objects (about 250 MB of heap), then dropped.
    let junk: { a: string; b: number }[] | undefined = [];
    for (let i = 0; i < 2_000_000; i++) junk.push({ a: `x${i}`, b: i });
    const peak = process.memoryUsage.rss();
    junk.length = 0;
    junk = undefined;
    const r = releaseFreedMemory();
    // Without the pool's release, V8 (Node 24) keeps nearly all of it resident.
    expect(peak - r.rssAfter).toBeGreaterThan(100 * 1048576);
    expect(r.rssAfter).toBeLessThan(r.rssBefore);
    expect(describeRelease(r)).toMatch(/^RSS \d+ → \d+ MB in \d+ ms$/);
  });

  it('can be called again (the gc function is made once)', () => {
    expect(releaseFreedMemory().ms).toBeGreaterThanOrEqual(0);
  });

  it('skips the start-up release right after another (a large config load already ran one)', () => {
    releaseFreedMemory();
    expect(releaseStartupMemory()).toBeUndefined();
  });
});
