// Applying route filters to requests and responses. Headers are Node's lowercase header maps.
import type { HeaderModifier, PathMatch, PathModifier, Redirect } from './types.js';

export type HeaderMap = Record<string, string | string[] | undefined>;

export function applyHeaderModifier(headers: HeaderMap, m: HeaderModifier | undefined): void {
  if (m === undefined) return;
  for (const name of m.remove) delete headers[name];
  for (const { name, value } of m.set) headers[name] = value;
  for (const { name, value } of m.add) {
    const cur = headers[name];
    headers[name] = cur === undefined ? value : Array.isArray(cur) ? [...cur, value] : `${cur},${value}`;
  }
}

/** The new path for a rewrite or redirect; `matched` is the route's path match. */
export function modifyPath(path: string, mod: PathModifier, matched: PathMatch): string {
  if (mod.type === 'ReplaceFullPath') return mod.value;
  // ReplacePrefixMatch: swap the matched prefix, keeping the rest of the path.
  const prefix = matched.type === 'PathPrefix' ? matched.value : '';
  const rest = prefix === '/' ? path.slice(1) : path.slice(prefix.length);
  if (rest === '') return mod.value;
  if (mod.value.endsWith('/')) return mod.value + (rest.startsWith('/') ? rest.slice(1) : rest);
  return mod.value + (rest.startsWith('/') ? rest : `/${rest}`);
}

const DEFAULT_PORT: Record<string, number> = { http: 80, https: 443 };

/** Location header for a RequestRedirect filter. */
export function redirectLocation(
  r: Redirect,
  req: { scheme: string; host: string; port: number | undefined; path: string; query: string },
  matched: PathMatch,
): string {
  const scheme = r.scheme ?? req.scheme;
  const host = r.hostname ?? req.host;
  let port = r.port;
  if (port === undefined && r.scheme === undefined) port = req.port;
  const portText = port === undefined || port === DEFAULT_PORT[scheme] ? '' : `:${port}`;
  const path = r.path === undefined ? req.path : modifyPath(req.path, r.path, matched);
  const hostText = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${scheme}://${hostText}${portText}${path}${req.query === '' ? '' : `?${req.query}`}`;
}
