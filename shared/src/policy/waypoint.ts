// AuthorizationPolicy at the waypoint (L7): which policies apply to a service the waypoint serves, and
// the decision for each request (or plain TCP connection), with the same compiled rules and the same
// matcher as the node agent's L4 decision (match.ts). `hypha policy explain` calls the same functions.
//
// Invariants:
// - Decision order (Istio's): any DENY match → deny; no ALLOW policy applies → allow;
//   any ALLOW match → allow; otherwise deny. AUDIT matches are reported, never change the answer.
// - A policy applies when one of its targetRefs names the waypoint Gateway (every service) or the
//   destination Service (same namespace as the policy). `selector` policies are the agents' (L4).
// - String matching (principals, namespaces, paths, hosts, header values): exact, "prefix*",
//   "*suffix", or "*" for any non-empty value. Hosts compare case-insensitively.
// - For plain TCP (no request) an ALLOW rule that needs request attributes does not match and a
//   DENY rule matches on its L4 part alone: missing L7 data never widens access.
// - A policy the waypoint cannot enforce entirely (a `when` key it does not read, a targetRef kind
//   it does not serve) is rejected by name and field, not half-applied.
// - Dry-run policies (annotation `istio.io/dry-run: "true"`) never decide: the set keeps them in a
//   `shadow` set, decided second; where it differs, the decision carries `dryRun` ("would deny/allow").
// - Per request: no parsing, and no allocation unless an AUDIT policy matches or a dry-run policy
//   would change the answer. Decisions that depend only on a rule are built once, frozen and shared:
//   callers must not mutate them.
import { ConfigError } from '../config/errors.js';
import { translateObject } from '../config/translate.js';
import type { AuthorizationAction, AuthorizationPolicyObject } from '../config/types.js';
import {
  type CompiledAuthorizationPolicy,
  type CompiledRule,
  compileAuthorizationPolicy,
} from './compile.js';
import { dryRunLine } from './evaluate.js';
import {
  describeMismatch,
  type Facts,
  firstMatchingRule,
  newFacts,
  type RequestAuth,
  resetFacts,
} from './match.js';

/** What the waypoint knows about one request, or one plain TCP connection (`request` undefined). */
export interface L7Attributes {
  /** Istio principal form: `cluster.local/ns/x/sa/y` (no scheme); undefined without mTLS. */
  principal: string | undefined;
  sourceNamespace: string | undefined;
  sourceIp: string;
  /** Destination service port. */
  port: number;
  /** Undefined for plain TCP. */
  request:
    | {
        method: string;
        path: string;
        /** Host header (may include a port). */
        host: string;
        headers: Readonly<Record<string, string | string[] | undefined>>;
      }
    | undefined;
  /** The token RequestAuthentication verified for the request; undefined without one. */
  auth?: RequestAuth | undefined;
}

export interface L7Decision {
  readonly allowed: boolean;
  /** The policy whose rule decided (`namespace/name`), if any. */
  readonly policy: string | undefined;
  /** Index in the deciding policy's spec.rules. */
  readonly rule: number | undefined;
  /** AUDIT policies that matched (`namespace/name`). */
  readonly audited: readonly string[];
  /** Set when a dry-run policy would have changed `allowed` (the caller logs and counts it). */
  readonly dryRun?: L7DryRun;
}

/** What dry-run policies would have changed: "policy X would deny (rule N)". */
export interface L7DryRun {
  readonly would: 'allow' | 'deny';
  /** The dry-run policy responsible (`namespace/name`). */
  readonly policy: string;
  /** Its matching rule; undefined for "an ALLOW policy would apply and none matches". */
  readonly rule: number | undefined;
}

/** A policy bound to one waypoint: which of its services it applies to. */
export interface WaypointPolicy {
  /** `namespace/name` */
  readonly key: string;
  readonly action: AuthorizationAction;
  /** Applies to every service of the waypoint. */
  readonly gateway: boolean;
  /** Service keys (`namespace/name`) this policy targets. */
  readonly services: readonly string[];
  readonly compiled: CompiledAuthorizationPolicy;
}

/**
 * The policies that apply to one destination service, split by action (computed once per config).
 * Dry-run policies are not in `deny`/`allow`: `shadow` is the same set with them enforced, present
 * only when one applies, so the common case costs one property read.
 */
export interface L7PolicySet {
  readonly deny: readonly CompiledAuthorizationPolicy[];
  readonly allow: readonly CompiledAuthorizationPolicy[];
  readonly audit: readonly CompiledAuthorizationPolicy[];
  readonly shadow?: L7PolicySet;
}

export const EMPTY_L7_POLICY_SET: L7PolicySet = Object.freeze({ deny: [], allow: [], audit: [] });

export interface GatewayRef {
  readonly name: string;
  readonly namespace: string;
}

/**
 * Validates a raw policy (Kubernetes-shaped, apiVersion optional, or the config model's translated
 * record) with the shared schema, compiles it and binds it to this waypoint. undefined for a
 * `selector` policy (the agents'). Throws ConfigError (INVALID_OBJECT), naming the policy and field.
 */
export function compileWaypointPolicy(raw: unknown, gateway: GatewayRef): WaypointPolicy | undefined {
  const object = parseAuthorizationPolicy(raw, gateway);
  if (object.targetRefs.length === 0) return undefined;
  return bindWaypointPolicy(compileAuthorizationPolicy(object), gateway);
}

/** Binds a compiled targetRefs policy to a waypoint. Throws ConfigError (INVALID_OBJECT). */
export function bindWaypointPolicy(p: CompiledAuthorizationPolicy, gateway: GatewayRef): WaypointPolicy {
  const problem = (field: string, detail: string) =>
    new ConfigError(
      'INVALID_OBJECT',
      { source: sourceName(gateway), kind: 'AuthorizationPolicy', namespace: p.namespace, name: p.name },
      field,
      detail,
    );
  let onGateway = false;
  const services: string[] = [];
  p.targetRefs.forEach((r, i) => {
    const ns = r.namespace ?? p.namespace;
    if (ns !== p.namespace) {
      throw problem(
        `spec.targetRefs[${i}].namespace`,
        "targetRefs may only name objects in the policy's own namespace",
      );
    }
    if (r.kind === 'Gateway') {
      if (r.name === gateway.name && ns === gateway.namespace) onGateway = true;
    } else if (r.kind === 'Service' || r.kind === 'ServiceEntry') services.push(`${ns}/${r.name}`);
    else {
      throw problem(
        `spec.targetRefs[${i}].kind`,
        `kind ${r.kind} is not supported (Gateway, Service or ServiceEntry)`,
      );
    }
  });
  for (const rule of p.rules) {
    rule.when?.forEach((c, i) => {
      if (c.reads !== 'unsupported') return;
      throw problem(
        `spec.rules[${rule.index}].when[${i}].key`,
        `unsupported key ${c.key}: use request.headers[<name>], request.auth.claims[<name>], request.auth.principal, request.auth.audiences, request.auth.presenter, source.ip, remote.ip, source.namespace, source.principal or destination.port`,
      );
    });
  }
  return { key: p.key, action: p.action, gateway: onGateway, services, compiled: p };
}

/** Groups bound policies per destination service (gateway-wide policies join every set). */
export function indexL7Policies(
  policies: readonly WaypointPolicy[],
  serviceKeys: Iterable<string>,
): Map<string, L7PolicySet> {
  type Lists = { deny: CompiledAuthorizationPolicy[]; allow: CompiledAuthorizationPolicy[] };
  const out = new Map<string, L7PolicySet>();
  for (const key of serviceKeys) {
    const set: Lists & { audit: CompiledAuthorizationPolicy[]; shadow?: L7PolicySet } = {
      deny: [],
      allow: [],
      audit: [],
    };
    const shadow: Lists = { deny: [], allow: [] };
    let dryRun = false;
    for (const p of policies) {
      if (!p.gateway && !p.services.includes(key)) continue;
      if (p.action === 'AUDIT') {
        set.audit.push(p.compiled);
        continue;
      }
      const list = p.action === 'DENY' ? 'deny' : 'allow';
      shadow[list].push(p.compiled);
      if (p.compiled.dryRun) dryRun = true;
      else set[list].push(p.compiled);
    }
    if (dryRun) set.shadow = { ...shadow, audit: [] };
    out.set(key, set);
  }
  return out;
}

// Synchronous and never re-entered: one Facts object serves every request.
const scratch = newFacts();

function factsOf(f: Facts, a: L7Attributes): Facts {
  return resetFacts(f, a.principal ?? '', a.sourceNamespace ?? '', a.sourceIp, a.port, a.request, a.auth);
}

const NO_AUDIT: readonly string[] = Object.freeze([]);
const NO_ALLOW_POLICY: L7Decision = Object.freeze({
  allowed: true,
  policy: undefined,
  rule: undefined,
  audited: NO_AUDIT,
});
const NO_ALLOW_MATCH: L7Decision = Object.freeze({
  allowed: false,
  policy: undefined,
  rule: undefined,
  audited: NO_AUDIT,
});
const ruleDecisions = new WeakMap<CompiledRule, L7Decision>();

function ruleDecision(p: CompiledAuthorizationPolicy, rule: CompiledRule): L7Decision {
  let d = ruleDecisions.get(rule);
  if (d === undefined) {
    d = Object.freeze({ allowed: p.action === 'ALLOW', policy: p.key, rule: rule.index, audited: NO_AUDIT });
    ruleDecisions.set(rule, d);
  }
  return d;
}

/** AUDIT, DENY and plain-TCP DENY parts match on what is known; ALLOW parts need it all. */
const forDeny = (p: CompiledAuthorizationPolicy): boolean => p.action !== 'ALLOW';

export function evaluateL7(set: L7PolicySet, a: L7Attributes): L7Decision {
  const f = factsOf(scratch, a);
  let audited: string[] | undefined;
  for (const p of set.audit) {
    if (firstMatchingRule(p.rules, f, true) === undefined) continue;
    audited ??= [];
    audited.push(p.key);
  }
  const d = decide(set, f);
  const shadow = set.shadow === undefined ? undefined : decide(set.shadow, f);
  f.request = undefined; // hold no request (or token) past its decision
  f.auth = undefined;
  if (shadow !== undefined && shadow.allowed !== d.allowed) {
    return { ...d, audited: audited ?? NO_AUDIT, dryRun: dryRunOf(set.shadow!, shadow) };
  }
  return audited === undefined ? d : { ...d, audited };
}

/**
 * Which dry-run policy makes `shadow` (the decision with dry-run policies enforced) differ. Would
 * deny: the dry-run DENY that matched, or, when no enforced ALLOW policy applies, the dry-run ALLOW
 * policy that turned on allow-listing and matched nothing. Would allow: the dry-run ALLOW that matched.
 */
function dryRunOf(shadowSet: L7PolicySet, shadow: L7Decision): L7DryRun {
  return {
    would: shadow.allowed ? 'allow' : 'deny',
    policy: shadow.policy ?? shadowSet.allow.find((p) => p.dryRun)?.key ?? '',
    rule: shadow.rule,
  };
}

function decide(set: L7PolicySet, f: Facts): L7Decision {
  for (const p of set.deny) {
    const rule = firstMatchingRule(p.rules, f, true);
    if (rule !== undefined) return ruleDecision(p, rule);
  }
  if (set.allow.length === 0) return NO_ALLOW_POLICY;
  for (const p of set.allow) {
    const rule = firstMatchingRule(p.rules, f, false);
    if (rule !== undefined) return ruleDecision(p, rule);
  }
  return NO_ALLOW_MATCH;
}

/** Does the answer for this set depend on the HTTP request (methods, paths, hosts, headers)? */
export function dependsOnRequest(set: L7PolicySet): boolean {
  for (const list of [set.deny, set.allow, set.audit])
    for (const p of list) for (const r of p.rules) if (r.needsRequest) return true;
  return set.shadow !== undefined && dependsOnRequest(set.shadow);
}

export interface L7Explanation {
  readonly decision: L7Decision;
  /** Why, in words: the deciding policy and rule, or why none decided. */
  readonly reason: string;
  /** One line per applicable policy saying whether and why it matched, then the decision. */
  readonly lines: readonly string[];
}

/** The same decision as evaluateL7, with a line per applicable policy for `hypha policy explain`. */
export function explainL7(set: L7PolicySet, a: L7Attributes): L7Explanation {
  const decision = evaluateL7(set, a);
  const f = factsOf(newFacts(), a);
  const lines: string[] = [];
  const all = set.shadow === undefined ? set : { ...set.shadow, audit: set.audit };
  for (const p of [...all.deny, ...all.allow, ...all.audit]) {
    const head = `${p.action} ${p.key}${p.dryRun ? ' (dry-run)' : ''}`;
    if (p.rules.length === 0) {
      lines.push(`  ${head}: no rules, matches nothing`);
      continue;
    }
    const matched = firstMatchingRule(p.rules, f, forDeny(p));
    if (matched !== undefined) {
      lines.push(`  ${head}: rules[${matched.index}] matches`);
      continue;
    }
    const whys = p.rules.map((r) => `rules[${r.index}] ${describeMismatch(r, f, forDeny(p))}`);
    lines.push(`  ${head}: no rule matches (${whys.join('; ')})`);
  }
  if (lines.length === 0) lines.push('  no L7 policy applies');
  const reason = reasonOf(decision, set);
  lines.push(`decision: ${decision.allowed ? 'ALLOW' : 'DENY'}: ${reason}`);
  for (const key of decision.audited) lines.push(`audit: AUDIT ${key} matched`);
  const dr = decision.dryRun;
  if (dr !== undefined) {
    const shadow = set.shadow === undefined ? set : set.shadow;
    lines.push(dryRunLine(dr.policy, dr.would, dr.rule, reasonOf(decide(shadow, f), shadow)));
  } else if (set.shadow !== undefined) {
    lines.push(
      `dry-run: no change (with the dry-run policies enforced, still ${decision.allowed ? 'ALLOW' : 'DENY'})`,
    );
  }
  return { decision, reason, lines };
}

function reasonOf(d: L7Decision, set: L7PolicySet): string {
  const verb = d.allowed ? 'allowed' : 'denied';
  if (d.policy !== undefined) {
    const action = set.deny.some((p) => p.key === d.policy) ? 'DENY' : 'ALLOW';
    return `${verb} by ${action} policy ${d.policy} rules[${d.rule}]`;
  }
  if (d.allowed) return 'allowed: no ALLOW policy applies';
  return `denied: ALLOW policies apply (${set.allow.map((p) => p.key).join(', ')}) but none matched`;
}

function sourceName(gateway: GatewayRef): string {
  return `waypoint ${gateway.namespace}/${gateway.name}`;
}

function parseAuthorizationPolicy(raw: unknown, gateway: GatewayRef): AuthorizationPolicyObject {
  const r = translateObject(asKubernetesObject(raw), { source: sourceName(gateway) });
  if (r.status === 'ok' && r.object.kind === 'AuthorizationPolicy') return r.object;
  // Only AuthorizationPolicy objects reach here (asKubernetesObject sets the kind when absent).
  if (r.status === 'invalid') throw r.errors[0]!;
  throw new ConfigError(
    'INVALID_OBJECT',
    { source: sourceName(gateway) },
    'kind',
    'not an AuthorizationPolicy',
  );
}

/** The waypoint is handed Kubernetes objects (apiVersion optional) or the config model's records. */
function asKubernetesObject(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null) return raw;
  const o = raw as Record<string, unknown>;
  if (o.metadata === undefined && o.kind === 'AuthorizationPolicy') {
    const r = raw as AuthorizationPolicyObject;
    return {
      apiVersion: 'security.hypha.dev/v1',
      kind: r.kind,
      metadata: {
        name: r.name,
        namespace: r.namespace,
        labels: r.labels,
        ...(r.dryRun === true ? { annotations: { 'hypha.dev/dry-run': 'true' } } : {}),
      },
      spec: {
        action: r.action,
        targetRefs: r.targetRefs,
        ...(r.selector !== undefined ? { selector: { matchLabels: r.selector } } : {}),
        ...(r.rules !== undefined ? { rules: r.rules } : {}),
      },
    };
  }
  return { apiVersion: 'security.hypha.dev/v1', kind: 'AuthorizationPolicy', ...o };
}
