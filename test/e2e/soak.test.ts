// The soak's CI length (issue 18 part 1; docs/reliability.md "Soak"): 2 minutes of mixed traffic
// (L4, long streams, HTTP and gRPC through a waypoint) with agents and the waypoint on the stand-in
// Kubernetes API server, under pod and endpoint churn, a toggled DENY policy, 60 s certificates, a
// CA restart, every watch dropped and answered 410, and an agent upgrade. Asserts what a user would
// notice (nothing lost, every stream exact, the policy bit, every certificate rotated, config
// changes still arrive after the relist, the events happened); memory, heap, descriptors, HBONE
// connections and metric counters are printed.

import { MESH_PROCESS_ENV } from '@hypha/shared/hbone';
import { formatSoak, runSoak, type SoakResult } from '@hypha/test';
import { describe, expect, it } from 'vitest';

describe('soak', () => {
  it('2 minutes of churn, policy toggles, certificate rotation, a CA restart, watches dropped with 410s and an agent upgrade lose nothing', async () => {
    const r: SoakResult = await runSoak({ minutes: 2, certTtlSeconds: 60 });
    console.log(formatSoak(r).join('\n'));
    expect(r.caRestarted).toBe(true);
    expect(r.agentUpgraded).toBe(true);
    for (const c of [r.l4, r.http, r.grpc]) {
      expect(c.sent).toBeGreaterThan(0);
      expect(c.failedUnexpectedly).toBe(0);
      expect(c.errors).toEqual({});
    }
    expect(r.denyClient.failedUnexpectedly).toBe(0);
    expect(r.denyClient.deniedAsExpected).toBeGreaterThan(0);
    expect(r.streams.length).toBeGreaterThan(0);
    expect(r.streams.filter((s) => !s.sha256Match)).toEqual([]);
    expect(Object.keys(r.certificatesRotated).length).toBeGreaterThan(0);
    expect(Object.entries(r.certificatesRotated).filter(([, rotated]) => !rotated)).toEqual([]);
    expect(r.churn.endpointChanges).toBeGreaterThan(0);
    // The API server event happened, and the agents' config kept up after it: the DENY policy
    // toggled after the relist was enforced, and pods created after it got certificates.
    expect(r.configSource).toBe('kubernetes');
    expect(r.api?.watchesDropped).toBeGreaterThan(0);
    expect(r.api?.expiredAnswers).toBeGreaterThan(0);
    expect(r.api?.relists).toBeGreaterThan(0);
    expect(r.api?.deniedAfter).toBeGreaterThan(0);
    expect(r.api?.churnCertificatesAfter).toBeGreaterThan(0);
    // Every mesh process (agents, waypoint, CA) ran with the manifests' malloc settings.
    expect(r.processes.start.map((p) => p.name).sort()).toEqual(
      expect.arrayContaining(['agent node-a', 'agent node-b', 'ca']),
    );
    for (const p of r.processes.end)
      expect({ name: p.name, arenas: p.mallocArenaMax }).toEqual({
        name: p.name,
        arenas: MESH_PROCESS_ENV.MALLOC_ARENA_MAX,
      });
  }, 330_000);
});
