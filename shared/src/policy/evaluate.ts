// The L4 authorization decision, as the destination node agent takes it for every inbound
// connection (HBONE stream or plaintext), and as `hypha policy explain` reports it.
//
// Semantics (Istio's, see docs/authorization.md):
//   1. Policies apply to a workload when they are agent-enforced (selector, not targetRefs), live in
//      the workload's namespace or the root namespace, and their matchLabels ⊆ the pod's labels.
//   2. Any DENY policy that matches, or any ALLOW/DENY policy that fails closed (L7 attributes) → deny.
//   3. No ALLOW policy applies → allow.
//   4. Any ALLOW policy matches → allow. Otherwise → deny.
//   AUDIT policies never change the decision; every matching one is reported in `audit`.
//   Dry-run policies are left out of the decision. When one applies, the decision is taken again
//   with them enforced; a difference is reported in `dryRun` ("would deny" / "would allow").
// Rules are matched by match.ts, the same matcher the waypoint's L7 decision uses (waypoint.ts); the
// agent evaluates only a policy's `l4Rules` (compile.ts says what happens to the others).
//
// Synchronous and allocation-light: this runs once per connection on the data path. With no dry-run
// policy applying to the workload, the second pass never runs and nothing more is allocated.

import { DEFAULT_ROOT_NAMESPACE, type Labels, type Workload } from '../config/types.js';
import type { SpiffeId } from '../identity/spiffe.js';
import type { CompiledAuthorizationPolicy, CompiledRule } from './compile.js';
import { describeMismatch, type Facts, firstMatchingRule, newFacts, resetFacts } from './match.js';

export interface L4Request {
  source: {
    /** The peer's verified identity (from its mTLS certificate); absent for plaintext. */
    identity?: SpiffeId | undefined;
    /**
     * Only used when there is no identity. `namespaces` attributes are meant to be read from the
     * certificate: the data path must not fill this in for plaintext peers (an IP proves nothing).
     */
    namespace?: string | undefined;
    ip: string;
  };
  destination: {
    workload: Workload;
    /** The resolved target port on the pod (not the service port). */
    port: number;
  };
}

export interface PolicyRef {
  readonly namespace: string;
  readonly name: string;
}

export interface AuditMatch extends PolicyRef {
  readonly rule: number;
}

export interface L4Decision {
  readonly decision: 'allow' | 'deny';
  /** The policy that decided, when one did. */
  readonly policy?: PolicyRef;
  /** Index in the deciding policy's spec.rules. */
  readonly rule?: number;
  readonly reason: string;
  /** Every AUDIT policy that matched (logged and counted by the caller, never blocking). */
  readonly audit: readonly AuditMatch[];
  /** Set when the deciding policy failed closed because of L7 attributes: log it once per policy. */
  readonly failClosed?: boolean;
  /**
   * Set when a dry-run policy would have changed the decision (the caller logs and counts it).
   * `decision` is always the enforced one, taken as if dry-run policies were absent.
   */
  readonly dryRun?: L4DryRun;
}

/** What dry-run policies would have changed: "policy X would deny (rule N)". */
export interface L4DryRun {
  readonly would: 'allow' | 'deny';
  /** The dry-run policy responsible. */
  readonly policy: PolicyRef;
  /** Its matching rule, when a rule decided (absent for "an ALLOW policy would apply and none matches"). */
  readonly rule?: number;
  /** The decision's reason had the dry-run policies been enforced. */
  readonly reason: string;
}

export interface EvaluateOptions {
  /** Policies here apply mesh-wide. Default `hypha-system`. */
  rootNamespace?: string;
}

const NO_AUDIT: readonly AuditMatch[] = Object.freeze([]);

/** Does this policy apply to connections to this workload at L4? */
export function policyAppliesTo(
  policy: CompiledAuthorizationPolicy,
  workload: Workload,
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
): boolean {
  if (!policy.enforcedByAgent) return false;
  if (policy.namespace !== workload.namespace && policy.namespace !== rootNamespace) return false;
  return selectorMatches(policy.selector, workload.labels);
}

export function selectorMatches(selector: Labels | undefined, labels: Labels): boolean {
  if (selector === undefined) return true;
  for (const key in selector) if (labels[key] !== selector[key]) return false;
  return true;
}

export function evaluateL4(
  policies: readonly CompiledAuthorizationPolicy[],
  request: L4Request,
  options: EvaluateOptions = {},
): L4Decision {
  const root = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const workload = request.destination.workload;
  const facts = factsOf(scratch, request);
  scan.audit = undefined;
  scan.dryRun = false;
  const enforced = decideL4(policies, workload, root, facts, false, scan);
  const audit = scan.audit ?? NO_AUDIT;
  if (!scan.dryRun) return withAudit(enforced, audit);
  // A dry-run policy applies: decide again as if it were enforced, and report a difference.
  const shadow = decideL4(policies, workload, root, facts, true, undefined);
  if (shadow.decision === enforced.decision) return withAudit(enforced, audit);
  return { ...enforced, audit, dryRun: dryRunOf(policies, workload, root, shadow) };
}

/** What one evaluation found beside its decision (module scratch: evaluation is never re-entered). */
interface Scan {
  audit: AuditMatch[] | undefined;
  /** A dry-run policy applies to the workload. */
  dryRun: boolean;
}
const scan: Scan = { audit: undefined, dryRun: false };

/**
 * The decision without AUDIT matches. `withDryRun` false: dry-run policies are left out (the
 * enforced decision); true: they count as enforced (what they would do). `found` collects AUDIT
 * matches and notes whether a dry-run policy applies.
 */
function decideL4(
  policies: readonly CompiledAuthorizationPolicy[],
  workload: Workload,
  root: string,
  facts: Facts,
  withDryRun: boolean,
  found: Scan | undefined,
): L4Decision {
  let deny: L4Decision | undefined;
  let hasAllow = false;
  for (const p of policies) {
    if (!policyAppliesTo(p, workload, root)) continue;
    if (p.action === 'AUDIT') {
      if (found === undefined) continue;
      const rule = firstMatchingRule(p.l4Rules, facts, true);
      if (rule !== undefined) {
        found.audit ??= [];
        found.audit.push({ namespace: p.namespace, name: p.name, rule: rule.index });
      }
      continue;
    }
    if (p.dryRun) {
      if (found !== undefined) found.dryRun = true;
      if (!withDryRun) continue;
    }
    if (deny !== undefined) continue;
    if (p.failClosed) {
      deny = failClosedDecision(p);
    } else if (p.action === 'DENY') {
      const rule = firstMatchingRule(p.l4Rules, facts, true);
      if (rule !== undefined) deny = ruleDecision(p, rule);
    } else {
      hasAllow = true;
    }
  }
  if (deny !== undefined) return deny;
  if (!hasAllow) return noAllowDecision(workload);
  for (const p of policies) {
    if (p.action !== 'ALLOW' || p.failClosed || !policyAppliesTo(p, workload, root)) continue;
    if (p.dryRun && !withDryRun) continue;
    const rule = firstMatchingRule(p.l4Rules, facts, false);
    if (rule !== undefined) return ruleDecision(p, rule);
  }
  const names = policies
    .filter((p) => p.action === 'ALLOW' && policyAppliesTo(p, workload, root) && (withDryRun || !p.dryRun))
    .map((p) => p.key);
  return {
    decision: 'deny',
    reason: `denied: ALLOW policies apply to ${workload.namespace}/${workload.name} (${names.join(', ')}) but none matched`,
    audit: NO_AUDIT,
  };
}

/**
 * Which dry-run policy makes `shadow` (the decision with dry-run policies enforced) differ from the
 * enforced one. Would deny: the dry-run DENY (or fail-closed) policy that decided, or, when no
 * enforced ALLOW policy applies, the dry-run ALLOW policy that turned on allow-listing and matched
 * nothing. Would allow: the dry-run ALLOW policy that matched.
 */
function dryRunOf(
  policies: readonly CompiledAuthorizationPolicy[],
  workload: Workload,
  root: string,
  shadow: L4Decision,
): L4DryRun {
  let policy = shadow.policy;
  if (policy === undefined) {
    const p = policies.find((q) => q.dryRun && q.action === 'ALLOW' && policyAppliesTo(q, workload, root));
    policy = p === undefined ? { namespace: '', name: '' } : { namespace: p.namespace, name: p.name };
  }
  return {
    would: shadow.decision,
    policy,
    ...(shadow.rule !== undefined ? { rule: shadow.rule } : {}),
    reason: shadow.reason,
  };
}

// Decisions that depend only on the policy/rule (or the workload) are built once and shared, so the
// common outcomes cost no allocation per connection. They are frozen: callers must not mutate them.
const ruleDecisions = new WeakMap<CompiledRule, L4Decision>();
const failClosedDecisions = new WeakMap<CompiledAuthorizationPolicy, L4Decision>();
const noAllowDecisions = new WeakMap<Workload, L4Decision>();

function ruleDecision(p: CompiledAuthorizationPolicy, rule: CompiledRule): L4Decision {
  let d = ruleDecisions.get(rule);
  if (d === undefined) {
    const allow = p.action === 'ALLOW';
    d = Object.freeze({
      decision: allow ? 'allow' : 'deny',
      policy: Object.freeze({ namespace: p.namespace, name: p.name }),
      rule: rule.index,
      reason: `${allow ? 'allowed' : 'denied'} by ${p.action} policy ${p.namespace}/${p.name} rules[${rule.index}]`,
      audit: NO_AUDIT,
    } as const);
    ruleDecisions.set(rule, d);
  }
  return d;
}

function failClosedDecision(p: CompiledAuthorizationPolicy): L4Decision {
  let d = failClosedDecisions.get(p);
  if (d === undefined) {
    d = Object.freeze({
      decision: 'deny',
      policy: Object.freeze({ namespace: p.namespace, name: p.name }),
      reason: failClosedReason(p),
      audit: NO_AUDIT,
      failClosed: true,
    } as const);
    failClosedDecisions.set(p, d);
  }
  return d;
}

function noAllowDecision(w: Workload): L4Decision {
  let d = noAllowDecisions.get(w);
  if (d === undefined) {
    d = Object.freeze({
      decision: 'allow',
      reason: `allowed: no ALLOW policy applies to ${w.namespace}/${w.name}`,
      audit: NO_AUDIT,
    } as const);
    noAllowDecisions.set(w, d);
  }
  return d;
}

function withAudit(d: L4Decision, audit: readonly AuditMatch[]): L4Decision {
  return audit === NO_AUDIT ? d : { ...d, audit };
}

// Evaluation is synchronous and never re-entered, so one Facts object serves every connection.
const scratch = newFacts();

function factsOf(f: Facts, request: L4Request): Facts {
  const id = request.source.identity;
  return resetFacts(
    f,
    id?.principal ?? '',
    id !== undefined ? id.namespace : (request.source.namespace ?? ''),
    request.source.ip,
    request.destination.port,
    undefined,
  );
}

function failClosedReason(p: CompiledAuthorizationPolicy): string {
  return (
    `denied: ${p.action} policy ${p.namespace}/${p.name} uses L7 attributes the node agent cannot check ` +
    `(${p.l7Fields.join(', ')}), so it fails closed; move L7 rules to a policy with targetRefs on a waypoint`
  );
}

export interface L4Explanation {
  readonly decision: L4Decision;
  /** One line per applicable policy saying whether and why it matched, then the decision. */
  readonly lines: readonly string[];
}

/** The same decision as evaluateL4, with a line per policy for `hypha policy explain`. */
export function explainL4(
  policies: readonly CompiledAuthorizationPolicy[],
  request: L4Request,
  options: EvaluateOptions = {},
): L4Explanation {
  const root = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const list = policies;
  const decision = evaluateL4(list, request, options);
  const facts = factsOf(newFacts(), request);
  const w = request.destination.workload;
  const from = request.source.identity?.principal ?? `${request.source.ip} (no identity)`;
  const lines: string[] = [
    `connection from ${from} to ${w.namespace}/${w.name} port ${request.destination.port}`,
  ];
  let applicable = 0;
  let dryRuns = 0;
  for (const p of list) {
    if (!policyAppliesTo(p, w, root)) continue;
    applicable++;
    if (p.dryRun) dryRuns++;
    const head = `${p.action} ${p.namespace}/${p.name}${p.dryRun ? ' (dry-run)' : ''}`;
    if (p.failClosed) {
      lines.push(`  ${head}: fails closed, L7 attributes at L4: ${p.l7Fields.join(', ')}`);
      continue;
    }
    if (p.l4Rules.length === 0) {
      lines.push(
        `  ${head}: ${p.object.rules === undefined ? 'no rules' : 'no rules the agent can check'}, matches nothing`,
      );
      continue;
    }
    const forDeny = p.action !== 'ALLOW';
    const matched = firstMatchingRule(p.l4Rules, facts, forDeny);
    if (matched !== undefined) {
      lines.push(`  ${head}: rules[${matched.index}] matches`);
      continue;
    }
    const whys = p.l4Rules.map((r) => `rules[${r.index}] ${describeMismatch(r, facts, forDeny)}`);
    lines.push(`  ${head}: no rule matches (${whys.join('; ')})`);
    if (p.l7Fields.length > 0) lines.push(`    (L7-only rules ignored for audit: ${p.l7Fields.join(', ')})`);
  }
  if (applicable === 0) lines.push('  no policy applies');
  lines.push(`decision: ${decision.decision.toUpperCase()}: ${decision.reason}`);
  for (const a of decision.audit)
    lines.push(`audit: AUDIT ${a.namespace}/${a.name} rules[${a.rule}] matched`);
  const dr = decision.dryRun;
  if (dr !== undefined) {
    lines.push(dryRunLine(`${dr.policy.namespace}/${dr.policy.name}`, dr.would, dr.rule, dr.reason));
  } else if (dryRuns > 0) {
    lines.push(
      `dry-run: no change (with the dry-run policies enforced, still ${decision.decision.toUpperCase()})`,
    );
  }
  return { decision, lines };
}

/** `dry-run: policy shop/x would deny (rules[0]): <reason>`, for explanations (L4 and L7). */
export function dryRunLine(
  policy: string,
  would: 'allow' | 'deny',
  rule: number | undefined,
  reason: string,
): string {
  return `dry-run: policy ${policy} would ${would}${rule === undefined ? '' : ` (rules[${rule}])`}: ${reason}`;
}
