// Public surface of @hypha/shared/policy: name every export (no `export *`).
export type {
  CompiledAuthorizationPolicy,
  CompiledCondition,
  CompiledOperation,
  CompiledRule,
  CompiledSource,
  ConditionAttribute,
  L4ConditionKey,
  StringMatcher,
} from './compile.js';
export { compileAuthorizationPolicy, compileStringMatcher, matchString } from './compile.js';
export type {
  AuditMatch,
  EvaluateOptions,
  L4Decision,
  L4DryRun,
  L4Explanation,
  L4Request,
  PolicyRef,
} from './evaluate.js';
export { evaluateL4, explainL4, policyAppliesTo, selectorMatches } from './evaluate.js';
export type { RequestAuth } from './match.js';
export type {
  GatewayRef,
  L7Attributes,
  L7Decision,
  L7DryRun,
  L7Explanation,
  L7PolicySet,
  WaypointPolicy,
} from './waypoint.js';
export {
  bindWaypointPolicy,
  compileWaypointPolicy,
  dependsOnRequest,
  EMPTY_L7_POLICY_SET,
  evaluateL7,
  explainL7,
  indexL7Policies,
} from './waypoint.js';
