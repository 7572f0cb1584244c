// Writing answers downstream: the upstream response head (hop-by-hop headers dropped, the route's
// and backend's response header modifiers applied) and the waypoint's own local answers.
import type { IncomingHttpHeaders } from 'node:http';
import { FAILURES } from '../errors.js';
import { applyHeaderModifier, type HeaderMap } from '../routing/filters.js';
import type { DownstreamResponse, Outcome, RequestContext } from './context.js';
import { HOP_BY_HOP } from './rewrite.js';

export function responseHead(rc: RequestContext, upstream: IncomingHttpHeaders): HeaderMap {
  const h: HeaderMap = {};
  for (const k in upstream) if (k.charCodeAt(0) !== 58 && !HOP_BY_HOP.has(k)) h[k] = upstream[k];
  applyHeaderModifier(h, rc.action?.responseHeaders);
  applyHeaderModifier(h, rc.backend?.responseHeaders);
  return h;
}

export function writeHead(
  res: DownstreamResponse,
  status: number,
  headers: Record<string, string | string[] | number | undefined>,
): void {
  const clean: Record<string, string | string[] | number> = {};
  for (const k in headers) {
    const v = headers[k];
    if (v !== undefined) clean[k] = v;
  }
  res.writeHead(status, clean);
}

function local(
  rc: RequestContext,
  status: number,
  body: string,
  flag: string | undefined,
  extra: Readonly<Record<string, string>> | undefined,
): void {
  if (flag !== undefined && flag !== '-') rc.addFlag(flag);
  const res = rc.res;
  if (res.headersSent || res.destroyed) return void res.destroy();
  const length = Buffer.byteLength(body);
  rc.responseBytes = length;
  writeHead(res, status, { 'content-type': 'text/plain', 'content-length': length, ...extra });
  res.end(body);
}

/** Sends what the pipeline decided. */
export function answer(rc: RequestContext, o: Outcome): void {
  switch (o.kind) {
    case 'response':
      o.respond(rc);
      return;
    case 'local':
      local(rc, o.status, o.body, o.flag, o.headers);
      return;
    case 'failure': {
      if (o.code === 'DOWNSTREAM_CLOSED') {
        rc.addFlag('DC');
        return void rc.res.destroy();
      }
      const f = FAILURES[o.code];
      local(rc, f.status, f.body, f.flag, undefined);
      if (rc.pendingFlag !== undefined) rc.addFlag(rc.pendingFlag);
    }
  }
}
