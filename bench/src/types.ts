// Every bench suite returns this shape; `--json` prints it as is.
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  /** The peer measured in the same run (stunnel, nginx, direct TCP), when there is one. */
  peer?: string;
  peerValue?: number;
  /** value / peerValue, or the inverse for lower-is-better figures; the suite says which in `name`. */
  ratio?: number;
  /** Budget from the handbook, as text ("ratio >= 1.0"), and whether this run met it. */
  budget?: string;
  met?: boolean;
}

export interface BenchSuiteResult {
  suite: string;
  /** The command line and machine facts needed to reproduce the figures. */
  environment?: Record<string, string | number>;
  results: BenchResult[];
}

export interface BenchOptions {
  json?: boolean;
  /** Shorter runs for smoke checks (`--quick`). */
  quick?: boolean;
  /** The soak's duration in minutes (`--minutes N`). */
  minutes?: number;
}

export type BenchSuite = (opts: BenchOptions) => Promise<BenchSuiteResult>;
