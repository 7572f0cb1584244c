// Smoke run of `npm run bench -- upgrade --quick`: on one namespace cluster under the same steady
// churn, both agents are restarted (stop, then start) and then replaced by the socket hand-off, and
// every figure of both is reported. Timings from a busy machine are noisy, so those are only checked
// to be measured; that the hand-off fails no connection and cuts no stream is a correctness
// property of the upgrade, so it is asserted, as is the restart's outage that it is compared with.
import { describe, expect, it } from 'vitest';
import { run } from '../src/suites/upgrade.js';
import { findFigures } from './figures.js';

describe('bench upgrade --quick', () => {
  it('reports the hand-off and the restart side by side, and the hand-off failed no connection', async () => {
    const res = await run({ quick: true, json: true });
    expect(res.suite).toBe('upgrade');
    const one = (pattern: RegExp) => findFigures(res, pattern)[0]!;

    // Failure counts may be 0, and so may the restart's long streams' bytes (all of them reset);
    // every other figure is a measured positive number.
    for (const r of res.results) {
      expect(Number.isFinite(r.value) && r.value >= 0, `${r.name} = ${r.value}`).toBe(true);
      if (!/ failed, | cut, |^bytes carried by the long-lived streams, restart/.test(r.name))
        expect(r.value, r.name).toBeGreaterThan(0);
      if (r.ratio !== undefined)
        expect(Number.isFinite(r.ratio) && r.ratio > 0, `${r.name} ratio`).toBe(true);
    }

    // The same load in both phases.
    const opened = one(/^new connections opened, hand-off/);
    expect(opened.value).toBe(one(/^new connections opened, restart/).value);
    expect(opened.peerValue).toBe(opened.value);

    // The goal: no connection failed and no long-lived stream was cut by the hand-off.
    const failed = one(/^new connections failed, hand-off/);
    expect(failed).toMatchObject({ value: 0, budget: '0 failed', met: true });
    expect(one(/^long-lived streams cut, hand-off/)).toMatchObject({ value: 0, budget: '0 cut', met: true });
    expect(res.environment?.handoffErrors).toBe('{}');

    // The peer: a restart leaves the node with no agent accepting, so connections fail meanwhile.
    expect(one(/^new connections failed, restart \(stop, then start\)$/).value).toBeGreaterThan(0);
    expect(failed.peerValue).toBe(one(/^new connections failed, restart/).value);

    one(/^bytes carried by the long-lived streams, restart/);
    for (const figure of ['longest connect of a new connection', 'longest round trip of a new connection']) {
      for (const variant of ['restart', 'hand-off']) one(new RegExp(`^${figure}, ${variant}`));
    }
    for (const node of ['node-a', 'node-b']) {
      for (const variant of ['restart', 'hand-off'])
        one(new RegExp(`^agent replacement on ${node}, ${variant}`));
    }
    expect(res.environment?.command).toBe('npm run bench -- upgrade --json --quick');
  }, 150_000);
});
