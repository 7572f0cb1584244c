// Smoke run of `npm run bench -- waypoint --quick`: the suite builds the two-node mesh, drives the
// four paths (waypoint, waypoint alone, nginx, bare Node proxy) and reports every figure it
// promises with the budgets. Figures from a busy machine are noisy, so this checks that
// each was measured, not the values; the suite itself refuses (MESH_BYPASSED) when the waypoint
// did not count the requests sent through it.
import { describe, expect, it } from 'vitest';
import { run } from '../src/suites/waypoint.js';
import { expectEveryFigureMeasured, findFigures } from './figures.js';

describe('bench waypoint --quick', () => {
  it('reports every path against nginx, and the waypoint against the budgets and the Node floor', async () => {
    const res = await run({ quick: true, json: true });
    expect(res.suite).toBe('waypoint');
    expectEveryFigureMeasured(res);
    const find = (pattern: RegExp) => findFigures(res, pattern);

    for (const path of ['waypoint path', 'waypoint alone', 'bare Node proxy']) {
      for (const figure of ['requests/s, saturated', 'p50', 'p99'])
        expect(find(new RegExp(`^${figure}.*, ${path}`))[0]!.peer).toBe('nginx (1 worker)');
    }
    const budgets = (pattern: RegExp) => find(pattern).map((r) => r.budget);
    expect(budgets(/^requests\/s, saturated.*, waypoint path$/)).toEqual(['ratio >= 0.5']);
    expect(budgets(/^p99.*, waypoint path$/)).toEqual(['ratio <= 3']);
    expect(budgets(/^waypoint CPU.*, waypoint path$/)).toEqual(['<= 0.45', undefined]);
    const floor = find(/^waypoint CPU.*, waypoint path, against the runtime's floor$/)[0]!;
    expect(floor.budget).toBe('ratio <= 1.5');
    expect(floor.peer).toMatch(/^bare Node proxy/);
    expect(budgets(/^waypoint peak RSS/)).toEqual(['<= 150']);
    expect(find(/^waypoint CPU.*, waypoint alone$/)).toHaveLength(2);
    expect(find(/^bare Node proxy .* CPU/).map((r) => r.peer)).toEqual([
      'nginx (1 worker)',
      'nginx (1 worker)',
    ]);
  }, 240_000);
});
