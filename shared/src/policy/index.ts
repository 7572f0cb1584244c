// Public surface of @hypha/shared/policy: name every export (no `export *`).
export type {
  CompiledAuthorizationPolicy,
  CompiledCondition,
  CompiledOperation,
  CompiledRule,
  CompiledSource,
  L4ConditionKey,
  StringMatcher,
} from './compile.js';
export { compileAuthorizationPolicy, compileStringMatcher, matchString } from './compile.js';
export type {
  AuditMatch,
  EvaluateOptions,
  L4Decision,
  L4Explanation,
  L4Request,
  PolicyRef,
} from './evaluate.js';
export { evaluateL4, explainL4, policyAppliesTo, selectorMatches } from './evaluate.js';
