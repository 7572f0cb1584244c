// The one schema of AuthorizationPolicy rules (`from`, `to`, `when`), for both enforcers: the config
// model's translation (shared/src/config/translate.ts) validates every policy with it, whether the
// agents (L4) or a waypoint (L7) will enforce it, so both accept and reject exactly the same rules.
// The envelope (metadata, selector, targetRefs, action) is validated by translate.ts with the other kinds.
//
// Invariants:
// - Every value is checked where Istio would reject it: wildcard positions, CIDRs (IPv4 and IPv6),
//   port numbers, `when` keys and the values IP and port keys take.
// - An empty source or operation is rejected; empty lists are dropped (Istio treats them as unset),
//   IP blocks are written in canonical form, so equal policies compile to equal rules.
import { z } from 'zod';
import { parseCidr } from '../config/ip.js';
import type {
  AuthorizationCondition,
  AuthorizationOperation,
  AuthorizationRule,
  AuthorizationSource,
} from '../config/types.js';

const port = z.number().int().min(1).max(65535);
const nonEmptyStrings = z.array(z.string().min(1));

const matchValue = z
  .string()
  .min(1)
  .refine((s) => s === '*' || !s.slice(1, -1).includes('*'), {
    message: 'a "*" wildcard is allowed only at the start or the end of the value',
  });
const cidrValue = z.string().refine((s) => parseCidr(s) !== undefined, {
  message: 'is not an IP address or CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)',
});
const portValue = z
  .union([port, z.string().regex(/^\d{1,5}$/, 'must be a port number')])
  .transform((p) => Number(p))
  .pipe(port);

const SOURCE_FIELDS = [
  'principals',
  'notPrincipals',
  'namespaces',
  'notNamespaces',
  'ipBlocks',
  'notIpBlocks',
  'requestPrincipals',
  'notRequestPrincipals',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const;
const OPERATION_FIELDS = [
  'ports',
  'notPorts',
  'methods',
  'notMethods',
  'paths',
  'notPaths',
  'hosts',
  'notHosts',
] as const;

const sourceSchema = z
  .object({
    principals: z.array(matchValue).optional(),
    notPrincipals: z.array(matchValue).optional(),
    namespaces: z.array(matchValue).optional(),
    notNamespaces: z.array(matchValue).optional(),
    ipBlocks: z.array(cidrValue).optional(),
    notIpBlocks: z.array(cidrValue).optional(),
    requestPrincipals: z.array(matchValue).optional(),
    notRequestPrincipals: z.array(matchValue).optional(),
    remoteIpBlocks: z.array(cidrValue).optional(),
    notRemoteIpBlocks: z.array(cidrValue).optional(),
  })
  .refine((s) => SOURCE_FIELDS.some((f) => (s[f]?.length ?? 0) > 0), {
    message: 'source must set at least one field (principals, namespaces, ipBlocks or their not* forms)',
  });

const operationSchema = z
  .object({
    ports: z.array(portValue).optional(),
    notPorts: z.array(portValue).optional(),
    methods: z.array(matchValue).optional(),
    notMethods: z.array(matchValue).optional(),
    paths: z.array(matchValue).optional(),
    notPaths: z.array(matchValue).optional(),
    hosts: z.array(matchValue).optional(),
    notHosts: z.array(matchValue).optional(),
  })
  .refine((o) => OPERATION_FIELDS.some((f) => (o[f]?.length ?? 0) > 0), {
    message: 'operation must set at least one field (ports, methods, paths, hosts or their not* forms)',
  });

// Condition keys Istio accepts; which of them each enforcer reads is compile.ts's business.
const WHEN_KEY =
  /^(source\.(ip|namespace|principal)|remote\.ip|destination\.(ip|port)|connection\.sni|request\.headers\[[^\]]+\]|request\.auth\.(principal|audiences|presenter|claims\[[^\]]+\](\[[^\]]+\])*)|experimental\.envoy\.filters\..+)$/;

const conditionSchema = z
  .object({
    key: z
      .string()
      .regex(WHEN_KEY, 'is not a supported condition key (e.g. source.ip, request.headers[x-user])'),
    values: nonEmptyStrings.optional(),
    notValues: nonEmptyStrings.optional(),
  })
  .refine((c) => (c.values?.length ?? 0) + (c.notValues?.length ?? 0) > 0, {
    message: 'condition must set values or notValues',
  })
  .superRefine((c, ctx) => {
    const check = (field: 'values' | 'notValues', ok: (v: string) => boolean, what: string) => {
      c[field]?.forEach((v, i) => {
        if (!ok(v))
          ctx.addIssue({ code: 'custom', path: [field, i], message: `${JSON.stringify(v)} is not ${what}` });
      });
    };
    if (c.key === 'source.ip' || c.key === 'remote.ip' || c.key === 'destination.ip') {
      check('values', (v) => parseCidr(v) !== undefined, 'an IP address or CIDR block');
      check('notValues', (v) => parseCidr(v) !== undefined, 'an IP address or CIDR block');
    } else if (c.key === 'destination.port') {
      const isPort = (v: string) => /^\d{1,5}$/.test(v) && Number(v) >= 1 && Number(v) <= 65535;
      check('values', isPort, 'a port number');
      check('notValues', isPort, 'a port number');
    }
  });

/** One entry of spec.rules, as written (validated; empty lists still present). */
export const authorizationRuleSchema = z.object({
  from: z.array(z.object({ source: sourceSchema })).optional(),
  to: z.array(z.object({ operation: operationSchema })).optional(),
  when: z.array(conditionSchema).optional(),
});

// Istio treats an empty list as unset; dropping empty lists here keeps the evaluator simple.
export function toAuthorizationRule(r: z.infer<typeof authorizationRuleSchema>): AuthorizationRule {
  const out: {
    from?: { source: AuthorizationSource }[];
    to?: { operation: AuthorizationOperation }[];
    when?: AuthorizationCondition[];
  } = {};
  if (r.from !== undefined && r.from.length > 0) {
    out.from = r.from.map((f) => ({ source: dropEmpty(f.source, SOURCE_FIELDS) as AuthorizationSource }));
  }
  if (r.to !== undefined && r.to.length > 0) {
    out.to = r.to.map((t) => ({
      operation: dropEmpty(t.operation, OPERATION_FIELDS) as AuthorizationOperation,
    }));
  }
  if (r.when !== undefined && r.when.length > 0) {
    out.when = r.when.map((c) => dropEmpty(c, ['values', 'notValues']) as AuthorizationCondition);
  }
  return out;
}

function dropEmpty<T extends object>(obj: T, fields: readonly string[]): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const v = (obj as Record<string, unknown>)[f];
    if (Array.isArray(v) && v.length > 0) out[f] = f.endsWith('IpBlocks') ? v.map(canonicalCidr) : v;
  }
  if ('key' in obj) out.key = (obj as { key: string }).key;
  return out as Partial<T>;
}

function canonicalCidr(v: string): string {
  return parseCidr(v)!.text;
}
