// Smoke run of `npm run bench -- hbone --quick` from the built suite (its proxies are child
// processes of the built file): stunnel and iperf3 are installed, every path is driven, and every
// promised figure is measured. Figures from a busy machine are noisy, so this checks that each was
// measured (positive, finite) and carries its budget, not the values themselves.
import { describe, expect, it } from 'vitest';
import { run } from '../dist/suites/hbone.js';
import { expectEveryFigureMeasured, findFigures } from './figures.js';

describe('bench hbone --quick', () => {
  it('reports every figure with a positive value, including the stunnel peer and the plain Node floor', async () => {
    const res = await run({ quick: true, json: true });
    expect(res.suite).toBe('hbone');
    const find = (pattern: RegExp) => findFigures(res, pattern);
    expectEveryFigureMeasured(res);
    expect(find(/^single-stream throughput, HBONE vs stunnel/)[0]!.budget).toBe('ratio >= 1.0');
    find(/^single-stream throughput, stunnel pair/);
    find(/^single-stream throughput, HBONE with node:http2 default 64 KiB windows/);
    for (const q of ['p50', 'p99']) {
      for (const path of ['direct TCP', 'stunnel pair', 'HBONE', 'plain Node TCP proxy pair']) {
        find(new RegExp(`^1 KB req/resp latency ${q} at 2000/s, ${path}`));
      }
    }
    expect(find(/^1 KB req\/resp latency p99 at 2000\/s, HBONE/)[0]!.budget).toBe('HBONE p99 <= stunnel p99');
    expect(find(/^new connections\/s, HBONE/)[0]!.budget).toBe('ratio >= 3.0');
    expect(res.environment?.stunnel).toMatch(/^stunnel \d/);
    expect(res.environment?.warmupSeconds).toBe(1);
  }, 240_000);
});
