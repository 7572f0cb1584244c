// `npm run bench -- soak [--json] [--minutes N]` (default 20; --quick: 2): the soak of issue 18
// (test/src/soak.ts, docs/reliability.md "Soak"): mixed traffic (L4, long streams, HTTP and gRPC
// through a waypoint) on the two-node mesh under pod and endpoint churn, a toggled DENY policy,
// 60 s certificates, a CA restart, the API server (stand-in) dropping every watch and answering
// 410, and an agent upgrade. Prints the figures (text lines on stderr, the results table or JSON on
// stdout; the per-process timeline is among the text lines).
import { formatSoak, runSoak } from '@hypha/test';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

export async function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  const minutes = opts.minutes ?? (opts.quick ? 2 : 20);
  const r = await runSoak({ minutes, progress: (l) => process.stderr.write(`soak: ${l}\n`) });
  for (const line of formatSoak(r)) process.stderr.write(`${line}\n`);
  const results: BenchResult[] = [];
  const traffic = (label: string, c: typeof r.l4) => {
    results.push(
      { name: `${label} sent`, value: c.sent, unit: 'count' },
      { name: `${label} succeeded`, value: c.succeeded, unit: 'count' },
      {
        name: `${label} failed unexpectedly`,
        value: c.failedUnexpectedly,
        unit: 'count',
        budget: '0',
        met: c.failedUnexpectedly === 0,
      },
      { name: `${label} denied as expected`, value: c.deniedAsExpected, unit: 'count' },
    );
  };
  traffic('L4 connections', r.l4);
  traffic('HTTP requests via waypoint', r.http);
  traffic('gRPC calls via waypoint', r.grpc);
  traffic('DENY-targeted connections', r.denyClient);
  const exact = r.streams.filter((s) => s.sha256Match).length;
  results.push({
    name: 'long streams sha256-exact',
    value: exact,
    unit: `of ${r.streams.length}`,
    budget: 'all',
    met: exact === r.streams.length,
  });
  results.push({ name: 'pods added (churn)', value: r.churn.podsAdded, unit: 'count' });
  results.push({ name: 'DENY toggles', value: r.denyToggles, unit: 'count' });
  results.push({ name: 'endpoint changes (web, rpc)', value: r.churn.endpointChanges, unit: 'count' });
  if (r.api) {
    results.push(
      { name: 'API server: watches dropped', value: r.api.watchesDropped, unit: 'count' },
      { name: 'API server: 410 answers', value: r.api.expiredAnswers, unit: 'count' },
      { name: 'API server: relists', value: r.api.relists, unit: 'count' },
      { name: 'API server: all watching again after', value: r.api.rewatchSeconds, unit: 's' },
    );
  }
  const rotated = Object.values(r.certificatesRotated).filter(Boolean).length;
  const ids = Object.keys(r.certificatesRotated).length;
  results.push({
    name: 'certificates rotated',
    value: rotated,
    unit: `of ${ids}`,
    budget: 'all',
    met: rotated === ids,
  });
  for (const [name, g] of Object.entries(r.growthAfterWarmup)) {
    if (g.heapPct !== undefined) {
      results.push({
        name: `${name} heap growth after warm-up`,
        value: g.heapPct,
        unit: '%',
        budget: '<= 10%',
        met: g.heapPct <= 10,
      });
    }
    results.push(
      {
        name: `${name} RSS growth after warm-up`,
        value: g.rssPct,
        unit: '%',
        budget: '<= 10%',
        met: g.rssPct <= 10,
      },
      {
        name: `${name} fd growth after warm-up`,
        value: g.fdPct,
        unit: '%',
        budget: '<= 10%',
        met: g.fdPct <= 10,
      },
    );
  }
  results.push(
    {
      name: 'L4 connections: metric - client count',
      value: r.metrics.l4ConnectionsOpened - r.metrics.l4ClientConnections,
      unit: 'count',
      budget: '0',
      met: r.metrics.l4ConnectionsOpened === r.metrics.l4ClientConnections,
    },
    {
      name: 'HTTP requests: metric - client count',
      value: r.metrics.httpRequests - r.metrics.httpClientRequests,
      unit: 'count',
      budget: '0',
      met: r.metrics.httpRequests === r.metrics.httpClientRequests,
    },
    {
      name: 'gRPC calls: metric - client count',
      value: r.metrics.grpcRequests - r.metrics.grpcClientRequests,
      unit: 'count',
      budget: '0',
      met: r.metrics.grpcRequests === r.metrics.grpcClientRequests,
    },
  );
  for (const e of r.processes.end) {
    const s = r.processes.start.find((x) => x.name === e.name);
    const w = r.processes.warm.find((x) => x.name === e.name);
    results.push({
      name: `${e.name} HBONE connections start/warm/end`,
      value: e.hboneConnections,
      unit: `(start ${s?.hboneConnections ?? '-'}, warm ${w?.hboneConnections ?? '-'})`,
    });
  }
  return {
    suite: 'soak',
    environment: {
      command: `npm run bench -- soak${opts.json ? ' --json' : ''} --minutes ${minutes}`,
      durationSeconds: r.durationSeconds,
      configSource: r.configSource,
      caRestarted: String(r.caRestarted),
      agentUpgraded: String(r.agentUpgraded),
    },
    results,
  };
}
