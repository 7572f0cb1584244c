// The production ingress: an HBONE server handler that hands each CONNECT stream to the waypoint.
// The authority (VIP:port, or podIP:port of a pod bound to this waypoint) must name something this
// waypoint serves, else 400 (as the HBONE spec says for a bad authority). The client address comes
// from `forwarded: for=` (the source agent knows the real client), else the TCP peer.
//
// The waypoint reads and writes the CONNECT stream itself (`serve`): the HTTP servers inside it
// parse straight off the Http2Stream, with no in-memory stream pair and copy loop in between.
import { formatAuthority, type HboneHandler } from '@hypha/shared/hbone';
import type { Waypoint } from './proxy.js';

export function hboneIngressHandler(waypoint: Waypoint): HboneHandler {
  return (req) => {
    const authority = { host: req.authority.host, port: req.authority.port };
    if (!waypoint.servesAddress(authority.host, authority.port)) {
      return {
        status: 400,
        reason: `waypoint serves no service or bound pod at ${formatAuthority(authority)}`,
      };
    }
    // The listener takes both families on one `::` socket: an IPv4 peer shows up v4-mapped.
    const peer = req.connection.remoteAddress;
    const source = req.forwardedFor ?? {
      ip: peer.startsWith('::ffff:') && peer.includes('.') ? peer.slice(7) : peer,
      port: req.connection.remotePort,
    };
    const ctx = { peer: req.peer, authority, source: { ip: source.ip, port: source.port ?? 0 } };
    return { status: 200, serve: (stream) => waypoint.handleStream(stream, ctx) };
  };
}
