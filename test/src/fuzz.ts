// Run parameters for the property-based fuzz suites (`*.fuzz.test.ts`, fast-check). Each suite names
// its default run count and time budget so the whole fuzz set stays within about a minute of CI on
// two cores; FUZZ_RUNS and FUZZ_SEED override them to search longer or replay a failure:
//
//   FUZZ_SEED=-1234567 FUZZ_RUNS=200 npx vitest run shared/test/hbone/server.fuzz.test.ts
//
// fast-check prints the seed and the counterexample path of a failing property; docs/reliability.md
// says how to replay one. No import of fast-check here: the result is a plain object its
// `assert` accepts as parameters.

export interface FuzzParameters {
  numRuns: number;
  seed?: number;
  /** Stop generating new runs past this many milliseconds; the runs done so far still count. */
  interruptAfterTimeLimit: number;
  markInterruptAsFailure: false;
}

export function fuzzParameters(defaults: { runs: number; timeLimitMs: number }): FuzzParameters {
  const runs = Number.parseInt(process.env.FUZZ_RUNS ?? '', 10);
  const seed = Number.parseInt(process.env.FUZZ_SEED ?? '', 10);
  const explicitRuns = Number.isSafeInteger(runs) && runs > 0;
  return {
    numRuns: explicitRuns ? runs : defaults.runs,
    ...(Number.isSafeInteger(seed) ? { seed } : {}),
    // An explicit run count is a request to run that many: the time budget then scales with it.
    interruptAfterTimeLimit: explicitRuns
      ? Math.max(defaults.timeLimitMs, (defaults.timeLimitMs * runs) / defaults.runs)
      : defaults.timeLimitMs,
    markInterruptAsFailure: false,
  };
}

/** A vitest timeout for a test running one property with these parameters (the time limit plus room to shrink). */
export function fuzzTestTimeout(params: FuzzParameters): number {
  return params.interruptAfterTimeLimit + 40_000;
}
