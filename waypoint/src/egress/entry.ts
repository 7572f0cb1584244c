// A ServiceEntry bound to this waypoint, as the engine's service record (egress, issue 16 part 3).
// Routes, authorization, traffic policies and telemetry treat it like a Service keyed
// `namespace/name`; what differs is its endpoints, which are outside the mesh:
//
//   STATIC  → the entry's endpoint addresses (each on its `ports[port name]`, else targetPort)
//   DNS     → the entry's endpoint host names, else the host the dialed VIP stands for, resolved
//             by the waypoint when connecting (egress/resolve.ts)
//   NONE    → the address the app dialed (the authority), as the agents do
//
// and they are dialed in plain TCP, or TLS when a TrafficPolicy `tls` says so (egress/tls.ts), never
// over HBONE (EndpointInfo.egress marks them; egress/connect.ts dials them).
import { isIP } from 'node:net';
import { z } from 'zod';
import {
  type EgressEndpoint,
  type EndpointInfo,
  parseWith,
  protocolOf,
  type ServiceEntry,
  type ServiceInput,
  type ServicePort,
} from '../model.js';

const port = z.number().int().min(1).max(65535);
const host = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a lower-case host name');

const externalSchema = z.object({
  name: z.string().min(1).max(253),
  namespace: z.string().min(1).max(253),
  vips: z.array(z.ipv4().or(z.ipv6())),
  ports: z
    .array(
      z.object({
        port,
        targetPort: port.optional(),
        name: z.string().optional(),
        appProtocol: z.string().optional(),
      }),
    )
    .min(1),
  external: z.object({
    hosts: z.array(host).min(1),
    resolution: z.enum(['DNS', 'STATIC', 'NONE']),
    location: z.enum(['MESH_EXTERNAL', 'MESH_INTERNAL']).optional(),
    hostOfVip: z.record(z.string(), host).optional(),
    endpoints: z
      .array(z.object({ address: z.string().min(1).max(253), ports: z.record(z.string(), port).optional() }))
      .optional(),
  }),
});

/** Istio's ServiceEntry port protocols as the engine's appProtocol (what it sniffs or relays). */
export function appProtocolOf(protocol: string | undefined): string | undefined {
  switch (protocol?.toUpperCase()) {
    case 'HTTP':
      return 'http';
    case 'HTTP2':
      return 'http2';
    case 'GRPC':
      return 'grpc';
    case 'HTTPS':
    case 'TLS':
    case 'TCP':
    case 'MONGO':
      return 'tcp';
    default:
      return undefined;
  }
}

export function isExternalInput(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && (raw as ServiceInput).external !== undefined;
}

export function buildExternalEntry(input: ServiceInput): ServiceEntry {
  const meta = {
    name: String(input?.name ?? '?'),
    namespace: String(input?.namespace ?? '?'),
    creationTimestamp: '',
  };
  const s = parseWith(externalSchema, input, 'ServiceEntry', meta, '');
  const key = `${s.namespace}/${s.name}`;
  const ports = new Map<number, ServicePort>();
  for (const p of s.ports) {
    ports.set(p.port, {
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      name: p.name,
      appProtocol: p.appProtocol,
      ...protocolOf(p),
    });
  }
  const ext = s.external;
  const hostOfVip = new Map(Object.entries(ext.hostOfVip ?? {}));
  const defaultHost = ext.hosts.find((h) => !h.startsWith('*.'));
  const egress = (dnsName: string | undefined): EgressEndpoint => ({
    entry: key,
    dnsName,
    hostOfVip,
    defaultHost,
  });
  const endpointOf = (address: string, named: Readonly<Record<string, number>> | undefined): EndpointInfo => {
    const targetPorts = new Map<number, number>();
    for (const p of ports.values()) {
      const n = p.name === undefined ? undefined : named?.[p.name];
      if (n !== undefined) targetPorts.set(p.port, n);
    }
    const ip = isIP(address) !== 0;
    return {
      ip: address,
      ips: [address],
      ready: true,
      targetPorts,
      workload: undefined,
      egress: egress(ip ? undefined : address),
    };
  };
  let endpoints: EndpointInfo[];
  const given = ext.endpoints ?? [];
  if (ext.resolution === 'STATIC') {
    endpoints = given.filter((e) => isIP(e.address) !== 0).map((e) => endpointOf(e.address, e.ports));
  } else if (ext.resolution === 'DNS' && given.length > 0) {
    endpoints = given.map((e) => endpointOf(e.address, e.ports));
  } else {
    // DNS without endpoints: the host the VIP stands for; NONE: the dialed address ('' either way,
    // settled per connection by egress/connect.ts from the authority).
    endpoints = [
      {
        // What the access log's upstream_host shows: the host (DNS), `-` (NONE).
        ip: ext.resolution === 'DNS' ? (defaultHost ?? ext.hosts[0]!) : '-',
        ips: [],
        ready: true,
        targetPorts: new Map(),
        workload: undefined,
        egress: egress(ext.resolution === 'DNS' ? '' : undefined),
      },
    ];
  }
  return {
    key,
    name: s.name,
    namespace: s.namespace,
    hostname: defaultHost ?? ext.hosts[0]!,
    vips: s.vips,
    ports,
    endpoints,
    external: { hosts: ext.hosts, resolution: ext.resolution },
  };
}
