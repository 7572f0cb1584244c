// L7 AuthorizationPolicy (security.hypha.dev/v1, Istio's shape) as enforced by the waypoint.
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
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import {
  compileStringMatcher,
  matchString,
  type StringMatcher as SharedStringMatcher,
} from '@hypha/shared/policy';
import { z } from 'zod';
import { WaypointConfigError } from '../errors.js';
import { type ObjectMeta, parseWith, readObjectMeta } from '../model.js';

const strings = z.array(z.string().min(1)).optional();
const sourceSchema = z.object({
  principals: strings,
  notPrincipals: strings,
  namespaces: strings,
  notNamespaces: strings,
  ipBlocks: strings,
  notIpBlocks: strings,
  remoteIpBlocks: strings,
  notRemoteIpBlocks: strings,
  requestPrincipals: strings,
  notRequestPrincipals: strings,
});
const operationSchema = z.object({
  hosts: strings,
  notHosts: strings,
  ports: z.array(z.union([z.string().regex(/^\d+$/), z.number().int()])).optional(),
  notPorts: z.array(z.union([z.string().regex(/^\d+$/), z.number().int()])).optional(),
  methods: strings,
  notMethods: strings,
  paths: strings,
  notPaths: strings,
});
const SUPPORTED_KEYS =
  /^(request\.headers\[[^\]]+\]|source\.ip|source\.namespace|source\.principal|destination\.port|remote\.ip)$/;
const conditionSchema = z.object({
  key: z
    .string()
    .regex(
      SUPPORTED_KEYS,
      'unsupported key: use request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal or destination.port',
    ),
  values: strings,
  notValues: strings,
});
const ruleSchema = z.object({
  from: z.array(z.object({ source: sourceSchema })).optional(),
  to: z.array(z.object({ operation: operationSchema })).optional(),
  when: z.array(conditionSchema).optional(),
});
const specSchema = z.object({
  action: z.enum(['ALLOW', 'DENY', 'AUDIT']).optional(),
  targetRefs: z
    .array(
      z.object({
        group: z.string().optional(),
        kind: z.string(),
        name: z.string().min(1),
        namespace: z.string().optional(),
      }),
    )
    .optional(),
  targetRef: z
    .object({
      group: z.string().optional(),
      kind: z.string(),
      name: z.string().min(1),
      namespace: z.string().optional(),
    })
    .optional(),
  selector: z.unknown().optional(),
  rules: z.array(ruleSchema).optional(),
});

// String matching is the L4 evaluator's (one set lookup for exact values, then prefixes/suffixes),
// so a principal or namespace pattern means the same at L4 and L7.
type StringMatcher = SharedStringMatcher;

interface CompiledSource {
  principals?: StringMatcher;
  notPrincipals?: StringMatcher;
  /**
   * JWT principals. Hypha has no request authentication, so every request is one without a token:
   * `requestPrincipals` never matches and `notRequestPrincipals` always does (Istio's meaning for a
   * request that carries no token), instead of the fields being dropped and widening an ALLOW.
   */
  requestPrincipals?: StringMatcher;
  notRequestPrincipals?: StringMatcher;
  namespaces?: StringMatcher;
  notNamespaces?: StringMatcher;
  ipBlocks?: BlockList;
  notIpBlocks?: BlockList;
}
interface CompiledOperation {
  hosts?: StringMatcher;
  notHosts?: StringMatcher;
  ports?: Set<number>;
  notPorts?: Set<number>;
  methods?: StringMatcher;
  notMethods?: StringMatcher;
  paths?: StringMatcher;
  notPaths?: StringMatcher;
}
interface CompiledCondition {
  key: string;
  header: string | undefined;
  values?: StringMatcher;
  notValues?: StringMatcher;
  blocks?: BlockList;
  notBlocks?: BlockList;
}
interface CompiledRule {
  from: CompiledSource[] | undefined;
  to: CompiledOperation[] | undefined;
  when: CompiledCondition[];
}

export interface CompiledAuthzPolicy {
  /** `namespace/name` */
  key: string;
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  /** undefined: no rules (matches nothing). */
  rules: CompiledRule[] | undefined;
  /** Applies to every service of the waypoint. */
  gateway: boolean;
  /** Service keys (`namespace/name`) this policy targets. */
  services: string[];
}

export interface AuthzAttributes {
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
}

export interface AuthzDecision {
  allowed: boolean;
  /** The policy whose rule decided (`namespace/name`), if any. */
  policy: string | undefined;
  /** AUDIT policies that matched. */
  audited: string[];
}

/** The policies that apply to one destination service, split by action (computed once per config). */
export interface PolicySet {
  deny: CompiledAuthzPolicy[];
  allow: CompiledAuthzPolicy[];
  audit: CompiledAuthzPolicy[];
}

export function compileAuthorizationPolicy(
  raw: unknown,
  gateway: { name: string; namespace: string },
): CompiledAuthzPolicy | undefined {
  const { meta, spec: rawSpec } = readObjectMeta('AuthorizationPolicy', raw);
  const spec = parseWith(specSchema, rawSpec ?? {}, 'AuthorizationPolicy', meta, 'spec');
  const refs = spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : []);
  if (refs.length === 0) return undefined; // selector/namespace-wide policy: enforced by the agents at L4
  let onGateway = false;
  const services: string[] = [];
  refs.forEach((r, i) => {
    const ns = r.namespace ?? meta.namespace;
    if (ns !== meta.namespace) {
      throw new WaypointConfigError(
        'INVALID_OBJECT',
        'AuthorizationPolicy',
        meta.namespace,
        meta.name,
        `spec.targetRefs[${i}].namespace`,
        "targetRefs may only name objects in the policy's own namespace",
      );
    }
    if (r.kind === 'Gateway') {
      if (r.name === gateway.name && ns === gateway.namespace) onGateway = true;
    } else if (r.kind === 'Service') services.push(`${ns}/${r.name}`);
    else {
      throw new WaypointConfigError(
        'INVALID_OBJECT',
        'AuthorizationPolicy',
        meta.namespace,
        meta.name,
        `spec.targetRefs[${i}].kind`,
        `kind ${r.kind} is not supported (Gateway or Service)`,
      );
    }
  });
  const rules = spec.rules?.map((r, i) => compileRule(r, meta, `spec.rules[${i}]`));
  return {
    key: `${meta.namespace}/${meta.name}`,
    action: spec.action ?? 'ALLOW',
    rules,
    gateway: onGateway,
    services,
  };
}

function matchers(list: string[] | undefined, lower = false): StringMatcher | undefined {
  if (list === undefined) return undefined;
  return compileStringMatcher(lower ? list.map((p) => p.toLowerCase()) : list);
}

function blocks(list: string[] | undefined, meta: ObjectMeta, field: string): BlockList | undefined {
  if (list === undefined) return undefined;
  const bl = new BlockList();
  list.forEach((text, i) => {
    const [addr = '', prefixText] = text.split('/');
    const family = isIPv4(addr) ? 'ipv4' : isIPv6(addr) ? 'ipv6' : undefined;
    const prefix = prefixText === undefined ? (family === 'ipv4' ? 32 : 128) : Number(prefixText);
    if (
      family === undefined ||
      !Number.isInteger(prefix) ||
      prefix < 0 ||
      prefix > (family === 'ipv4' ? 32 : 128)
    ) {
      throw new WaypointConfigError(
        'INVALID_OBJECT',
        'AuthorizationPolicy',
        meta.namespace,
        meta.name,
        `${field}[${i}]`,
        `"${text}" is not an IP address or CIDR block`,
      );
    }
    bl.addSubnet(addr, prefix, family);
  });
  return bl;
}

type RuleSpec = z.infer<typeof ruleSchema>;

function compileRule(r: RuleSpec, meta: ObjectMeta, base: string): CompiledRule {
  const from = r.from?.map(({ source: s }, i): CompiledSource => {
    const f = `${base}.from[${i}].source`;
    const ipBlocks =
      s.ipBlocks || s.remoteIpBlocks ? [...(s.ipBlocks ?? []), ...(s.remoteIpBlocks ?? [])] : undefined;
    const notIpBlocks =
      s.notIpBlocks || s.notRemoteIpBlocks
        ? [...(s.notIpBlocks ?? []), ...(s.notRemoteIpBlocks ?? [])]
        : undefined;
    return omitUndefined({
      principals: matchers(s.principals),
      notPrincipals: matchers(s.notPrincipals),
      requestPrincipals: matchers(s.requestPrincipals),
      notRequestPrincipals: matchers(s.notRequestPrincipals),
      namespaces: matchers(s.namespaces),
      notNamespaces: matchers(s.notNamespaces),
      ipBlocks: blocks(ipBlocks, meta, `${f}.ipBlocks`),
      notIpBlocks: blocks(notIpBlocks, meta, `${f}.notIpBlocks`),
    });
  });
  const to = r.to?.map(({ operation: o }): CompiledOperation => {
    return omitUndefined({
      hosts: matchers(o.hosts, true),
      notHosts: matchers(o.notHosts, true),
      ports: o.ports ? new Set(o.ports.map(Number)) : undefined,
      notPorts: o.notPorts ? new Set(o.notPorts.map(Number)) : undefined,
      methods: matchers(o.methods),
      notMethods: matchers(o.notMethods),
      paths: matchers(o.paths),
      notPaths: matchers(o.notPaths),
    });
  });
  const when = (r.when ?? []).map((c, i): CompiledCondition => {
    const header = /^request\.headers\[([^\]]+)\]$/.exec(c.key)?.[1]?.toLowerCase();
    const isIp = c.key === 'source.ip' || c.key === 'remote.ip';
    if (c.values === undefined && c.notValues === undefined) {
      throw new WaypointConfigError(
        'INVALID_OBJECT',
        'AuthorizationPolicy',
        meta.namespace,
        meta.name,
        `${base}.when[${i}]`,
        'one of values or notValues is required',
      );
    }
    return omitUndefined({
      key: c.key,
      header,
      values: isIp ? undefined : matchers(c.values),
      notValues: isIp ? undefined : matchers(c.notValues),
      blocks: isIp ? blocks(c.values, meta, `${base}.when[${i}].values`) : undefined,
      notBlocks: isIp ? blocks(c.notValues, meta, `${base}.when[${i}].notValues`) : undefined,
    });
  });
  return { from, to, when };
}

function omitUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

const any = (m: StringMatcher, v: string | undefined): boolean => v !== undefined && matchString(m, v);

function ipFamily(ip: string): 'ipv4' | 'ipv6' {
  return isIPv4(ip) ? 'ipv4' : 'ipv6';
}

function normalizeIp(ip: string): string {
  return ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

function sourceMatches(s: CompiledSource, a: AuthzAttributes): boolean {
  if (s.principals && !any(s.principals, a.principal)) return false;
  if (s.notPrincipals && any(s.notPrincipals, a.principal)) return false;
  // No request principal ever exists (see CompiledSource).
  if (s.requestPrincipals && !any(s.requestPrincipals, undefined)) return false;
  if (s.notRequestPrincipals && any(s.notRequestPrincipals, undefined)) return false;
  if (s.namespaces && !any(s.namespaces, a.sourceNamespace)) return false;
  if (s.notNamespaces && any(s.notNamespaces, a.sourceNamespace)) return false;
  const ip = normalizeIp(a.sourceIp);
  if (s.ipBlocks && !s.ipBlocks.check(ip, ipFamily(ip))) return false;
  if (s.notIpBlocks?.check(ip, ipFamily(ip))) return false;
  return true;
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const i = host.lastIndexOf(':');
  return i >= 0 && host.indexOf(':') === i ? host.slice(0, i) : host;
}

function operationMatches(o: CompiledOperation, a: AuthzAttributes, forDeny: boolean): boolean {
  if (o.ports && !o.ports.has(a.port)) return false;
  if (o.notPorts?.has(a.port)) return false;
  const r = a.request;
  if (r === undefined) {
    // TCP: request fields can't be checked; a DENY stays in force, an ALLOW does not open.
    return forDeny || !(o.hosts || o.notHosts || o.methods || o.notMethods || o.paths || o.notPaths);
  }
  if (o.methods && !any(o.methods, r.method)) return false;
  if (o.notMethods && any(o.notMethods, r.method)) return false;
  if (o.paths && !any(o.paths, r.path)) return false;
  if (o.notPaths && any(o.notPaths, r.path)) return false;
  if (o.hosts || o.notHosts) {
    const bare = stripPort(r.host).toLowerCase();
    const host = r.host.toLowerCase();
    const hostIn = (m: StringMatcher) => any(m, host) || any(m, bare);
    if (o.hosts && !hostIn(o.hosts)) return false;
    if (o.notHosts && hostIn(o.notHosts)) return false;
  }
  return true;
}

function conditionValue(c: CompiledCondition, a: AuthzAttributes): string | undefined {
  if (c.header !== undefined) {
    const v = a.request?.headers[c.header];
    return Array.isArray(v) ? v.join(',') : v;
  }
  switch (c.key) {
    case 'source.namespace':
      return a.sourceNamespace;
    case 'source.principal':
      return a.principal;
    case 'destination.port':
      return String(a.port);
    default:
      return normalizeIp(a.sourceIp);
  }
}

function conditionMatches(c: CompiledCondition, a: AuthzAttributes, forDeny: boolean): boolean {
  if (c.header !== undefined && a.request === undefined) return forDeny;
  const v = conditionValue(c, a);
  if (c.blocks || c.notBlocks) {
    if (v === undefined) return false;
    if (c.blocks && !c.blocks.check(v, ipFamily(v))) return false;
    if (c.notBlocks?.check(v, ipFamily(v))) return false;
    return true;
  }
  if (c.values && !any(c.values, v)) return false;
  if (c.notValues && any(c.notValues, v)) return false;
  return true;
}

function ruleMatches(r: CompiledRule, a: AuthzAttributes, forDeny: boolean): boolean {
  if (r.from && !r.from.some((s) => sourceMatches(s, a))) return false;
  if (r.to && !r.to.some((o) => operationMatches(o, a, forDeny))) return false;
  for (const c of r.when) if (!conditionMatches(c, a, forDeny)) return false;
  return true;
}

function policyMatches(p: CompiledAuthzPolicy, a: AuthzAttributes): boolean {
  if (p.rules === undefined) return false;
  const forDeny = p.action !== 'ALLOW';
  return p.rules.some((r) => ruleMatches(r, a, forDeny));
}

export function evaluateAuthz(set: PolicySet, a: AuthzAttributes): AuthzDecision {
  const audited: string[] = [];
  for (const p of set.audit) if (policyMatches(p, a)) audited.push(p.key);
  for (const p of set.deny) if (policyMatches(p, a)) return { allowed: false, policy: p.key, audited };
  if (set.allow.length === 0) return { allowed: true, policy: undefined, audited };
  for (const p of set.allow) if (policyMatches(p, a)) return { allowed: true, policy: p.key, audited };
  return { allowed: false, policy: undefined, audited };
}

export const EMPTY_POLICY_SET: PolicySet = { deny: [], allow: [], audit: [] };

/** Groups compiled policies per destination service (gateway-wide policies join every set). */
export function indexPolicies(
  policies: readonly CompiledAuthzPolicy[],
  serviceKeys: Iterable<string>,
): Map<string, PolicySet> {
  const out = new Map<string, PolicySet>();
  for (const key of serviceKeys) {
    const set: PolicySet = { deny: [], allow: [], audit: [] };
    for (const p of policies) {
      if (!p.gateway && !p.services.includes(key)) continue;
      (p.action === 'DENY' ? set.deny : p.action === 'ALLOW' ? set.allow : set.audit).push(p);
    }
    out.set(key, set);
  }
  return out;
}
