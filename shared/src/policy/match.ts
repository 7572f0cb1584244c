// The one rule matcher behind both enforcers: the node agent's L4 decision (evaluate.ts) and the
// waypoint's L7 decision (waypoint.ts), and the explanations `hypha policy explain` prints.
//
// Invariants:
// - A rule matches when every part it sets matches: `from` (any entry), `to` (any entry), `when`
//   (every condition). Within an entry every field set must match; values within a field are OR'd.
// - Each check says which field failed as a constant tag, never a string built per call: matching
//   allocates nothing; only explanations (`describeMismatch`) format text.
// - Missing request data never widens access. With no HTTP request (L4, or plain TCP through a
//   waypoint), a part that needs one does not match for an ALLOW and matches for a DENY or AUDIT
//   (`forDeny`), so a DENY rule holds on its L4 part alone. (The agent never sees such parts: it
//   fails closed or drops the rule before evaluating, see compile.ts.)
import { type Cidr, cidrContains, type ParsedIp, parseIp } from '../config/ip.js';
import type {
  CompiledCondition,
  CompiledOperation,
  CompiledRule,
  CompiledSource,
  StringMatcher,
} from './compile.js';
import { matchString, needsRequest } from './compile.js';

/**
 * The token the waypoint verified for this request (RequestAuthentication), as authorization reads
 * it: `request.auth.principal` is `iss/sub`, `presenter` the `azp` claim.
 */
export interface RequestAuth {
  readonly principal: string;
  readonly audiences: readonly string[];
  readonly presenter: string;
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface RequestFacts {
  readonly method: string;
  readonly path: string;
  /** Host header (may include a port). */
  readonly host: string;
  /** Lowercase names, as Node delivers them. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** What one connection or request offers to the rules; filled once, read by every rule. */
export interface Facts {
  /** Peer principal without scheme; '' without identity. */
  principal: string;
  /** Peer namespace; '' without identity. */
  namespace: string;
  ipText: string;
  /** null: not parsed yet; undefined: not an IP. */
  ip: ParsedIp | undefined | null;
  port: number;
  /** undefined: no HTTP request (L4, or plain TCP at the waypoint). */
  request: RequestFacts | undefined;
  /** The verified token; undefined without one (and always at L4). */
  auth: RequestAuth | undefined;
  /** Lowercased host and host without port, computed when a hosts rule first asks. */
  host: string | null;
  bareHost: string | null;
}

export function newFacts(): Facts {
  return {
    principal: '',
    namespace: '',
    ipText: '',
    ip: null,
    port: 0,
    request: undefined,
    auth: undefined,
    host: null,
    bareHost: null,
  };
}

export function resetFacts(
  f: Facts,
  principal: string,
  namespace: string,
  ip: string,
  port: number,
  request: RequestFacts | undefined,
  auth?: RequestAuth,
): Facts {
  f.principal = principal;
  f.namespace = namespace;
  f.ipText = ip;
  f.ip = null;
  f.port = port;
  f.request = request;
  f.auth = auth;
  f.host = null;
  f.bareHost = null;
  return f;
}

export function firstMatchingRule(
  rules: readonly CompiledRule[],
  f: Facts,
  forDeny: boolean,
): CompiledRule | undefined {
  for (const rule of rules) if (ruleMatches(rule, f, forDeny)) return rule;
  return undefined;
}

export function ruleMatches(rule: CompiledRule, f: Facts, forDeny: boolean): boolean {
  if (rule.from !== undefined) {
    let any = false;
    for (const s of rule.from) {
      if (sourceFailure(s, f) === undefined) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (rule.to !== undefined) {
    let any = false;
    for (const o of rule.to) {
      if (operationFailure(o, f, forDeny) === undefined) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (rule.when !== undefined) {
    for (const c of rule.when) if (conditionFailure(c, f, forDeny) !== undefined) return false;
  }
  return true;
}

type SourceField = keyof CompiledSource;
type OperationField = Exclude<keyof CompiledOperation, 'needsRequest'> | 'request';
type ConditionPart = 'values' | 'notValues' | 'request';

function sourceFailure(s: CompiledSource, f: Facts): SourceField | undefined {
  if (s.principals && !matchString(s.principals, f.principal)) return 'principals';
  if (s.notPrincipals && matchString(s.notPrincipals, f.principal)) return 'notPrincipals';
  if (s.namespaces && !matchString(s.namespaces, f.namespace)) return 'namespaces';
  if (s.notNamespaces && matchString(s.notNamespaces, f.namespace)) return 'notNamespaces';
  if (s.ipBlocks && !inBlocks(s.ipBlocks, f)) return 'ipBlocks';
  if (s.notIpBlocks && inBlocks(s.notIpBlocks, f)) return 'notIpBlocks';
  // Without a verified token the principal is '', which no matcher (not even `*`) matches.
  if (s.requestPrincipals && !matchString(s.requestPrincipals, f.auth?.principal ?? '')) {
    return 'requestPrincipals';
  }
  if (s.notRequestPrincipals && matchString(s.notRequestPrincipals, f.auth?.principal ?? '')) {
    return 'notRequestPrincipals';
  }
  return undefined;
}

function operationFailure(o: CompiledOperation, f: Facts, forDeny: boolean): OperationField | undefined {
  if (o.ports && !o.ports.has(f.port)) return 'ports';
  if (o.notPorts?.has(f.port)) return 'notPorts';
  if (!o.needsRequest) return undefined;
  const r = f.request;
  if (r === undefined) return forDeny ? undefined : 'request';
  if (o.methods && !matchString(o.methods, r.method)) return 'methods';
  if (o.notMethods && matchString(o.notMethods, r.method)) return 'notMethods';
  if (o.paths && !matchString(o.paths, r.path)) return 'paths';
  if (o.notPaths && matchString(o.notPaths, r.path)) return 'notPaths';
  if (o.hosts && !hostIn(o.hosts, f, r)) return 'hosts';
  if (o.notHosts && hostIn(o.notHosts, f, r)) return 'notHosts';
  return undefined;
}

function conditionFailure(c: CompiledCondition, f: Facts, forDeny: boolean): ConditionPart | undefined {
  if ((f.request === undefined && needsRequest(c)) || c.reads === 'unsupported') {
    return forDeny ? undefined : 'request';
  }
  if (c.values !== undefined && !conditionHolds(c, c.values, f)) return 'values';
  if (c.notValues !== undefined && conditionHolds(c, c.notValues, f)) return 'notValues';
  return undefined;
}

function conditionHolds(
  c: CompiledCondition,
  values: NonNullable<CompiledCondition['values']>,
  f: Facts,
): boolean {
  switch (c.reads) {
    case 'ip':
      return inBlocks(values as readonly Cidr[], f);
    case 'port':
      return (values as ReadonlySet<number>).has(f.port);
    case 'principal':
      return matchString(values as StringMatcher, f.principal);
    case 'namespace':
      return matchString(values as StringMatcher, f.namespace);
    case 'header': {
      const v = headerValue(c, f);
      return v !== undefined && matchString(values as StringMatcher, v);
    }
    case 'requestPrincipal':
      return matchString(values as StringMatcher, f.auth?.principal ?? '');
    case 'presenter':
      return matchString(values as StringMatcher, f.auth?.presenter ?? '');
    case 'audiences':
      return anyMatches(values as StringMatcher, f.auth?.audiences);
    case 'claim':
      return anyMatches(values as StringMatcher, claimValues(c, f));
    case 'unsupported':
      return false;
  }
}

function anyMatches(m: StringMatcher, values: readonly string[] | undefined): boolean {
  if (values === undefined) return false;
  for (const v of values) if (matchString(m, v)) return true;
  return false;
}

/**
 * A claim's values: a string, each string of a list, or a number or boolean as text (Istio reads
 * strings and lists of strings). Nested claims follow the path: `claims[a][b]` is `claims.a.b`.
 */
function claimValues(c: CompiledCondition, f: Facts): readonly string[] | undefined {
  let v: unknown = f.auth?.claims;
  for (const part of c.claim!) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  if (typeof v === 'string') return [v];
  if (typeof v === 'number' || typeof v === 'boolean') return [String(v)];
  if (Array.isArray(v)) return v.filter((x) => typeof x === 'string');
  return undefined;
}

function headerValue(c: CompiledCondition, f: Facts): string | undefined {
  const v = f.request?.headers[c.header!];
  return Array.isArray(v) ? v.join(',') : v;
}

function inBlocks(blocks: readonly Cidr[], f: Facts): boolean {
  if (f.ip === null) f.ip = parseIp(f.ipText);
  const ip = f.ip;
  if (ip === undefined) return false;
  for (const b of blocks) if (cidrContains(b, ip)) return true;
  return false;
}

/** `hosts` match the Host header as sent or without its port, case-insensitively. */
function hostIn(m: StringMatcher, f: Facts, r: RequestFacts): boolean {
  if (f.host === null) {
    f.host = r.host.toLowerCase();
    f.bareHost = stripPort(f.host);
  }
  return matchString(m, f.host) || matchString(m, f.bareHost!);
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const i = host.lastIndexOf(':');
  return i >= 0 && host.indexOf(':') === i ? host.slice(0, i) : host;
}

// ---- explanations (not on the data path) ----

/** undefined when the rule matches; otherwise the first reason it does not, for explanations. */
export function describeMismatch(rule: CompiledRule, f: Facts, forDeny: boolean): string | undefined {
  if (rule.from !== undefined) {
    let why: string | undefined;
    for (let i = 0; i < rule.from.length; i++) {
      const s = rule.from[i]!;
      const field = sourceFailure(s, f);
      if (field === undefined) {
        why = undefined;
        break;
      }
      why ??= `from[${i}].source.${field} ${written(s[field]!)}: ${sourceValue(field, f)}`;
    }
    if (why !== undefined) return why;
  }
  if (rule.to !== undefined) {
    let why: string | undefined;
    for (let i = 0; i < rule.to.length; i++) {
      const o = rule.to[i]!;
      const field = operationFailure(o, f, forDeny);
      if (field === undefined) {
        why = undefined;
        break;
      }
      why ??= `to[${i}].operation.${describeOperationField(o, field, f)}`;
    }
    if (why !== undefined) return why;
  }
  if (rule.when !== undefined) {
    for (let i = 0; i < rule.when.length; i++) {
      const c = rule.when[i]!;
      const part = conditionFailure(c, f, forDeny);
      if (part === undefined) continue;
      if (part === 'request') {
        return needsRequest(c)
          ? `when[${i}] ${c.key}: no HTTP request (plain TCP)`
          : `when[${i}] ${c.key}: not available`;
      }
      const got = conditionValueText(c, f);
      return `when[${i}] ${c.key} ${part === 'values' ? 'not in values' : 'in notValues'}${got}`;
    }
  }
  return undefined;
}

function conditionValueText(c: CompiledCondition, f: Facts): string {
  switch (c.reads) {
    case 'header': {
      const header = headerValue(c, f);
      return header === undefined ? ' (header absent)' : ` ("${header}")`;
    }
    case 'requestPrincipal':
    case 'presenter':
    case 'audiences':
    case 'claim': {
      if (f.auth === undefined) return ' (no verified token)';
      const v =
        c.reads === 'requestPrincipal'
          ? [f.auth.principal]
          : c.reads === 'presenter'
            ? [f.auth.presenter]
            : c.reads === 'audiences'
              ? f.auth.audiences
              : claimValues(c, f);
      return v === undefined ? ' (claim absent)' : ` ("${v.join(', ')}")`;
    }
    default:
      return '';
  }
}

function sourceValue(field: SourceField, f: Facts): string {
  switch (field) {
    case 'principals':
    case 'notPrincipals':
      return f.principal === '' ? 'no peer identity' : `"${f.principal}"`;
    case 'namespaces':
    case 'notNamespaces':
      return f.namespace === '' ? 'no peer namespace' : `"${f.namespace}"`;
    case 'ipBlocks':
    case 'notIpBlocks':
      return f.ipText;
    default:
      return f.auth === undefined ? 'no request principal (no verified token)' : `"${f.auth.principal}"`;
  }
}

function describeOperationField(o: CompiledOperation, field: OperationField, f: Facts): string {
  const r = f.request;
  switch (field) {
    case 'ports':
    case 'notPorts':
      return `${field} [${[...o[field]!].join(', ')}]: port ${f.port}`;
    case 'request': {
      const needs = (['methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'notHosts'] as const).filter(
        (k) => o[k] !== undefined,
      );
      return `${needs.join(', ')}: no HTTP request (plain TCP)`;
    }
    case 'methods':
    case 'notMethods':
      return `${field} ${written(o[field]!)}: "${r?.method}"`;
    case 'paths':
    case 'notPaths':
      return `${field} ${written(o[field]!)}: "${r?.path}"`;
    case 'hosts':
    case 'notHosts':
      return `${field} ${written(o[field]!)}: "${r?.host}"`;
  }
}

function written(v: StringMatcher | readonly Cidr[]): string {
  return `[${('written' in v ? v.written : v.map((b) => b.text)).join(', ')}]`;
}
