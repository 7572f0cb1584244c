// The soak's CI length (issue 18 part 1; docs/reliability.md "Soak"): 2 minutes of mixed traffic
// under pod churn, a toggled DENY policy, 60 s certificates, a CA restart and an agent upgrade.
// Asserts what a user would notice (nothing lost, every stream exact, the policy bit, every
// certificate rotated, the events happened); memory, descriptors and metric counters are printed.
import { formatSoak, runSoak, type SoakResult } from '@hypha/test';
import { describe, expect, it } from 'vitest';

describe('soak', () => {
  it('2 minutes of churn, policy toggles, certificate rotation, a CA restart and an agent upgrade lose nothing', async () => {
    const r: SoakResult = await runSoak({ minutes: 2, certTtlSeconds: 60 });
    console.log(formatSoak(r).join('\n'));
    expect(r.caRestarted).toBe(true);
    expect(r.agentUpgraded).toBe(true);
    expect(r.l4.sent).toBeGreaterThan(0);
    expect(r.http.sent).toBeGreaterThan(0);
    expect(r.l4.failedUnexpectedly).toBe(0);
    expect(r.http.failedUnexpectedly).toBe(0);
    expect(r.denyClient.failedUnexpectedly).toBe(0);
    expect(r.l4.errors).toEqual({});
    expect(r.http.errors).toEqual({});
    expect(r.denyClient.deniedAsExpected).toBeGreaterThan(0);
    expect(r.streams.length).toBeGreaterThan(0);
    expect(r.streams.filter((s) => !s.sha256Match)).toEqual([]);
    expect(Object.keys(r.certificatesRotated).length).toBeGreaterThan(0);
    expect(Object.entries(r.certificatesRotated).filter(([, rotated]) => !rotated)).toEqual([]);
  }, 300_000);
});
