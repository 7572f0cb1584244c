// Checks shared by the bench smoke tests: every figure measured, and lookups by name.
import { expect } from 'vitest';
import type { BenchResult, BenchSuiteResult } from '../src/types.js';

/** Every figure positive and finite, ratios too, and each budget says whether it was met. */
export function expectEveryFigureMeasured(res: BenchSuiteResult): void {
  for (const r of res.results) {
    expect(Number.isFinite(r.value) && r.value > 0, `${r.name} = ${r.value}`).toBe(true);
    if (r.ratio !== undefined) expect(Number.isFinite(r.ratio) && r.ratio > 0, `${r.name} ratio`).toBe(true);
    if (r.budget !== undefined) expect(typeof r.met, `${r.name} met`).toBe('boolean');
  }
}

/** The figures whose name matches; fails the test when there is none. */
export function findFigures(res: BenchSuiteResult, pattern: RegExp): BenchResult[] {
  const hits = res.results.filter((r) => pattern.test(r.name));
  expect(hits, `figure matching ${pattern}`).not.toHaveLength(0);
  return hits;
}
