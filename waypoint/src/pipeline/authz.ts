// Filter 2, authorization: the destination's AuthorizationPolicies decide (DENY, then ALLOW, Istio's
// order); AUDIT matches are counted and logged, never change the answer. A denial is a local 403
// "RBAC: access denied" with no hint of which policy decided (that goes to the access log).
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
): AuthzDecision {
  return evaluateAuthz(snap.policies.get(serviceKey) ?? EMPTY_POLICY_SET, {
    principal: ctx.peer?.principal,
    sourceNamespace: ctx.peer?.namespace,
    sourceIp: ctx.source.ip,
    port,
    request,
  });
}

const DENIED: Outcome = Object.freeze({ kind: 'local', status: 403, body: 'RBAC: access denied' });

export function authzFilter(deps: { metrics: RequestMetrics; log: Logger }): Filter {
  return {
    name: 'authz',
    run(rc, next) {
      const service = rc.service!;
      const ctx = rc.stream;
      const decision = authorize(rc.snap, service.key, ctx, rc.port!.port, {
        method: rc.method,
        path: rc.path,
        host: rc.authority,
        headers: rc.headers,
      });
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
      rc.authzPolicy = decision.policy;
      return decision.allowed ? next(rc) : DENIED;
    },
  };
}
