// The waypoint's AuthorizationPolicy enforcement is the shared engine's (`@hypha/shared/policy`,
// waypoint.ts there): one schema, one compiler and one matcher for the agents (L4) and the
// waypoint (L7). This file keeps the waypoint's names and turns the engine's errors into
// WaypointConfigError, so a bad policy is reported and skipped like every other waypoint object.
import { ConfigError } from '@hypha/shared/config';
import { compileWaypointPolicy, type GatewayRef, type WaypointPolicy } from '@hypha/shared/policy';
import { WaypointConfigError } from '../errors.js';

export type {
  L7Attributes as AuthzAttributes,
  L7Decision as AuthzDecision,
  L7PolicySet as PolicySet,
  WaypointPolicy as CompiledAuthzPolicy,
} from '@hypha/shared/policy';
export {
  EMPTY_L7_POLICY_SET as EMPTY_POLICY_SET,
  evaluateL7 as evaluateAuthz,
  indexL7Policies as indexPolicies,
} from '@hypha/shared/policy';

/** undefined for a `selector` policy (the agents enforce it at L4). Throws WaypointConfigError. */
export function compileAuthorizationPolicy(raw: unknown, gateway: GatewayRef): WaypointPolicy | undefined {
  try {
    return compileWaypointPolicy(raw, gateway);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new WaypointConfigError(
      'INVALID_OBJECT',
      'AuthorizationPolicy',
      err.namespace ?? '?',
      err.objectName ?? '?',
      err.field,
      err.detail,
    );
  }
}
