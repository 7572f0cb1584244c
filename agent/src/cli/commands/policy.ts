// `hypha policy explain`: the decision a connection or request would get, and which policy and rule
// took it.
//
// It loads the same YAML the agents read (same file source, same translation), turns the operator's
// words (`--from demo/client --to demo/echo:80`) into the request the destination agent would see
// (peer identity or none, source IP, destination pod, resolved target port), and asks the data
// path's own decision function (`decideInbound`, what `Inbound.admit` calls) for the verdict;
// `explainL4` adds one line per applicable policy. A Service fans out to its endpoints, each
// evaluated on its own pod with its own target port, as the agents would.
//
// A destination served by a waypoint is decided in two hops, as the traffic flows:
//
//   client ──► waypoint: L7 policy (evaluateL7, the waypoint's own engine) on the request
//              (--method/--path/--header/--host), or "depends on the request" without them
//          ──► endpoint pods: L4 policy, the peer being the waypoint's identity
import type { ConfigState, MtlsSetting, Service, WaypointLookup, Workload } from '@hypha/shared/config';
import type { SpiffeId } from '@hypha/shared/identity';
import type { L7Attributes, RequestAuth } from '@hypha/shared/policy';
import { type Command, Option } from 'commander';
import { decodeJwt } from 'jose';
import { UsageError } from '../errors.js';

/** Exit codes an operator can script against (documented in --help and docs/operations.md). */
export const EXPLAIN_EXIT = { allow: 0, error: 1, usage: 2, deny: 3, mixed: 4, depends: 5 } as const;

interface ExplainFlags {
  from?: string;
  fromIp?: string;
  plaintext: boolean;
  to?: string;
  config?: string;
  trustDomain: string;
  json: boolean;
  method?: string;
  path?: string;
  header?: string[];
  host?: string;
  jwt?: string;
}

/** The HTTP request named by --method/--path/--header/--host; host undefined = the destination's name. */
export interface ExplainRequest {
  method: string;
  path: string;
  host: string | undefined;
  headers: Record<string, string | string[]>;
  /** The --jwt token's claims, decoded without verifying (the waypoint verifies the signature). */
  auth: RequestAuth | undefined;
}

/** The waypoint hop of a waypoint-served destination. */
export interface ExplainWaypoint {
  /** `namespace/name` of the Gateway. */
  name: string;
  exists: boolean;
  identity: SpiffeId | undefined;
  /** The service (`ns/name`) or bound pod (`pod:<ip>`) the waypoint's policies are looked up for. */
  target: string;
  port: number;
  request: Required<ExplainRequest> | undefined;
  /** `ACTION ns/name` of every L7 policy that applies. */
  policies: string[];
  decision: 'allow' | 'deny' | 'depends';
  policy: string | undefined;
  rule: number | undefined;
  reason: string;
  /** What dry-run policies would have changed; `decision` is the enforced answer. */
  dryRun: ExplainDryRun | undefined;
  lines: string[];
}

/** "dry-run: policy X would deny (rules[N])": a dry-run policy that would change the decision. */
export interface ExplainDryRun {
  policy: string;
  would: 'allow' | 'deny';
  rule: number | undefined;
}

export interface ExplainSource {
  /** What the operator named, for display. */
  label: string;
  identity: SpiffeId | undefined;
  /** '' when unknown: then no ipBlocks rule can match it. */
  ip: string;
  workload: Workload | undefined;
  notes: string[];
}

export interface ExplainTarget {
  workload: Workload;
  ip: string;
  port: number;
  decision: 'allow' | 'deny';
  /** strict_mtls | deny_policy | no_allow_match | fail_closed, for denials. */
  kind: string | undefined;
  policy: string | undefined;
  rule: number | undefined;
  reason: string;
  dryRun: ExplainDryRun | undefined;
  /** The mTLS mode of the destination port and the rule that set it; undefined outside the mesh. */
  mtls: MtlsSetting | undefined;
  lines: string[];
}

export function register(program: Command): void {
  const policy = program.command('policy').description('inspect authorization decisions (L4 and L7)');
  policy
    .command('explain')
    .description(
      'show whether a connection (or, through a waypoint, an HTTP request) would be allowed, and which policy and rule decided it',
    )
    .option(
      '--from <source>',
      'source: <ns>/<pod>, <ns>/<service-account>, or a SPIFFE ID (spiffe://<td>/ns/<ns>/sa/<sa>)',
    )
    .option('--from-ip <ip>', 'source IP (for ipBlocks rules); alone, a plaintext source outside the mesh')
    .option(
      '--plaintext',
      'the connection arrives without mTLS (no peer identity), as from outside the mesh',
      false,
    )
    .option('--to <destination>', 'destination: <ns>/<pod>:<port> or <ns>/<service>:<service port>')
    .option('--config <path>', 'mesh config file or directory the agents read (default: $HYPHA_CONFIG)')
    .addOption(
      new Option('--trust-domain <domain>', 'SPIFFE trust domain')
        .env('HYPHA_TRUST_DOMAIN')
        .default('cluster.local'),
    )
    .option(
      '--method <method>',
      'HTTP method of the request, for a destination served by a waypoint (default GET)',
    )
    .option('--path <path>', 'HTTP path of the request, e.g. /admin (default /)')
    .option(
      '--header <name=value>',
      'request header, repeatable (e.g. --header x-user=alice)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option('--host <host>', "Host header of the request (default: the destination's DNS name)")
    .option(
      '--jwt <token>',
      'the request carries this JWT: its claims are decoded, not verified, for requestPrincipals and request.auth.* rules',
    )
    .option('--json', 'print JSON instead of text', false)
    .addHelpText(
      'after',
      `
The decision is the one the destination node agent takes, with the same code: STRICT mTLS refuses
plaintext before any policy; a pod behind a waypoint accepts only the waypoint's identity;
then any matching DENY (or an L4 policy that fails closed on L7
attributes) denies; with no ALLOW policy the connection is allowed; else an ALLOW rule must match.
A pod source outside the mesh connects in plaintext (no identity). A Service destination is
evaluated on each endpoint pod at its resolved target port. Names are looked up as a pod first,
then as a service account (--from) or a Service (--to).

A destination served by a waypoint (label hypha.dev/use-waypoint on the Service, its namespace or
the pod) is decided first by the waypoint's L7 policies (targetRefs), on the request given by
--method, --path, --header, --host and --jwt; then each endpoint pod's L4 policies see the waypoint's
identity. Without those flags the L7 policies that apply are listed, and if they read the
request the answer is "depends" (exit 5). --jwt TOKEN: the request carries a token whose claims
(iss/sub for requestPrincipals, request.auth.claims[...]) the policies read; the claims are decoded
without checking the signature or expiry (the waypoint's RequestAuthentication does that, and
refuses an invalid token with 401 before any policy).

Exit codes (for scripts):
  0  allowed (every endpoint, for a Service)
  3  denied (every endpoint, or by the waypoint's L7 policy)
  4  mixed: some endpoints of the Service allow it, others deny it
  5  depends on the HTTP request: give --method/--path/--header/--host/--jwt
  1  error (config not found, unknown destination, Service without endpoints)
  2  usage error

Examples:
  hypha policy explain --config mesh.yaml --from demo/client --to demo/echo:80
  hypha policy explain --from demo/client --to demo/echo-v1:8080 --json       (HYPHA_CONFIG=file:mesh.yaml)
  hypha policy explain --from outside/plain --to demo/echo:80                 (a pod outside the mesh)
  hypha policy explain --from-ip 10.0.0.7 --to demo/echo-v2:8080              (plaintext from an address)
  hypha policy explain --from demo/client --from-ip fd00::a --to demo/echo:80  (the client's IPv6 address)
  hypha policy explain --from demo/client --to demo/echo:80 --method DELETE --path /admin/users \\
      --header x-confirm=yes                                                    (through a waypoint)
  hypha policy explain --from demo/client --to demo/echo:80 --jwt "$TOKEN"     (a request with a JWT)`,
    )
    .action(async (flags: ExplainFlags) => {
      const path = configPath(flags.config, process.env.HYPHA_CONFIG);
      if (flags.to === undefined) throw new UsageError('--to <ns>/<pod-or-service>:<port> is required');
      if (flags.from === undefined && flags.fromIp === undefined) {
        throw new UsageError('--from <ns>/<pod-or-service-account> (or --from-ip <ip>) is required');
      }
      const to = parseTo(flags.to);
      const { canonicalIp, createFileSource } = await import('@hypha/shared/config');
      let fromIp: string | undefined;
      if (flags.fromIp !== undefined) {
        fromIp = canonicalIp(flags.fromIp);
        if (fromIp === undefined) throw new UsageError(`--from-ip "${flags.fromIp}" is not an IP address`);
      }
      if (flags.from !== undefined) parseFrom(flags.from); // usage errors before reading any file
      const request = parseRequest(flags);

      const source = createFileSource({ path, trustDomain: flags.trustDomain, watch: false });
      try {
        await source.start();
      } catch (err) {
        const why =
          (err as { code?: string }).code === 'PATH_NOT_FOUND'
            ? 'no such file or directory (pass the YAML file or directory the agents read)'
            : (err as Error).message;
        throw new Error(`cannot read the mesh config ${path}: ${why}`);
      } finally {
        await source.close();
      }
      for (const e of source.errors) process.stderr.write(`hypha: warning: config: ${e.message}\n`);
      const state = source.state;

      const from = await resolveSource(state, flags, fromIp);
      const { header, subject, targets, waypointOf } = resolveTargets(state, to);
      if (request !== undefined && waypointOf === undefined) {
        throw new UsageError(
          `--method, --path, --header, --host and --jwt need a destination served by a waypoint, and ${subject} is not ` +
            '(label the Service, its namespace or the pod hypha.dev/use-waypoint=<waypoint>): node agents never see HTTP requests',
        );
      }
      const waypoint =
        waypointOf === undefined ? undefined : await explainWaypoint(state, from, waypointOf, request);
      // Through a waypoint, the endpoint pods see the waypoint's identity, not the client's.
      const peer: ExplainSource =
        waypoint?.identity === undefined
          ? from
          : {
              label: `waypoint ${waypoint.name}`,
              identity: waypoint.identity,
              ip: waypointOf?.ip ?? '',
              workload: undefined,
              notes: [],
            };
      const evaluated = await Promise.all(
        targets.map((t) => evaluate(state, peer, t.workload, t.ip, t.port)),
      );
      const allows = evaluated.filter((t) => t.decision === 'allow').length;
      const l4 = allows === evaluated.length ? 'allow' : allows === 0 ? 'deny' : 'mixed';
      const decision =
        waypoint?.decision === 'deny' || l4 === 'deny'
          ? 'deny'
          : waypoint?.decision === 'depends'
            ? 'depends'
            : l4;

      if (flags.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              decision,
              from: {
                label: from.label,
                identity: from.identity?.toString() ?? null,
                ip: from.ip || null,
                workload: from.workload ? `${from.workload.namespace}/${from.workload.name}` : null,
                mutualTls: from.identity !== undefined,
                notes: from.notes,
              },
              to: { label: flags.to, description: header },
              waypoint:
                waypoint === undefined
                  ? null
                  : {
                      name: waypoint.name,
                      exists: waypoint.exists,
                      identity: waypoint.identity?.toString() ?? null,
                      target: waypoint.target,
                      port: waypoint.port,
                      request: waypoint.request ?? null,
                      policies: waypoint.policies,
                      decision: waypoint.decision,
                      policy: waypoint.policy ?? null,
                      rule: waypoint.rule ?? null,
                      reason: waypoint.reason,
                      dryRun: waypoint.dryRun ?? null,
                      lines: waypoint.lines,
                    },
              targets: evaluated.map((t) => ({
                workload: `${t.workload.namespace}/${t.workload.name}`,
                node: t.workload.node,
                ip: t.ip,
                port: t.port,
                inMesh: t.workload.inMesh,
                mtlsMode: t.workload.mtlsMode,
                mtls: t.mtls ?? null,
                decision: t.decision,
                kind: t.kind ?? null,
                policy: t.policy ?? null,
                rule: t.rule ?? null,
                reason: t.reason,
                dryRun: t.dryRun ?? null,
                lines: t.lines,
              })),
            },
            null,
            2,
          )}\n`,
        );
      } else {
        const out: string[] = [];
        const who = from.identity ? `identity ${from.identity.toString()} (mTLS)` : 'no identity (plaintext)';
        out.push(`from: ${from.label}  ${who}  ip ${from.ip || 'unknown'}`);
        for (const n of from.notes) out.push(`      ${n}`);
        out.push(`to:   ${header}`);
        if (waypoint !== undefined) {
          out.push('');
          out.push(`waypoint ${waypoint.name} (L7): ${waypoint.decision.toUpperCase()}`);
          for (const l of waypoint.lines) out.push(`  ${l}`);
          if (waypoint.identity !== undefined) {
            out.push('');
            out.push(`endpoints (L4), as the waypoint ${waypoint.identity.toString()} connects to them:`);
          }
        }
        for (const t of evaluated) {
          out.push('');
          out.push(
            `${t.workload.namespace}/${t.workload.name} ${t.ip.includes(':') ? `[${t.ip}]` : t.ip}:${t.port} (node ${t.workload.node}): ${t.decision.toUpperCase()}`,
          );
          for (const l of t.lines) out.push(`  ${l}`);
        }
        out.push('');
        out.push(`result: ${decision.toUpperCase()}`);
        process.stdout.write(`${out.join('\n')}\n`);
      }
      process.exitCode = EXPLAIN_EXIT[decision];
    });
}

/** `--config PATH` (or `file:PATH`), else `$HYPHA_CONFIG` when it names a file source. */
export function configPath(flag: string | undefined, env: string | undefined): string {
  const raw = flag ?? env;
  if (raw === undefined || raw === '') {
    throw new UsageError(
      '--config <path> is required (the mesh YAML the agents read), or set HYPHA_CONFIG=file:<path>',
    );
  }
  if (raw === 'kubernetes' || raw.startsWith('kubernetes:')) {
    throw new UsageError(
      `${flag !== undefined ? '--config' : 'HYPHA_CONFIG'} is "${raw}": policy explain reads a config file; pass --config <path>`,
    );
  }
  const path = raw.startsWith('file:') ? raw.slice('file:'.length) : raw;
  if (path === '')
    throw new UsageError('--config file: needs a path, e.g. --config file:/etc/hypha/mesh.yaml');
  return path;
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** `<ns>/<name>` or a SPIFFE ID. */
export function parseFrom(value: string): { spiffe: string } | { namespace: string; name: string } {
  if (value.startsWith('spiffe://')) return { spiffe: value };
  const parts = value.split('/');
  if (parts.length !== 2 || !NAME.test(parts[0]!) || !NAME.test(parts[1]!)) {
    throw new UsageError(
      `--from "${value}" must be <namespace>/<pod or service account> (e.g. demo/client) or a SPIFFE ID`,
    );
  }
  return { namespace: parts[0]!, name: parts[1]! };
}

/** `<ns>/<name>:<port>`. */
export function parseTo(value: string): { namespace: string; name: string; port: number } {
  const m = /^([^/:]+)\/([^/:]+):(\d{1,5})$/.exec(value);
  if (m === null || !NAME.test(m[1]!) || !NAME.test(m[2]!)) {
    throw new UsageError(`--to "${value}" must be <namespace>/<pod or service>:<port> (e.g. demo/echo:80)`);
  }
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new UsageError(`--to port must be 1-65535, got ${m[3]}`);
  return { namespace: m[1]!, name: m[2]!, port };
}

async function resolveSource(
  state: ConfigState,
  flags: ExplainFlags,
  fromIp: string | undefined,
): Promise<ExplainSource> {
  const { parseSpiffeId, SpiffeId } = await import('@hypha/shared/identity');
  const notes: string[] = [];
  if (flags.from === undefined) {
    // Only an address: a client outside the mesh (or a mesh pod seen as plaintext).
    const w = state.findWorkloadByIp(fromIp!);
    if (w !== undefined) notes.push(`${fromIp} is pod ${w.namespace}/${w.name}`);
    notes.push('a source given only by IP connects in plaintext (no peer identity)');
    return { label: fromIp!, identity: undefined, ip: fromIp!, workload: w, notes };
  }
  const parsed = parseFrom(flags.from);
  let identity: SpiffeId | undefined;
  let workload: Workload | undefined;
  let ip = fromIp ?? '';
  if ('spiffe' in parsed) {
    try {
      identity = parseSpiffeId(parsed.spiffe);
    } catch (err) {
      throw new UsageError(`--from: ${(err as Error).message}`);
    }
  } else {
    workload = state.findWorkloadByName(parsed.namespace, parsed.name);
    if (workload !== undefined) {
      identity = workload.identity;
      if (fromIp === undefined) ip = workload.ips[0] ?? '';
      notes.push(`pod ${parsed.namespace}/${parsed.name} runs as service account ${workload.serviceAccount}`);
      if (fromIp === undefined && workload.ips.length > 1) {
        // Dual-stack: ipBlocks rules may treat the pod's addresses differently.
        notes.push(
          `the pod also has ${workload.ips.slice(1).join(', ')}; evaluated from ${ip} (add --from-ip to choose)`,
        );
      }
      if (!workload.inMesh) {
        // Its node agent does not capture it: its connections reach the destination as plaintext.
        identity = undefined;
        notes.push(
          `${parsed.namespace}/${parsed.name} is not in the mesh: it connects in plaintext (no peer identity)`,
        );
      }
    } else {
      try {
        identity = SpiffeId.of(flags.trustDomain, parsed.namespace, parsed.name);
      } catch (err) {
        throw new UsageError(`--from: ${(err as Error).message}`);
      }
      notes.push(`no pod ${parsed.namespace}/${parsed.name}: taken as service account ${parsed.name}`);
    }
  }
  if (flags.plaintext && identity !== undefined) {
    identity = undefined;
    notes.push('--plaintext: evaluated without a peer identity');
  }
  if (ip === '') notes.push('source IP unknown (give --from-ip): no ipBlocks rule can match it');
  return { label: flags.from, identity, ip, workload, notes };
}

/** Where a waypoint-served destination meets its waypoint. */
interface WaypointHop {
  lookup: WaypointLookup;
  /** Key of the waypoint's policy set: `ns/service`, or `pod:<ip>` for a pod bound itself. */
  target: string;
  port: number;
  /** The Host header a client would send by default. */
  host: string;
  /** A waypoint pod's address: the source the endpoints see ('' when none runs). */
  ip: string;
}

function resolveTargets(
  state: ConfigState,
  to: { namespace: string; name: string; port: number },
): {
  header: string;
  subject: string;
  targets: { workload: Workload; ip: string; port: number }[];
  waypointOf: WaypointHop | undefined;
} {
  const hop = (lookup: WaypointLookup | undefined, target: string, host: string) => {
    if (lookup === undefined) return undefined;
    const ip = lookup.waypoint ? (state.findWaypointWorkloads(lookup.ref)[0]?.ips[0] ?? '') : '';
    return { lookup, target, port: to.port, host, ip };
  };
  const pod = state.findWorkloadByName(to.namespace, to.name);
  if (pod !== undefined) {
    const ip = pod.ips[0] ?? '';
    return {
      header: `pod ${to.namespace}/${to.name} port ${to.port}`,
      subject: `pod ${to.namespace}/${to.name}`,
      targets: [{ workload: pod, ip, port: to.port }],
      waypointOf: hop(
        state.findWaypointFor(pod),
        `pod:${ip}`,
        ip.includes(':') ? `[${ip}]:${to.port}` : `${ip}:${to.port}`,
      ),
    };
  }
  const svc: Service | undefined = state.findServiceByName(to.namespace, to.name);
  if (svc === undefined) {
    throw new Error(`no pod or service ${to.namespace}/${to.name} in the mesh config`);
  }
  const sp = svc.ports.find((p) => p.port === to.port);
  if (sp === undefined) {
    const ports = svc.ports.map((p) => p.port).join(', ') || 'none';
    throw new Error(`service ${to.namespace}/${to.name} has no port ${to.port} (ports: ${ports})`);
  }
  const targets: { workload: Workload; ip: string; port: number }[] = [];
  for (const ep of svc.endpoints) {
    const w = ep.workloadUid !== undefined ? state.findWorkloadByUid(ep.workloadUid) : undefined;
    const port = ep.targetPorts.get(to.port);
    if (w === undefined || port === undefined) continue;
    targets.push({ workload: w, ip: ep.ip, port });
  }
  if (targets.length === 0) {
    throw new Error(
      `service ${to.namespace}/${to.name} has no endpoint pods for port ${to.port}: nothing would receive the connection`,
    );
  }
  return {
    header: `service ${to.namespace}/${to.name} port ${to.port} → ${targets.length} endpoint${targets.length === 1 ? '' : 's'}`,
    subject: `service ${to.namespace}/${to.name}`,
    targets,
    waypointOf: hop(
      state.findWaypointFor(svc),
      `${to.namespace}/${to.name}`,
      `${to.name}.${to.namespace}.svc.cluster.local`,
    ),
  };
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;

/** The HTTP request of --method/--path/--header/--host; undefined when none is given. */
export function parseRequest(
  flags: Pick<ExplainFlags, 'method' | 'path' | 'header' | 'host' | 'jwt'>,
): ExplainRequest | undefined {
  const { method = 'GET', path = '/', header = [], host } = flags;
  if (
    flags.method === undefined &&
    flags.path === undefined &&
    flags.header === undefined &&
    host === undefined &&
    flags.jwt === undefined
  )
    return undefined;
  if (!/^[A-Z]+$/.test(method)) {
    throw new UsageError(
      `--method "${method}" must be an HTTP method in capitals, e.g. GET or POST (policies match methods exactly)`,
    );
  }
  if (!path.startsWith('/') || /\s/.test(path)) {
    throw new UsageError(`--path "${path}" must start with "/" and hold no spaces, e.g. --path /admin`);
  }
  const headers: Record<string, string | string[]> = {};
  for (const h of header) {
    const eq = h.indexOf('=');
    const name = h.slice(0, Math.max(eq, 0)).toLowerCase();
    if (eq <= 0 || !HEADER_NAME.test(name)) {
      throw new UsageError(
        `--header "${h}" must be <name>=<value> with a header name before "=", e.g. --header x-user=alice`,
      );
    }
    if (name === 'host') throw new UsageError('--header host=...: give the Host header with --host <host>');
    const value = h.slice(eq + 1);
    const prev = headers[name];
    headers[name] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [prev]), value];
  }
  if (host !== undefined && (host === '' || /[\s/]/.test(host))) {
    throw new UsageError(
      `--host "${host}" must be a host name, optionally with a port, e.g. --host echo.demo.svc.cluster.local`,
    );
  }
  return { method, path, host, headers, auth: flags.jwt === undefined ? undefined : decodeToken(flags.jwt) };
}

/** The claims of --jwt, decoded WITHOUT verifying the signature (say so wherever they are shown). */
function decodeToken(token: string): RequestAuth {
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(token.replace(/^Bearer\s+/i, ''));
  } catch (err) {
    throw new UsageError(`--jwt: not a JWT (header.payload.signature, base64url): ${(err as Error).message}`);
  }
  const aud = claims.aud === undefined ? [] : Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  return {
    principal: `${claims.iss ?? ''}/${claims.sub ?? ''}`,
    audiences: aud,
    presenter: typeof claims.azp === 'string' ? claims.azp : '',
    claims,
  };
}

/** The waypoint hop: which L7 policies apply to the destination, and their decision on the request. */
async function explainWaypoint(
  state: ConfigState,
  from: ExplainSource,
  hop: WaypointHop,
  given: ExplainRequest | undefined,
): Promise<ExplainWaypoint> {
  const { ConfigError } = await import('@hypha/shared/config');
  const { bindWaypointPolicy, dependsOnRequest, explainL7, indexL7Policies } = await import(
    '@hypha/shared/policy'
  );
  const name = `${hop.lookup.ref.namespace}/${hop.lookup.ref.name}`;
  const request = given === undefined ? undefined : { ...given, host: given.host ?? hop.host };
  const base = {
    name,
    exists: hop.lookup.waypoint !== undefined,
    identity: hop.lookup.waypoint?.identity,
    target: hop.target,
    port: hop.port,
    request,
    rule: undefined,
    dryRun: undefined,
  };
  if (hop.lookup.waypoint === undefined) {
    const reason = `${hop.target} is bound to waypoint ${name}, which does not exist: refused (fail closed)`;
    return {
      ...base,
      policies: [],
      decision: 'deny',
      policy: undefined,
      reason,
      lines: [`decision: DENY: ${reason}`],
    };
  }
  const bound = [];
  for (const p of state.authorizationPolicies()) {
    if (p.enforcedByAgent) continue;
    try {
      bound.push(bindWaypointPolicy(p, hop.lookup.ref));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`hypha: warning: ${err.message} (the waypoint skips this policy)\n`);
    }
  }
  const set = indexL7Policies(bound, [hop.target]).get(hop.target)!;
  const all = set.shadow ?? set;
  const policies = [...all.deny, ...all.allow, ...set.audit].map(
    (p) => `${p.action} ${p.key}${p.dryRun ? ' (dry-run)' : ''}`,
  );
  const who = from.identity?.principal ?? `${from.ip || 'an unknown address'} (no identity)`;
  if (request === undefined && dependsOnRequest(set)) {
    const reason = `the answer depends on the HTTP request (L7 policies apply: ${policies.join(', ')})`;
    return {
      ...base,
      policies,
      decision: 'depends',
      policy: undefined,
      reason,
      lines: [
        `from ${who} to ${hop.target} port ${hop.port}`,
        `  L7 policies that apply: ${policies.join(', ')}`,
        '  their rules read the HTTP request: give --method, --path, --header <name>=<value>, --host or --jwt',
        'decision: DEPENDS: the answer depends on the HTTP request',
      ],
    };
  }
  const attributes: L7Attributes = {
    principal: from.identity?.principal,
    sourceNamespace: from.identity?.namespace,
    sourceIp: from.ip,
    port: hop.port,
    request,
    auth: request?.auth,
  };
  const ex = explainL7(set, attributes);
  const what =
    request === undefined
      ? 'any request (no L7 rule reads the request)'
      : `request ${request.method} ${request.path} host ${request.host}${Object.entries(request.headers)
          .map(([k, v]) => ` ${k}=${Array.isArray(v) ? v.join(',') : v}`)
          .join('')}`;
  return {
    ...base,
    policies,
    decision: ex.decision.allowed ? 'allow' : 'deny',
    policy: ex.decision.policy,
    rule: ex.decision.rule,
    reason: ex.reason,
    dryRun: ex.decision.dryRun === undefined ? undefined : { ...ex.decision.dryRun },
    lines: [
      `${what} from ${who} to ${hop.target} port ${hop.port}`,
      ...(request?.auth === undefined
        ? []
        : [
            `  token: request principal ${request.auth.principal} (claims decoded, NOT verified: the waypoint checks signature, expiry, issuer and audience, and answers 401 to an invalid token)`,
          ]),
      ...ex.lines,
    ],
  };
}

async function evaluate(
  state: ConfigState,
  from: ExplainSource,
  workload: Workload,
  ip: string,
  port: number,
): Promise<ExplainTarget> {
  const { decideInbound } = await import('../../agent/inbound.js');
  const { explainL4 } = await import('@hypha/shared/policy');
  const { mtlsFor } = await import('@hypha/shared/config');
  const base = { workload, ip, port, rule: undefined, dryRun: undefined, mtls: undefined };
  if (!workload.inMesh) {
    const reason = `${workload.namespace}/${workload.name} is not in the mesh: no agent enforces policy there, connections pass as plain TCP`;
    return { ...base, decision: 'allow', kind: undefined, policy: undefined, reason, lines: [reason] };
  }
  const { WaypointGuard } = await import('../../agent/waypoint-guard.js');
  const guard = new WaypointGuard();
  guard.rebuild(state);
  const verdict = decideInbound(state, workload, { port, peer: from.identity, sourceIp: from.ip }, guard);
  const dry = verdict.decision?.dryRun;
  const dryRun: ExplainDryRun | undefined =
    dry === undefined
      ? undefined
      : { policy: `${dry.policy.namespace}/${dry.policy.name}`, would: dry.would, rule: dry.rule };
  const mtls = mtlsFor(workload, port);
  const mtlsLine = `  mTLS: port ${port} is ${mtls.mode.toUpperCase()} (${mtls.rule}): ${
    from.identity !== undefined
      ? 'this connection uses mTLS'
      : mtls.mode === 'strict'
        ? 'plaintext is refused before any policy'
        : 'plaintext is accepted and policy decides'
  }`;
  const lines: string[] = [];
  if (verdict.decision !== undefined) {
    // explainL4 runs the same evaluator over the same policies, adding a line per policy.
    const ex = explainL4(state.findPoliciesFor(workload), {
      source: { identity: from.identity, ip: from.ip },
      destination: { workload, port },
    });
    lines.push(ex.lines[0]!, mtlsLine, ...ex.lines.slice(1));
  } else if (!verdict.ok) {
    const who = from.identity?.principal ?? `${from.ip || 'an unknown address'} (no identity)`;
    lines.push(
      `connection from ${who} to ${workload.namespace}/${workload.name} port ${port}`,
      mtlsLine,
      ...(verdict.kind === 'strict_mtls'
        ? []
        : [
            '  the pod is behind a waypoint: its agent admits only the waypoint identity, before any L4 policy',
          ]),
      `decision: DENY: ${verdict.reason}`,
    );
  }
  if (verdict.ok) {
    return {
      ...base,
      decision: 'allow',
      kind: undefined,
      policy: verdict.decision.policy
        ? `${verdict.decision.policy.namespace}/${verdict.decision.policy.name}`
        : undefined,
      rule: verdict.decision.rule,
      reason: verdict.decision.reason,
      dryRun,
      mtls,
      lines,
    };
  }
  return {
    ...base,
    decision: 'deny',
    kind: verdict.kind,
    policy: verdict.policy,
    rule: verdict.decision?.rule,
    reason: verdict.reason,
    dryRun,
    mtls,
    lines,
  };
}
