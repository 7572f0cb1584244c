// Smoke run of `npm run bench -- scale --quick`: 1k and 5k pods loaded through the file source and
// synced through the Kubernetes source (from the stand-in API server) in child processes; every
// figure is measured (timings are not asserted: this is a busy CI machine).
import { describe, expect, it } from 'vitest';
import { run } from '../src/suites/scale.js';
import { expectEveryFigureMeasured, findFigures } from './figures.js';

describe('bench scale --quick', () => {
  it('measures load, memory, one change and lookups at each size, for both sources', async () => {
    const res = await run({ quick: true, json: true });
    expect(res.suite).toBe('scale');
    expect(res.environment?.command).toBe('npm run bench -- scale --json --quick');
    expectEveryFigureMeasured(res);
    for (const at of ['1000 pods / 200 services / 50 policies', '5000 pods / 1000 services / 250 policies']) {
      for (const figure of [
        'load through the file source until ready',
        'RSS after load',
        'heap used after load',
        'peak RSS while loading',
        'one pod added \\(state mutator, median\\)',
        'one pod made not ready \\(state mutator, median\\)',
        'one pod change, slowest of 42 \\(state mutator\\)',
        'one pod added/changed in a small file next to the big one',
        'findWorkloadByIp, ns per lookup',
        'findServiceByVip, ns per lookup',
      ])
        expect(findFigures(res, new RegExp(`^${figure}.*, ${at}$`))).toHaveLength(1);
      for (const figure of [
        'sync from the API server until ready',
        'RSS after sync',
        'heap used after sync',
        'peak RSS while syncing',
        'one pod status PATCHed through the API until the state shows it',
        'one pod status PATCHed, slowest of 22',
        'findWorkloadByIp, ns per lookup',
        'findServiceByVip, ns per lookup',
      ])
        expect(findFigures(res, new RegExp(`^Kubernetes source: ${figure}.*, ${at}$`))).toHaveLength(1);
    }
    for (const r of findFigures(res, /ns per lookup/)) expect(r.peer).toBe('Map.get, same keys');
  }, 180_000);
});
