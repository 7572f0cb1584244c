// Smoke run of `npm run bench -- l4 --quick`: the suite builds the demo mesh, drives all three
// paths and the Node floor pair and reports every figure it promises. Figures from a busy machine are noisy, so this checks
// that each one was measured (positive, finite) and that the mesh path really went through the
// agents, not the values themselves.
import { describe, expect, it } from 'vitest';
import { run } from '../src/suites/l4.js';
import { expectEveryFigureMeasured, findFigures } from './figures.js';

describe('bench l4 --quick', () => {
  it('reports every figure with a positive value, and the mesh carried the bytes over mTLS', async () => {
    const res = await run({ quick: true, json: true });
    expect(res.suite).toBe('l4');
    const byName = new Map(res.results.map((r) => [r.name, r]));
    const find = (pattern: RegExp) => findFigures(res, pattern);

    expectEveryFigureMeasured(res);
    expect(byName.size).toBe(res.results.length);

    for (const path of ['direct TCP', 'Node floor pair', 'stunnel pair', 'mesh']) {
      find(new RegExp(`^single-stream throughput, ${path}`));
    }
    // Every gap to stunnel is shown against the runtime's floor too.
    expect(find(/^single-stream throughput, mesh vs the Node floor pair/)[0]!.ratio).toBeGreaterThan(0);
    expect(find(/^new connections\/s, mesh vs the Node floor pair/)[0]!.ratio).toBeGreaterThan(0);
    for (const side of ['client', 'server'])
      find(new RegExp(`^Node floor pair, floor ${side}: RSS before any load`));
    for (const path of ['direct TCP', 'Node floor pair', 'stunnel pair', 'mesh']) {
      for (const q of ['p50', 'p99']) find(new RegExp(`^latency ${q}, .*, ${path}`));
    }
    // The tail is budgeted against the runtime's floor, measured in the same run.
    const p99 = find(/^latency p99, .*, mesh vs the Node floor pair/)[0]!;
    expect(p99.budget).toBe('mesh p99 <= 1.2x the floor p99');
    expect(p99.ratio).toBeGreaterThan(0);
    find(/^new connections\/s, stunnel pair/);
    const meshConns = find(/^new connections\/s, mesh \(streams/)[0]!;
    expect(meshConns.budget).toBe('ratio >= 3.0');

    // The mesh throughput figure stands on bytes the node-b agent logged as inbound mTLS.
    const carried = find(/^bytes carried over mTLS by the agents/)[0]!;
    expect(carried.value).toBeGreaterThan(1);

    for (const node of ['node-a', 'node-b']) {
      const cpu = find(new RegExp(`^agent ${node}: vCPU per 1000 req/s`))[0]!;
      expect(cpu.budget).toBe('<= 0.12 vCPU');
      const rss = find(new RegExp(`^agent ${node}: peak RSS`))[0]!;
      expect(rss.unit).toBe('MB');
      expect(rss.budget).toBe('<= 128 MB');
      expect(find(new RegExp(`^agent ${node}: RSS when ready`))[0]!.budget).toBe('<= 64 MB');
    }
    // The same HTTP traffic through the C peer and the Node floor, each process's CPU measured.
    for (const name of ['stunnel client', 'stunnel server', 'floor client', 'floor server']) {
      find(new RegExp(`^${name}: vCPU per 1000 req/s`));
    }
    expect(find(/^both agents vs the stunnel pair/)[0]!.budget).toBe('agents <= stunnel pair');
    find(/^both agents vs the Node floor pair/);
    for (const pair of ['stunnel', 'floor']) find(new RegExp(`^HTTP requests through the ${pair} pair`));
    const http = find(/^HTTP requests through the mesh/)[0]!;
    expect(http.unit).toBe('req/s');
  }, 150_000);
});
