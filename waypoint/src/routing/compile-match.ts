// One HTTPRoute/GRPCRoute match → the typed path/method/header/query match the data path tests
// (match.ts). Regular expressions are compiled here, once per object, never per request.
import type { GrpcRouteSpec, HttpRouteSpec } from './schema.js';
import type { PathMatch, RouteEntry, ValueMatch } from './types.js';

export type HttpMatch = NonNullable<NonNullable<HttpRouteSpec['rules']>[number]['matches']>[number];
export type GrpcMatch = NonNullable<NonNullable<GrpcRouteSpec['rules']>[number]['matches']>[number];
/** Rejects the object being compiled with an error naming `field`. */
export type Fail = (field: string, detail: string) => never;
export type MatchFields = Pick<RouteEntry, 'path' | 'method' | 'headers' | 'query'>;

function compileRegex(value: string, field: string, fail: Fail): RegExp {
  try {
    return new RegExp(`^(?:${value})$`);
  } catch (err) {
    return fail(field, `invalid regular expression: ${(err as Error).message}`);
  }
}

function compileValueMatches(
  list: HttpMatch['headers'],
  field: string,
  lower: boolean,
  fail: Fail,
): ValueMatch[] {
  return (list ?? []).map((h, i) => {
    const n = lower ? h.name.toLowerCase() : h.name;
    if (h.type === 'RegularExpression')
      return {
        name: n,
        type: 'RegularExpression',
        value: h.value,
        regex: compileRegex(h.value, `${field}[${i}].value`, fail),
      };
    return { name: n, type: 'Exact', value: h.value };
  });
}

export function compileHttpMatch(m: HttpMatch, base: string, fail: Fail): MatchFields {
  const type = m.path?.type ?? 'PathPrefix';
  const value = m.path?.value ?? '/';
  let path: PathMatch;
  if (type === 'RegularExpression')
    path = { type, value, regex: compileRegex(value, `${base}.path.value`, fail) };
  else {
    if (!value.startsWith('/')) fail(`${base}.path.value`, 'must start with "/"');
    // PathPrefix matches path elements: a trailing "/" in the prefix is not significant.
    path = {
      type,
      value: type === 'PathPrefix' && value.length > 1 ? value.replace(/\/+$/, '') || '/' : value,
    };
  }
  return {
    path,
    method: m.method,
    headers: compileValueMatches(m.headers, `${base}.headers`, true, fail),
    query: compileValueMatches(m.queryParams, `${base}.queryParams`, false, fail),
  };
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** gRPC calls are POST /<service>/<method>; a GRPCRoute method match becomes a path match. */
export function compileGrpcMatch(m: GrpcMatch, base: string, fail: Fail): MatchFields {
  const mm = m.method;
  let path: PathMatch = { type: 'PathPrefix', value: '/' };
  if (mm !== undefined) {
    if (mm.service === undefined && mm.method === undefined)
      fail(`${base}.method`, 'one of service or method is required');
    if ((mm.type ?? 'Exact') === 'Exact') {
      if (mm.service !== undefined && mm.method !== undefined)
        path = { type: 'Exact', value: `/${mm.service}/${mm.method}` };
      else if (mm.service !== undefined) path = { type: 'PathPrefix', value: `/${mm.service}` };
      else {
        const v = `/[^/]+/${escapeRegex(mm.method!)}`;
        path = { type: 'RegularExpression', value: v, regex: compileRegex(v, `${base}.method`, fail) };
      }
    } else {
      const v = `/${mm.service ?? '[^/]+'}/${mm.method ?? '[^/]+'}`;
      path = { type: 'RegularExpression', value: v, regex: compileRegex(v, `${base}.method`, fail) };
    }
  }
  return {
    path,
    method: undefined,
    headers: compileValueMatches(m.headers, `${base}.headers`, true, fail),
    query: [],
  };
}
