// Filter 6, request mirroring: a copy of the request (Host `<host>-shadow`) goes to the mirror
// service, fire and forget; the client never waits for or sees its answer. A body is mirrored only
// when it could be buffered (see body.ts).
import type { Logger } from '@hypha/shared';
import type { Dispatcher } from 'undici';
import { endpointPort } from '../model.js';
import type { Cluster } from '../traffic/cluster.js';
import type { UpstreamPools } from '../upstream.js';
import { upstreamOf } from './balance.js';
import { bufferForReplay } from './body.js';
import { type Filter, type Next, type Outcome, type RequestContext, stripPort } from './context.js';
import { roll } from './fault.js';

export interface MirrorDeps {
  clusters: ReadonlyMap<string, Cluster>;
  pools: UpstreamPools;
  log: Logger;
  maxBufferedBodyBytes: number;
}

export function mirrorFilter(deps: MirrorDeps): Filter {
  const send = (rc: RequestContext, serviceKey: string, port: number) => {
    const cluster = deps.clusters.get(serviceKey);
    const ep = cluster?.findEndpoint(undefined);
    const epPort =
      ep === undefined || cluster === undefined ? undefined : endpointPort(cluster.service, ep.info, port);
    if (ep === undefined || epPort === undefined) return;
    const headers: Record<string, string | string[]> = { host: `${stripPort(rc.upstreamHost)}-shadow` };
    for (const k in rc.upstreamHeaders) {
      const v = rc.upstreamHeaders[k];
      if (v !== undefined) headers[k] = v;
    }
    deps.pools
      .findHttp1(upstreamOf(ep.info, epPort, rc.stream.authority.host, rc.snap.egressTls))
      .request({
        path: rc.upstreamPath,
        method: rc.method as Dispatcher.HttpMethod,
        headers,
        body: Buffer.isBuffer(rc.body) ? rc.body : null,
      })
      .then(
        (r) => r.body.dump(),
        (err: unknown) => deps.log.debug({ err, service: serviceKey }, 'mirror request failed'),
      );
  };
  const mirrorThen = async (rc: RequestContext, next: Next): Promise<Outcome> => {
    await bufferForReplay(rc, deps.maxBufferedBodyBytes);
    if (rc.aborted !== undefined) return { kind: 'failure', code: rc.aborted };
    for (const m of rc.action!.mirrors) if (roll(m.percent)) send(rc, m.service, m.port ?? rc.targetPort);
    return next(rc);
  };
  return {
    name: 'mirror',
    run(rc, next) {
      return rc.action!.mirrors.length === 0 ? next(rc) : mirrorThen(rc, next);
    },
  };
}
