// Compiles AuthorizationPolicy objects once, when they enter the config state, into matchers the
// L4 evaluator runs per connection without parsing or allocating: CIDRs parsed, exact values in
// Sets, wildcard values split into prefix/suffix lists.
//
// Invariants:
// - A compiled rule holds only attributes the node agent can check (source principal, namespace,
//   IP, destination port). Anything else (HTTP methods, paths, hosts, request principals, request
//   headers, remote.ip, ...) needs a waypoint. Where such attributes appear:
//     ALLOW or DENY policy → `failClosed`: the policy denies every connection to the workloads it
//       selects (ARCHITECTURE.md §6: "an L7 rule reaching an L4 enforcer becomes a DENY").
//     AUDIT policy → the rules that carry them are dropped (auditing never blocks traffic).
//   `l7Fields` names every such field so the caller can log it once per policy.
// - Policies with targetRefs are waypoint (L7) policies: `enforcedByAgent` is false and the L4
//   evaluator never applies them.
import { type Cidr, parseCidr } from '../config/ip.js';
import type {
  AuthorizationAction,
  AuthorizationCondition,
  AuthorizationOperation,
  AuthorizationPolicyObject,
  AuthorizationRule,
  AuthorizationSource,
  Labels,
} from '../config/types.js';

/** Matches Istio's string forms: exact, `prefix*`, `*suffix`, and `*` (present, non-empty). */
export interface StringMatcher {
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
  readonly suffixes: readonly string[];
  readonly presence: boolean;
  /** The values as written, for explanations. */
  readonly written: readonly string[];
}

export interface CompiledSource {
  readonly principals?: StringMatcher;
  readonly notPrincipals?: StringMatcher;
  readonly namespaces?: StringMatcher;
  readonly notNamespaces?: StringMatcher;
  readonly ipBlocks?: readonly Cidr[];
  readonly notIpBlocks?: readonly Cidr[];
}

export interface CompiledOperation {
  readonly ports?: ReadonlySet<number>;
  readonly notPorts?: ReadonlySet<number>;
}

export type L4ConditionKey = 'source.ip' | 'source.namespace' | 'source.principal' | 'destination.port';

export interface CompiledCondition {
  readonly key: L4ConditionKey;
  readonly values?: StringMatcher | readonly Cidr[] | ReadonlySet<number>;
  readonly notValues?: StringMatcher | readonly Cidr[] | ReadonlySet<number>;
}

export interface CompiledRule {
  /** Index in spec.rules, for explanations. */
  readonly index: number;
  readonly from: readonly CompiledSource[] | undefined;
  readonly to: readonly CompiledOperation[] | undefined;
  readonly when: readonly CompiledCondition[] | undefined;
}

export interface CompiledAuthorizationPolicy {
  readonly namespace: string;
  readonly name: string;
  readonly action: AuthorizationAction;
  readonly selector: Labels | undefined;
  /** False for targetRefs (waypoint) policies. */
  readonly enforcedByAgent: boolean;
  /** Rules the agent evaluates (see invariants); empty when `rules` was absent. */
  readonly rules: readonly CompiledRule[];
  /** Field paths of L7-only attributes, e.g. `spec.rules[0].to[0].operation.methods`. */
  readonly l7Fields: readonly string[];
  /** ALLOW/DENY policy with L7 attributes: denies every connection to the workloads it selects. */
  readonly failClosed: boolean;
  /** The validated object, for config dumps and explanations. */
  readonly object: AuthorizationPolicyObject;
}

const L7_SOURCE_FIELDS = [
  'requestPrincipals',
  'notRequestPrincipals',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const;
const L7_OPERATION_FIELDS = ['methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'notHosts'] as const;
const L4_CONDITION_KEYS: ReadonlySet<string> = new Set<L4ConditionKey>([
  'source.ip',
  'source.namespace',
  'source.principal',
  'destination.port',
]);

export function compileAuthorizationPolicy(policy: AuthorizationPolicyObject): CompiledAuthorizationPolicy {
  const l7Fields: string[] = [];
  const rules: CompiledRule[] = [];
  (policy.rules ?? []).forEach((rule, index) => {
    const ruleL7 = l7FieldsOf(rule, `spec.rules[${index}]`);
    l7Fields.push(...ruleL7);
    if (ruleL7.length === 0) rules.push(compileRule(rule, index));
  });
  const failClosed = l7Fields.length > 0 && policy.action !== 'AUDIT';
  return {
    namespace: policy.namespace,
    name: policy.name,
    action: policy.action,
    selector: policy.selector,
    enforcedByAgent: policy.targetRefs.length === 0,
    rules,
    l7Fields,
    failClosed,
    object: policy,
  };
}

export function compileStringMatcher(values: readonly string[]): StringMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  const suffixes: string[] = [];
  let presence = false;
  for (const v of values) {
    if (v === '*') presence = true;
    else if (v.endsWith('*')) prefixes.push(v.slice(0, -1));
    else if (v.startsWith('*')) suffixes.push(v.slice(1));
    else exact.add(v);
  }
  return { exact, prefixes, suffixes, presence, written: values };
}

/** An empty value (no peer identity) matches nothing, not even `*` (which means "present"). */
export function matchString(m: StringMatcher, value: string): boolean {
  if (m.exact.has(value)) return true;
  if (value === '') return false;
  if (m.presence) return true;
  for (const p of m.prefixes) if (value.startsWith(p)) return true;
  for (const s of m.suffixes) if (value.endsWith(s)) return true;
  return false;
}

function l7FieldsOf(rule: AuthorizationRule, at: string): string[] {
  const out: string[] = [];
  rule.from?.forEach((f, i) => {
    for (const field of L7_SOURCE_FIELDS)
      if (f.source[field] !== undefined) out.push(`${at}.from[${i}].source.${field}`);
  });
  rule.to?.forEach((t, i) => {
    for (const field of L7_OPERATION_FIELDS) {
      if (t.operation[field] !== undefined) out.push(`${at}.to[${i}].operation.${field}`);
    }
  });
  rule.when?.forEach((c, i) => {
    if (!L4_CONDITION_KEYS.has(c.key)) out.push(`${at}.when[${i}] (${c.key})`);
  });
  return out;
}

function compileRule(rule: AuthorizationRule, index: number): CompiledRule {
  return {
    index,
    from: rule.from?.map((f) => compileSource(f.source)),
    to: rule.to?.map((t) => compileOperation(t.operation)),
    when: rule.when?.map(compileCondition),
  };
}

function compileSource(s: AuthorizationSource): CompiledSource {
  const out: {
    -readonly [K in keyof CompiledSource]: CompiledSource[K];
  } = {};
  if (s.principals) out.principals = compileStringMatcher(s.principals);
  if (s.notPrincipals) out.notPrincipals = compileStringMatcher(s.notPrincipals);
  if (s.namespaces) out.namespaces = compileStringMatcher(s.namespaces);
  if (s.notNamespaces) out.notNamespaces = compileStringMatcher(s.notNamespaces);
  if (s.ipBlocks) out.ipBlocks = s.ipBlocks.map(cidrOf);
  if (s.notIpBlocks) out.notIpBlocks = s.notIpBlocks.map(cidrOf);
  return out;
}

function compileOperation(o: AuthorizationOperation): CompiledOperation {
  const out: { ports?: Set<number>; notPorts?: Set<number> } = {};
  if (o.ports) out.ports = new Set(o.ports);
  if (o.notPorts) out.notPorts = new Set(o.notPorts);
  return out;
}

function compileCondition(c: AuthorizationCondition): CompiledCondition {
  const key = c.key as L4ConditionKey;
  const compile = (values: readonly string[]) => {
    if (key === 'source.ip') return values.map(cidrOf);
    if (key === 'destination.port') return new Set(values.map(Number));
    return compileStringMatcher(values);
  };
  const out: {
    key: L4ConditionKey;
    values?: CompiledCondition['values'];
    notValues?: CompiledCondition['values'];
  } = {
    key,
  };
  if (c.values) out.values = compile(c.values);
  if (c.notValues) out.notValues = compile(c.notValues);
  return out;
}

function cidrOf(text: string): Cidr {
  const c = parseCidr(text);
  // Translation validated every block; reaching this is a programming error, not bad input.
  if (c === undefined) throw new Error(`internal: unvalidated CIDR ${JSON.stringify(text)}`);
  return c;
}
