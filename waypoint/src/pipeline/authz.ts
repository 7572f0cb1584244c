// Filter 2, authorization: the destination's AuthorizationPolicies decide (DENY, then ALLOW, Istio's
// order); AUDIT matches are counted and logged, never change the answer. A denial is a local 403
// "RBAC: access denied" with no hint of which policy decided (that goes to the access log).
// Dry-run policies never decide: where one would have, it is counted and logged ("would deny").
import type { Logger } from '@hypha/shared';
import {
  type AuthzAttributes,
  type AuthzDecision,
  EMPTY_POLICY_SET,
  evaluateAuthz,
} from '../authz/policy.js';
import type { WaypointSnapshot } from '../config.js';
import type { RequestMetrics } from '../telemetry.js';
import type { Filter, Outcome, StreamContext } from './context.js';

/** The decision for a request (or, with `request` undefined, a plain TCP stream) to a service. */
export function authorize(
  snap: WaypointSnapshot,
  serviceKey: string,
  ctx: StreamContext,
  port: number,
  request: AuthzAttributes['request'],
  auth?: AuthzAttributes['auth'],
): AuthzDecision {
  return evaluateAuthz(snap.policies.get(serviceKey) ?? EMPTY_POLICY_SET, {
    principal: ctx.peer?.principal,
    sourceNamespace: ctx.peer?.namespace,
    sourceIp: ctx.source.ip,
    port,
    request,
    auth,
  });
}

/**
 * Counts and logs what a dry-run policy would have changed: one line naming the policy, the source,
 * the destination and, for HTTP, method and path. The enforced decision stands.
 */
export function recordDryRun(
  metrics: RequestMetrics,
  log: Logger,
  decision: AuthzDecision,
  service: string,
  port: number,
  ctx: StreamContext,
  request: { method: string; path: string } | undefined,
): void {
  const dry = decision.dryRun;
  if (dry === undefined) return;
  metrics.recordDryRun(dry.policy, dry.would);
  log.info(
    {
      policy: dry.policy,
      would: dry.would,
      rule: dry.rule,
      enforced: decision.allowed ? 'allow' : 'deny',
      source: ctx.source.ip,
      principal: ctx.peer?.principal,
      service,
      port,
      method: request?.method,
      path: request?.path,
    },
    `dry-run policy ${dry.policy} would ${dry.would}`,
  );
}

const DENIED: Outcome = Object.freeze({ kind: 'local', status: 403, body: 'RBAC: access denied' });

export function authzFilter(deps: { metrics: RequestMetrics; log: Logger }): Filter {
  return {
    name: 'authz',
    run(rc, next) {
      const service = rc.service!;
      const ctx = rc.stream;
      const decision = authorize(
        rc.snap,
        service.key,
        ctx,
        rc.port!.port,
        {
          method: rc.method,
          path: rc.path,
          host: rc.authority,
          headers: rc.headers,
        },
        rc.auth,
      );
      for (const p of decision.audited) {
        deps.metrics.recordAudit(p);
        deps.log.info(
          {
            policy: p,
            service: service.key,
            method: rc.method,
            path: rc.path,
            source: ctx.source.ip,
            principal: ctx.peer?.principal,
          },
          'AUDIT policy matched',
        );
      }
      if (decision.dryRun !== undefined) {
        recordDryRun(deps.metrics, deps.log, decision, service.key, rc.port!.port, ctx, rc);
      }
      rc.authzPolicy = decision.policy;
      return decision.allowed ? next(rc) : DENIED;
    },
  };
}
