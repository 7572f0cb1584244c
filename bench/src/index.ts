export type { BenchOptions, BenchResult, BenchSuite, BenchSuiteResult } from './types.js';
