// `hypha status`: what the node agent on this machine is doing, read from its admin endpoint
// (127.0.0.1:15000, localhost only): node, config version and object counts, local mesh pods with
// their certificates, capture state (and that UDP is not captured), live connections.
import type { Command } from 'commander';
import { UsageError } from '../errors.js';

interface StatusFlags {
  admin: string;
  json: boolean;
  timeout: string;
}

/** The parts of /config_dump this command reads (the agent sends more). */
interface ConfigDump {
  node?: string;
  version?: number;
  stats?: Record<string, number>;
  workloads?: {
    name: string;
    namespace: string;
    node: string;
    ips: string[];
    identity: string;
    inMesh: boolean;
    hostNetwork?: boolean;
    mtlsMode?: string;
  }[];
  certificates?: CertView[];
  capture?: { started?: boolean; table?: string; meshPods?: string[]; ports?: { dns?: number } } | null;
  /** REGISTRY_ONLY or ALLOW_ANY, and the ServiceEntries the agent holds (issue 16). */
  outboundTrafficPolicy?: string;
  serviceEntries?: unknown[];
}

interface CertView {
  identity: string;
  state: string;
  serial?: string;
  notAfter?: string;
  failures?: number;
  lastError?: string;
}

interface ConnectionView {
  id: number;
  direction: string;
  source: { address: string; workload?: string; identity?: string };
  destination: { address: string; workload?: string; identity?: string; service?: string };
  mutualTls: boolean;
  bytesSent: number;
  bytesReceived: number;
  durationMs: number;
}

export function register(program: Command): void {
  program
    .command('status')
    .description(
      "show the local node agent's state: config, pods and certificates, capture, live connections",
    )
    .option('--admin <host:port>', "the agent's admin endpoint", '127.0.0.1:15000')
    .option('--timeout <ms>', 'how long to wait for the agent', '3000')
    .option('--json', 'print the raw admin data as one JSON document', false)
    .addHelpText(
      'after',
      `
Reads GET /config_dump and /connections on the agent's admin port. The admin port listens on
localhost only: run this on the node (or inside the agent pod). Exit code 1 when the agent cannot
be reached. Capture covers TCP, and DNS (port 53) when the agent runs its DNS proxy (the default);
other UDP passes through without mTLS or policy (docs/capture.md).

Examples:
  hypha status
  hypha status --admin 127.0.0.1:15000 --json`,
    )
    .action(async (flags: StatusFlags) => {
      const base = adminBase(flags.admin);
      const timeoutMs = Number(flags.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
        throw new UsageError(`--timeout must be a positive number of milliseconds, got "${flags.timeout}"`);
      }
      const [dump, connections] = await Promise.all([
        fetchAdmin<ConfigDump>(base, '/config_dump', flags.admin, timeoutMs),
        fetchAdmin<ConnectionView[]>(base, '/connections', flags.admin, timeoutMs),
      ]);
      if (flags.json) {
        process.stdout.write(
          `${JSON.stringify({ admin: base, configDump: dump, connections, udp: udpHandling(dump) }, null, 2)}\n`,
        );
        return;
      }
      process.stdout.write(`${renderStatus(dump, connections, Date.now()).join('\n')}\n`);
    });
}

/** `host:port` → base URL; a usage error for anything else. */
export function adminBase(address: string): string {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (m === null || port < 1 || port > 65535) {
    throw new UsageError(`--admin "${address}" must be host:port, e.g. 127.0.0.1:15000`);
  }
  return `http://${m[1]}:${port}`;
}

async function fetchAdmin<T>(base: string, path: string, address: string, timeoutMs: number): Promise<T> {
  const hint = `is the agent running on this node? admin listens on ${address}`;
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why =
      e.name === 'TimeoutError'
        ? `no answer within ${timeoutMs} ms`
        : (e.cause?.code ?? e.cause?.message ?? e.message);
    throw new Error(`cannot reach the agent admin endpoint ${base} (${why}): ${hint}`);
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`agent admin ${path} answered ${res.status}: ${text.trim().slice(0, 200)}`);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`agent admin ${path} did not answer JSON (is ${address} a Hypha agent's admin port?)`);
  }
}

/**
 * What the mesh does with UDP (docs/capture.md, "UDP"): the capture rules match TCP only, so UDP
 * from and to mesh pods passes through untouched: no mTLS, no AuthorizationPolicy, no access log.
 * DNS (UDP/TCP port 53 → the agent's DNS proxy on 15053) is the exception when the agent runs its
 * DNS proxy (the default): `udpHandling(dump)`.
 */
export const UDP_HANDLING = {
  captured: false,
  mutualTls: false,
  policy: false,
  dnsCapture: false,
  summary: 'not captured (passes through without mTLS or policy; DNS capture not enabled)',
} as const;

/** UDP_HANDLING, or with the agent's DNS capture on (capture rules for port 53), saying so. */
export function udpHandling(dump: ConfigDump) {
  const dnsPort = dump.capture?.ports?.dns;
  if (dnsPort === undefined) return UDP_HANDLING;
  return {
    ...UDP_HANDLING,
    dnsCapture: true,
    summary: `not captured (passes through without mTLS or policy), except DNS: port 53 from mesh pods goes to the agent's DNS proxy on :${dnsPort}`,
  };
}

export function renderStatus(dump: ConfigDump, connections: ConnectionView[], now: number): string[] {
  const out: string[] = [];
  const s = dump.stats ?? {};
  out.push(`Node:     ${dump.node ?? '?'}`);
  out.push(
    `Config:   version ${dump.version ?? s.version ?? '?'}: ${s.namespaces ?? 0} namespaces, ${s.workloads ?? 0} workloads, ` +
      `${s.services ?? 0} services, ${s.authorizationPolicies ?? 0} authorization policies, ${s.waypoints ?? 0} waypoints`,
  );
  const cap = dump.capture;
  out.push(
    `Capture:  ${
      cap == null
        ? 'off (--capture none)'
        : cap.started
          ? `installed (nftables table inet ${cap.table ?? 'hypha'}), ${cap.meshPods?.length ?? 0} pod address(es) captured`
          : 'NOT installed (agent starting or stopping)'
    }`,
  );
  out.push(`UDP:      ${udpHandling(dump).summary}`);
  if (dump.outboundTrafficPolicy !== undefined) {
    const n = dump.serviceEntries?.length ?? 0;
    out.push(
      `Egress:   ${dump.outboundTrafficPolicy} for destinations outside the registry; ${n} ServiceEntr${n === 1 ? 'y' : 'ies'}`,
    );
  }
  out.push('');

  const certs = new Map((dump.certificates ?? []).map((c) => [c.identity, c]));
  const pods = (dump.workloads ?? [])
    .filter((w) => w.node === dump.node && w.inMesh && !w.hostNetwork)
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  out.push(`Local mesh pods (${pods.length})`);
  out.push(
    ...table(
      ['POD', 'IP', 'IDENTITY', 'MTLS', 'CERTIFICATE', 'EXPIRES'],
      pods.map((w) => {
        const c = certs.get(w.identity);
        return [
          `${w.namespace}/${w.name}`,
          w.ips.join(',') || '-',
          w.identity,
          w.mtlsMode ?? '-',
          c ? certState(c) : 'none',
          c?.notAfter ? expiry(c.notAfter, now) : '-',
        ];
      }),
    ),
  );
  out.push('');
  out.push(`Live connections (${connections.length})`);
  out.push(
    ...table(
      [
        'DIRECTION',
        'SOURCE',
        '',
        'DESTINATION',
        'SOURCE IDENTITY',
        'DESTINATION IDENTITY',
        'MTLS',
        'SENT',
        'RECEIVED',
        'AGE',
      ],
      [...connections]
        .sort((a, b) => b.durationMs - a.durationMs)
        .map((c) => [
          c.direction,
          c.source.workload ? `${c.source.workload} (${c.source.address})` : c.source.address,
          '→',
          c.destination.workload
            ? `${c.destination.workload} (${c.destination.address})`
            : c.destination.service
              ? `${c.destination.service} (${c.destination.address})`
              : c.destination.address,
          c.source.identity ?? '-',
          c.destination.identity ?? '-',
          c.mutualTls ? 'yes' : 'no',
          bytes(c.bytesSent),
          bytes(c.bytesReceived),
          age(c.durationMs),
        ]),
    ),
  );
  return out;
}

function certState(c: CertView): string {
  if ((c.state === 'backoff' || c.state === 'expired') && c.lastError)
    return `${c.state} (${c.failures ?? 0} failures: ${c.lastError})`;
  return c.state;
}

function expiry(notAfter: string, now: number): string {
  const ms = Date.parse(notAfter) - now;
  if (!Number.isFinite(ms)) return notAfter;
  return ms <= 0 ? `EXPIRED ${notAfter}` : `in ${age(ms)} (${notAfter})`;
}

function age(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function table(head: string[], rows: string[][]): string[] {
  if (rows.length === 0) return ['  (none)'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `  ${cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()}`;
  return [line(head), ...rows.map(line)];
}
