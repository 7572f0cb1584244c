// RequestAuthentication (security.hypha.dev/v1, Istio's shape) at the waypoint: which JWTs a request
// to a service may carry, from where, and checked against which keys.
//
//   spec:
//     targetRefs: [{ kind: Service, name: reviews }]       # or the waypoint Gateway: every service
//     jwtRules:
//       - issuer: https://issuer.example
//         audiences: [reviews]                            # aud must contain one; omit: any
//         jwks: '{"keys":[...]}'                          # inline, or
//         jwksUri: https://issuer.example/jwks.json       # fetched, cached, refreshed (jwks.ts)
//         fromHeaders: [{ name: x-jwt, prefix: '' }]      # default: Authorization "Bearer "
//         fromParams: [access_token]
//         forwardOriginalToken: false                     # default: the token header is removed
//         outputClaimToHeaders: [{ header: x-sub, claim: sub }]
//
// Invariants:
// - `selector` policies are Istio's pod-scoped form: no Hypha component enforces them (node agents see
//   no HTTP), so the waypoint compiles them to nothing, as it does `selector` AuthorizationPolicies.
// - Inline key sets are parsed once, when the policy compiles; a bad one rejects the policy by field.
import { createLocalJWKSet, type JSONWebKeySet } from 'jose';
import { z } from 'zod';
import { WaypointConfigError } from '../errors.js';
import { parseWith, readObjectMeta } from '../model.js';

export interface TokenLocation {
  /** Lowercase header name, or undefined for a query parameter. */
  readonly header?: string;
  /** Prefix before the token in the header value (`Bearer `). */
  readonly prefix?: string;
  readonly param?: string;
}

export interface JwtRule {
  /** `namespace/name` of its RequestAuthentication. */
  readonly policy: string;
  readonly issuer: string;
  readonly audiences: readonly string[] | undefined;
  /** Inline keys (a local key set), or the URI jwks.ts fetches. */
  readonly keys: { readonly local: ReturnType<typeof createLocalJWKSet> } | { readonly uri: string };
  readonly from: readonly TokenLocation[];
  readonly forwardOriginalToken: boolean;
  readonly outputClaimToHeaders: readonly { readonly header: string; readonly claim: string }[];
}

export interface CompiledRequestAuthentication {
  readonly key: string;
  /** Targets the waypoint Gateway: every service. */
  readonly gateway: boolean;
  /** Service keys (`namespace/name`). */
  readonly services: readonly string[];
  readonly rules: readonly JwtRule[];
}

/** The JWT rules for one destination service (every RequestAuthentication that targets it). */
export interface AuthnSet {
  readonly rules: readonly JwtRule[];
}

const DEFAULT_FROM: readonly TokenLocation[] = Object.freeze([
  { header: 'authorization', prefix: 'Bearer ' },
]);

const targetRef = z.object({
  group: z.string().optional(),
  kind: z.enum(['Service', 'Gateway']),
  name: z.string().min(1),
  namespace: z.string().optional(),
});
const jwtRule = z
  .object({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).optional(),
    jwks: z.string().optional(),
    jwksUri: z
      .string()
      .regex(/^https?:\/\//, 'must be an http:// or https:// URL')
      .optional(),
    fromHeaders: z.array(z.object({ name: z.string().min(1), prefix: z.string().optional() })).optional(),
    fromParams: z.array(z.string().min(1)).optional(),
    forwardOriginalToken: z.boolean().optional(),
    outputClaimToHeaders: z
      .array(z.object({ header: z.string().min(1), claim: z.string().min(1) }))
      .optional(),
  })
  .refine((r) => (r.jwks === undefined) !== (r.jwksUri === undefined), {
    message: 'set exactly one of jwks (inline JSON) and jwksUri',
  });
const specSchema = z.object({
  selector: z.unknown().optional(),
  targetRefs: z.array(targetRef).optional(),
  jwtRules: z.array(jwtRule).optional(),
});

/** undefined for a `selector` policy (enforced nowhere; see invariants). Throws WaypointConfigError. */
export function compileRequestAuthentication(
  raw: unknown,
  gateway: { name: string; namespace: string },
): CompiledRequestAuthentication | undefined {
  const { meta, spec: rawSpec } = readObjectMeta('RequestAuthentication', raw);
  const spec = parseWith(specSchema, rawSpec ?? {}, 'RequestAuthentication', meta, 'spec');
  const problem = (field: string, detail: string) =>
    new WaypointConfigError(
      'INVALID_OBJECT',
      'RequestAuthentication',
      meta.namespace,
      meta.name,
      field,
      detail,
    );
  const refs = spec.targetRefs ?? [];
  if (refs.length === 0) return undefined;
  const key = `${meta.namespace}/${meta.name}`;
  let onGateway = false;
  const services: string[] = [];
  refs.forEach((r, i) => {
    const ns = r.namespace ?? meta.namespace;
    if (ns !== meta.namespace) {
      throw problem(
        `spec.targetRefs[${i}].namespace`,
        "targetRefs may only name objects in the policy's own namespace",
      );
    }
    if (r.kind === 'Gateway') {
      if (r.name === gateway.name && ns === gateway.namespace) onGateway = true;
    } else services.push(`${ns}/${r.name}`);
  });
  const rules = (spec.jwtRules ?? []).map((r, i): JwtRule => {
    let keys: JwtRule['keys'];
    if (r.jwks !== undefined) {
      let set: JSONWebKeySet;
      try {
        set = JSON.parse(r.jwks) as JSONWebKeySet;
        keys = { local: createLocalJWKSet(set) };
      } catch (err) {
        throw problem(`spec.jwtRules[${i}].jwks`, `not a JSON Web Key Set: ${(err as Error).message}`);
      }
    } else keys = { uri: r.jwksUri! };
    const from: TokenLocation[] = [
      ...(r.fromHeaders ?? []).map((h) => ({ header: h.name.toLowerCase(), prefix: h.prefix ?? '' })),
      ...(r.fromParams ?? []).map((param) => ({ param })),
    ];
    return {
      policy: key,
      issuer: r.issuer,
      audiences: r.audiences !== undefined && r.audiences.length > 0 ? r.audiences : undefined,
      keys,
      from: from.length > 0 ? from : DEFAULT_FROM,
      forwardOriginalToken: r.forwardOriginalToken ?? false,
      outputClaimToHeaders: (r.outputClaimToHeaders ?? []).map((o) => ({
        header: o.header.toLowerCase(),
        claim: o.claim,
      })),
    };
  });
  return { key, gateway: onGateway, services, rules };
}

/** Groups the rules per destination service (gateway-wide policies join every set). */
export function indexAuthn(
  policies: readonly CompiledRequestAuthentication[],
  serviceKeys: Iterable<string>,
): Map<string, AuthnSet> {
  const out = new Map<string, AuthnSet>();
  for (const key of serviceKeys) {
    const rules: JwtRule[] = [];
    for (const p of policies) if (p.gateway || p.services.includes(key)) rules.push(...p.rules);
    if (rules.length > 0) out.set(key, { rules });
  }
  return out;
}
