// Compiles AuthorizationPolicy objects once, when they enter the config state (agent) or the
// waypoint's snapshot, into matchers that the one evaluator (match.ts) runs per connection or request
// without parsing or allocating: CIDRs parsed, exact values and ports in Sets, wildcard values split
// into prefix/suffix lists, hosts lowercased, header names lowercased.
//
// Invariants:
// - One compiled form serves both enforcers. Every rule is compiled with every attribute it sets;
//   `l7` marks the rules the node agent cannot check (HTTP methods, paths, hosts, request
//   principals, remote IP blocks, `when` keys other than the four L4 ones). At L4:
//     ALLOW or DENY policy with such rules → `failClosed`: the policy denies every connection to the
//       workloads it selects (ARCHITECTURE.md §6: "an L7 rule reaching an L4 enforcer becomes a DENY").
//     AUDIT policy → those rules are left out of `l4Rules` (auditing never blocks traffic).
//   `l7Fields` names every such field so the caller can log it once per policy.
// - A dry-run ALLOW or DENY policy (annotation `istio.io/dry-run: "true"`) is compiled like any other;
//   the evaluators leave it out of the enforced decision and report what it would have changed.
// - Policies with targetRefs are waypoint (L7) policies: `enforcedByAgent` is false and the L4
//   evaluator never applies them; `waypoint.ts` binds them to a waypoint's services.
// - `remoteIpBlocks` join `ipBlocks` (and `remote.ip` reads the source IP): Hypha has no proxy
//   protocol or X-Forwarded-For trust, so the remote address is the source address.
import { type Cidr, parseCidr } from '../config/ip.js';
import type {
  AuthorizationAction,
  AuthorizationCondition,
  AuthorizationOperation,
  AuthorizationPolicyObject,
  AuthorizationRule,
  AuthorizationSource,
  Labels,
  PolicyTargetRef,
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
  /** ipBlocks and remoteIpBlocks together (see invariants). */
  readonly ipBlocks?: readonly Cidr[];
  readonly notIpBlocks?: readonly Cidr[];
  /**
   * JWT principals (`iss/sub`) of the token the waypoint verified (RequestAuthentication). A request
   * without a verified token has none: `requestPrincipals` does not match and `notRequestPrincipals`
   * does (Istio's meaning). L7 only: at L4 they fail closed like every L7 attribute.
   */
  readonly requestPrincipals?: StringMatcher;
  readonly notRequestPrincipals?: StringMatcher;
}

export interface CompiledOperation {
  readonly ports?: ReadonlySet<number>;
  readonly notPorts?: ReadonlySet<number>;
  readonly methods?: StringMatcher;
  readonly notMethods?: StringMatcher;
  readonly paths?: StringMatcher;
  readonly notPaths?: StringMatcher;
  /** Lowercased: hosts compare case-insensitively. */
  readonly hosts?: StringMatcher;
  readonly notHosts?: StringMatcher;
  /** Sets methods, paths or hosts (or their not* forms): needs an HTTP request. */
  readonly needsRequest: boolean;
}

/** The `when` keys the node agent can check. */
export type L4ConditionKey = 'source.ip' | 'source.namespace' | 'source.principal' | 'destination.port';

/**
 * What a `when` key reads. `request.auth.*` keys (`requestPrincipal`, `audiences`, `presenter`,
 * `claim`) read the verified token (waypoint only). `unsupported`: a key Istio knows that no Hypha
 * enforcer reads (destination.ip, connection.sni, ...): L4 fails closed on it, the waypoint rejects it.
 */
export type ConditionAttribute =
  | 'ip'
  | 'namespace'
  | 'principal'
  | 'port'
  | 'header'
  | 'requestPrincipal'
  | 'audiences'
  | 'presenter'
  | 'claim'
  | 'unsupported';

export interface CompiledCondition {
  /** As written, e.g. `request.headers[x-user]`. */
  readonly key: string;
  readonly reads: ConditionAttribute;
  /** Lowercased header name, for `request.headers[...]`. */
  readonly header?: string;
  /** The claim's path, for `request.auth.claims[a][b]`: ['a', 'b']. */
  readonly claim?: readonly string[];
  readonly values?: StringMatcher | readonly Cidr[] | ReadonlySet<number>;
  readonly notValues?: StringMatcher | readonly Cidr[] | ReadonlySet<number>;
}

export interface CompiledRule {
  /** Index in spec.rules, for explanations. */
  readonly index: number;
  readonly from: readonly CompiledSource[] | undefined;
  readonly to: readonly CompiledOperation[] | undefined;
  readonly when: readonly CompiledCondition[] | undefined;
  /** Uses attributes the node agent cannot check (see invariants). */
  readonly l7: boolean;
  /** Reads the HTTP request (methods, paths, hosts, headers, its token): plain TCP cannot satisfy it. */
  readonly needsRequest: boolean;
}

export interface CompiledAuthorizationPolicy {
  readonly namespace: string;
  readonly name: string;
  /** `namespace/name`, as decisions, logs and metrics name the policy. */
  readonly key: string;
  readonly action: AuthorizationAction;
  readonly selector: Labels | undefined;
  readonly targetRefs: readonly PolicyTargetRef[];
  /** False for targetRefs (waypoint) policies. */
  readonly enforcedByAgent: boolean;
  /** Every rule, as the waypoint evaluates them; empty when `rules` was absent. */
  readonly rules: readonly CompiledRule[];
  /** The rules the agent evaluates: those without L7 attributes. */
  readonly l4Rules: readonly CompiledRule[];
  /** Field paths of L7-only attributes, e.g. `spec.rules[0].to[0].operation.methods`. */
  readonly l7Fields: readonly string[];
  /** ALLOW/DENY policy with L7 attributes: at L4, denies every connection to the workloads it selects. */
  readonly failClosed: boolean;
  /**
   * Annotated dry-run: never enforced; the evaluators report where the decision with it would differ.
   * AUDIT policies ignore it (they never change a decision).
   */
  readonly dryRun: boolean;
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
const CONDITION_READS: ReadonlyMap<string, ConditionAttribute> = new Map<string, ConditionAttribute>([
  ['source.ip', 'ip'],
  ['remote.ip', 'ip'],
  ['source.namespace', 'namespace'],
  ['source.principal', 'principal'],
  ['destination.port', 'port'],
  ['request.auth.principal', 'requestPrincipal'],
  ['request.auth.audiences', 'audiences'],
  ['request.auth.presenter', 'presenter'],
]);
/** `when` reads that need the HTTP request (headers, or the token it carried). */
const REQUEST_READS: ReadonlySet<ConditionAttribute> = new Set<ConditionAttribute>([
  'header',
  'requestPrincipal',
  'audiences',
  'presenter',
  'claim',
]);
const L4_CONDITION_KEYS: ReadonlySet<string> = new Set<L4ConditionKey>([
  'source.ip',
  'source.namespace',
  'source.principal',
  'destination.port',
]);
const HEADER_KEY = /^request\.headers\[([^\]]+)\]$/;
const CLAIM_KEY = /^request\.auth\.claims((?:\[[^\]]+\])+)$/;

export function compileAuthorizationPolicy(policy: AuthorizationPolicyObject): CompiledAuthorizationPolicy {
  const l7Fields: string[] = [];
  const rules: CompiledRule[] = [];
  (policy.rules ?? []).forEach((rule, index) => {
    const ruleL7 = l7FieldsOf(rule, `spec.rules[${index}]`);
    l7Fields.push(...ruleL7);
    rules.push(compileRule(rule, index, ruleL7.length > 0));
  });
  return {
    namespace: policy.namespace,
    name: policy.name,
    key: `${policy.namespace}/${policy.name}`,
    action: policy.action,
    selector: policy.selector,
    targetRefs: policy.targetRefs,
    enforcedByAgent: policy.targetRefs.length === 0,
    rules,
    l4Rules: rules.filter((r) => !r.l7),
    l7Fields,
    failClosed: l7Fields.length > 0 && policy.action !== 'AUDIT',
    dryRun: policy.dryRun === true && policy.action !== 'AUDIT',
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

function compileRule(rule: AuthorizationRule, index: number, l7: boolean): CompiledRule {
  const to = rule.to?.map((t) => compileOperation(t.operation));
  const when = rule.when?.map(compileCondition);
  const from = rule.from?.map((f) => compileSource(f.source));
  return {
    index,
    from,
    to,
    when,
    l7,
    needsRequest:
      (to?.some((o) => o.needsRequest) ?? false) ||
      (when?.some((c) => needsRequest(c)) ?? false) ||
      (from?.some((s) => s.requestPrincipals !== undefined || s.notRequestPrincipals !== undefined) ?? false),
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function compileSource(s: AuthorizationSource): CompiledSource {
  const out: Mutable<CompiledSource> = {};
  if (s.principals) out.principals = compileStringMatcher(s.principals);
  if (s.notPrincipals) out.notPrincipals = compileStringMatcher(s.notPrincipals);
  if (s.namespaces) out.namespaces = compileStringMatcher(s.namespaces);
  if (s.notNamespaces) out.notNamespaces = compileStringMatcher(s.notNamespaces);
  const ipBlocks = joined(s.ipBlocks, s.remoteIpBlocks);
  if (ipBlocks) out.ipBlocks = ipBlocks.map(cidrOf);
  const notIpBlocks = joined(s.notIpBlocks, s.notRemoteIpBlocks);
  if (notIpBlocks) out.notIpBlocks = notIpBlocks.map(cidrOf);
  if (s.requestPrincipals) out.requestPrincipals = compileStringMatcher(s.requestPrincipals);
  if (s.notRequestPrincipals) out.notRequestPrincipals = compileStringMatcher(s.notRequestPrincipals);
  return out;
}

function joined(
  a: readonly string[] | undefined,
  b: readonly string[] | undefined,
): readonly string[] | undefined {
  return a && b ? [...a, ...b] : (a ?? b);
}

function compileOperation(o: AuthorizationOperation): CompiledOperation {
  const out: Mutable<CompiledOperation> = {
    needsRequest: L7_OPERATION_FIELDS.some((f) => o[f] !== undefined),
  };
  if (o.ports) out.ports = new Set(o.ports);
  if (o.notPorts) out.notPorts = new Set(o.notPorts);
  if (o.methods) out.methods = compileStringMatcher(o.methods);
  if (o.notMethods) out.notMethods = compileStringMatcher(o.notMethods);
  if (o.paths) out.paths = compileStringMatcher(o.paths);
  if (o.notPaths) out.notPaths = compileStringMatcher(o.notPaths);
  if (o.hosts) out.hosts = compileStringMatcher(o.hosts.map((h) => h.toLowerCase()));
  if (o.notHosts) out.notHosts = compileStringMatcher(o.notHosts.map((h) => h.toLowerCase()));
  return out;
}

/** Reads the HTTP request: plain TCP (and L4) cannot satisfy it. */
export function needsRequest(c: CompiledCondition): boolean {
  return REQUEST_READS.has(c.reads);
}

function compileCondition(c: AuthorizationCondition): CompiledCondition {
  const header = HEADER_KEY.exec(c.key)?.[1]?.toLowerCase();
  const claimPath = CLAIM_KEY.exec(c.key)?.[1];
  const claim = claimPath?.slice(1, -1).split('][');
  const reads: ConditionAttribute =
    header !== undefined
      ? 'header'
      : claim !== undefined
        ? 'claim'
        : (CONDITION_READS.get(c.key) ?? 'unsupported');
  const compile = (values: readonly string[]) => {
    if (reads === 'ip') return values.map(cidrOf);
    if (reads === 'port') return new Set(values.map(Number));
    return compileStringMatcher(values);
  };
  const out: Mutable<CompiledCondition> = { key: c.key, reads };
  if (header !== undefined) out.header = header;
  if (claim !== undefined) out.claim = claim;
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
