// Route lookup on the data path: first entry in precedence order whose match holds. Entries attached
// to the destination Service (GAMMA) win over entries attached to the waypoint Gateway.
import type { RouteEntry, RouteTable, ValueMatch } from './types.js';

export interface RequestView {
  method: string;
  /** Path without the query string. */
  path: string;
  /** Raw query string without "?" ('' when none). */
  query: string;
  /** Lowercase host without port. */
  host: string;
  /** Node's lowercase header map. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The service port the client dialed. */
  port: number;
}

export function findRoute(table: RouteTable, serviceKey: string, req: RequestView): RouteEntry | undefined {
  const own = table.byService.get(serviceKey);
  if (own !== undefined) {
    for (const e of own) if (entryMatches(e, req, false)) return e;
  }
  for (const e of table.gateway) if (entryMatches(e, req, true)) return e;
  return undefined;
}

function entryMatches(e: RouteEntry, req: RequestView, checkHost: boolean): boolean {
  if (e.port !== undefined && e.port !== req.port) return false;
  if (checkHost && e.hostnames.length > 0 && !e.hostnames.some((h) => hostMatches(h, req.host))) return false;
  if (!pathMatches(e, req.path)) return false;
  if (e.method !== undefined && e.method !== req.method) return false;
  for (const h of e.headers) {
    const v = req.headers[h.name];
    if (v === undefined || !valueMatches(h, Array.isArray(v) ? v.join(',') : v)) return false;
  }
  if (e.query.length > 0) {
    const params = new URLSearchParams(req.query);
    for (const q of e.query) {
      const v = params.get(q.name);
      if (v === null || !valueMatches(q, v)) return false;
    }
  }
  return true;
}

function pathMatches(e: RouteEntry, path: string): boolean {
  const m = e.path;
  switch (m.type) {
    case 'Exact':
      return path === m.value;
    case 'PathPrefix':
      // Element-wise: "/foo" matches "/foo", "/foo/" and "/foo/bar", never "/foobar".
      if (m.value === '/') return true;
      return (
        path.startsWith(m.value) && (path.length === m.value.length || path.charCodeAt(m.value.length) === 47)
      );
    case 'RegularExpression':
      return m.regex.test(path);
  }
}

function valueMatches(m: ValueMatch, v: string): boolean {
  return m.type === 'Exact' ? m.value === v : m.regex.test(v);
}

/** Gateway API hostnames: exact, or a leading "*." wildcard matching one or more labels. */
function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return pattern === host;
}
