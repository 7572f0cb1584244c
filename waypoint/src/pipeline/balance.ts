// Filter 9, load balancing: one endpoint of the chosen backend per try (round robin, least
// request, random or consistent hash on a header, skipping ejected endpoints), dialed in the
// family the client used. The endpoint's in-flight count is held until the response is done
// (finish) or the try failed. No endpoint → 503 UH.
import type { IncomingHttpHeaders } from 'node:http';
import type { EgressTlsLookup } from '../config.js';
import { upstreamTlsFor } from '../egress/tls.js';
import { type EndpointInfo, endpointPort } from '../model.js';
import type { UpstreamEndpoint } from '../upstream.js';
import { type Filter, failure, type Outcome, type RequestContext } from './context.js';

/**
 * The endpoint's address of the family the client used (IPv6 for a tunnel to an IPv6 VIP) when it
 * has one, else its primary address: a dual-stack pod is reached the way it was asked for.
 */
export function dialAddress(ep: EndpointInfo, clientHost: string): string {
  const v6 = clientHost.includes(':');
  if (ep.ip.includes(':') === v6) return ep.ip;
  return ep.ips?.find((ip) => ip.includes(':') === v6) ?? ep.ip;
}

export function headerValue(headers: IncomingHttpHeaders, name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** One UpstreamEndpoint object per endpoint, port and family: pools find it without building keys. */
const dialed = new WeakMap<EndpointInfo, Map<number, UpstreamEndpoint>>();

export function upstreamOf(
  info: EndpointInfo,
  port: number,
  clientHost: string,
  egressTls?: EgressTlsLookup,
): UpstreamEndpoint {
  if (info.egress !== undefined) return egressUpstreamOf(info, port, clientHost, egressTls);
  const ip = dialAddress(info, clientHost);
  let byPort = dialed.get(info);
  if (byPort === undefined) {
    byPort = new Map();
    dialed.set(info, byPort);
  }
  const key = ip === info.ip ? port : -port;
  let u = byPort.get(key);
  if (u === undefined) {
    u =
      info.authorityHost === undefined
        ? { ip, port, workload: info.workload }
        : { ip, port, workload: info.workload, authorityHost: info.authorityHost };
    byPort.set(key, u);
  }
  return u;
}

const egressDialed = new WeakMap<EndpointInfo, Map<string, UpstreamEndpoint>>();

/**
 * An endpoint outside the mesh (a ServiceEntry's): its address, the host the dialed VIP stands for
 * (DNS), or the dialed address itself (NONE), with the entry's TLS origination when it has one.
 */
function egressUpstreamOf(
  info: EndpointInfo,
  port: number,
  clientHost: string,
  egressTls: EgressTlsLookup | undefined,
): UpstreamEndpoint {
  const eg = info.egress!;
  const dnsName = eg.dnsName === '' ? (eg.hostOfVip.get(clientHost) ?? eg.defaultHost) : eg.dnsName;
  const ip = info.ip === '-' ? clientHost : dnsName !== undefined ? '0.0.0.0' : info.ip;
  const tlsSettings = egressTls?.(eg.entry);
  const tls =
    tlsSettings === undefined ? undefined : upstreamTlsFor(tlsSettings, dnsName ?? eg.defaultHost ?? ip);
  const key = `${ip}|${port}|${dnsName ?? ''}|${tls?.id ?? 0}`;
  let byKey = egressDialed.get(info);
  if (byKey === undefined) {
    byKey = new Map();
    egressDialed.set(info, byKey);
  }
  let u = byKey.get(key);
  if (u === undefined) {
    u = { ip, port, egress: { entry: eg.entry, dnsName, tls } };
    // Bounded: per endpoint, its ports × hosts × TLS versions (an old TLS version's entries go with
    // the compiled endpoint when its entry changes).
    byKey.set(key, u);
  }
  return u;
}

function releaseOnFailure(rc: RequestContext, o: Outcome): Outcome {
  if (o.kind === 'failure') rc.releaseActive();
  return o;
}

export const balanceFilter: Filter = {
  name: 'balance',
  run(rc, next) {
    const cluster = rc.cluster!;
    rc.endpoint = undefined;
    const hashHeader = cluster.settings.hashHeader;
    const ep = cluster.findEndpoint(
      hashHeader === undefined ? undefined : headerValue(rc.headers, hashHeader),
    );
    if (ep === undefined) return failure('NO_HEALTHY_UPSTREAM');
    const port = endpointPort(rc.target!, ep.info, rc.targetPort);
    if (port === undefined) return failure('NO_HEALTHY_UPSTREAM');
    rc.endpoint = ep;
    rc.upstream = upstreamOf(ep.info, port, rc.stream.authority.host, rc.snap.egressTls);
    ep.active++;
    rc.activeOn = ep;
    const o = next(rc);
    return o instanceof Promise ? o.then((v) => releaseOnFailure(rc, v)) : releaseOnFailure(rc, o);
  },
};
