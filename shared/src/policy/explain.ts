// `hypha policy explain`: which L4 decision a connection would get, worked out from the config
// state with the data path's evaluator. Turns the operator's words (`--from demo/client`,
// `--to demo/echo:80`) into the same request the destination agent would evaluate, one per
// destination pod (a Service fans out to its endpoints, each with its resolved target port).

import { canonicalIp } from '../config/ip.js';
import type { ConfigState } from '../config/state.js';
import type { Workload } from '../config/types.js';
import { parseSpiffeId, SpiffeId } from '../identity/spiffe.js';
import { explainL4, type L4Explanation, type L4Request } from './evaluate.js';

export type ExplainErrorCode = 'BAD_SOURCE' | 'BAD_DESTINATION' | 'UNKNOWN_DESTINATION' | 'UNKNOWN_PORT';

export class ExplainError extends Error {
  readonly code: ExplainErrorCode;
  constructor(code: ExplainErrorCode, message: string) {
    super(message);
    this.name = 'ExplainError';
    this.code = code;
  }
}

export interface ExplainConnectionInput {
  /** `<ns>/<pod>`, `<ns>/<service-account>`, a SPIFFE ID, or an IP address (a plaintext peer). */
  from: string;
  /** `<ns>/<pod or service>:<port>`; for a Service the port is the service port. */
  to: string;
}

export interface ExplainedTarget {
  readonly workload: Workload;
  /** The target port on the pod (what policies match). */
  readonly port: number;
  /** Set when the data path would decide without policies (not in mesh, STRICT plaintext). */
  readonly note: string | undefined;
  readonly decision: 'allow' | 'deny';
  readonly explanation: L4Explanation | undefined;
}

export interface ConnectionExplanation {
  readonly source: L4Request['source'];
  readonly targets: readonly ExplainedTarget[];
  /** `mixed` when endpoints of one Service get different decisions; `none` when there are no endpoints. */
  readonly decision: 'allow' | 'deny' | 'mixed' | 'none';
  readonly lines: readonly string[];
}

export function explainConnection(state: ConfigState, input: ExplainConnectionInput): ConnectionExplanation {
  const lines: string[] = [];
  const source = resolveSource(state, input.from, lines);
  const { targets: dests, header } = resolveDestination(state, input.to);
  lines.push(header);
  const targets: ExplainedTarget[] = [];
  for (const { workload, port } of dests) {
    const request: L4Request = { source, destination: { workload, port } };
    let note: string | undefined;
    if (!workload.inMesh) {
      note = `${workload.namespace}/${workload.name} is not in the mesh: no agent captures its traffic, policies are not enforced`;
    } else if (source.identity === undefined && workload.mtlsMode === 'strict') {
      note = `namespace ${workload.namespace} is STRICT: plaintext (no peer identity) is refused before policy`;
    }
    if (note !== undefined) {
      const decision = workload.inMesh ? 'deny' : 'allow';
      targets.push({ workload, port, note, decision, explanation: undefined });
      lines.push(`${workload.namespace}/${workload.name} port ${port}: ${decision.toUpperCase()}: ${note}`);
      continue;
    }
    const explanation = explainL4(state.findPoliciesFor(workload), request, {
      rootNamespace: state.rootNamespace,
    });
    targets.push({ workload, port, note: undefined, decision: explanation.decision.decision, explanation });
    lines.push(...explanation.lines);
  }
  const decisions = new Set(targets.map((t) => t.decision));
  const decision = decisions.size === 0 ? 'none' : decisions.size > 1 ? 'mixed' : [...decisions][0]!;
  if (decision === 'none') lines.push('no ready endpoint serves that port: nothing to evaluate');
  if (decision === 'mixed')
    lines.push('endpoints disagree: the decision depends on which pod the connection reaches');
  return { source, targets, decision, lines };
}

function resolveSource(state: ConfigState, from: string, lines: string[]): L4Request['source'] {
  const ip = canonicalIp(from);
  if (ip !== undefined) {
    const w = state.findWorkloadByIp(ip);
    lines.push(`source ${ip}${w ? ` (${w.namespace}/${w.name})` : ''}: plaintext, no peer identity`);
    return { ip, identity: undefined };
  }
  if (from.startsWith('spiffe://')) {
    let identity: SpiffeId;
    try {
      identity = parseSpiffeId(from);
    } catch (err) {
      throw new ExplainError('BAD_SOURCE', `--from: ${(err as Error).message}`);
    }
    lines.push(`source ${identity.toString()} (source IP unknown: ipBlocks rules cannot match)`);
    return { identity, ip: '' };
  }
  const parts = from.split('/');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
    throw new ExplainError(
      'BAD_SOURCE',
      `--from "${from}": expected <namespace>/<pod or service account>, a spiffe:// ID, or an IP address`,
    );
  }
  const [ns, name] = parts as [string, string];
  const pod = state.findWorkloadByName(ns, name);
  if (pod !== undefined) {
    const ip = pod.ips[0] ?? '';
    // A pod outside the mesh has no certificate: its connections arrive as plaintext.
    if (!pod.inMesh) {
      lines.push(`source pod ${ns}/${name} (${ip}) is not in the mesh: plaintext, no peer identity`);
      return { ip, identity: undefined };
    }
    lines.push(`source pod ${ns}/${name} (${ip}) as ${pod.identity.toString()}`);
    return { ip, identity: pod.identity };
  }
  let identity: SpiffeId;
  try {
    identity = SpiffeId.of(state.trustDomain, ns, name);
  } catch (err) {
    throw new ExplainError('BAD_SOURCE', `--from "${from}": ${(err as Error).message}`);
  }
  lines.push(`source service account ${identity.toString()} (no pod ${ns}/${name}; source IP unknown)`);
  return { identity, ip: '' };
}

function resolveDestination(
  state: ConfigState,
  to: string,
): { targets: { workload: Workload; port: number }[]; header: string } {
  const m = /^([^/]+)\/([^/:]+):(\d{1,5})$/.exec(to);
  if (m === null) {
    throw new ExplainError('BAD_DESTINATION', `--to "${to}": expected <namespace>/<pod or service>:<port>`);
  }
  const [, ns, name, portText] = m as unknown as [string, string, string, string];
  const port = Number(portText);
  const service = state.findServiceByName(ns, name);
  if (service !== undefined) {
    if (!service.ports.some((p) => p.port === port)) {
      throw new ExplainError(
        'UNKNOWN_PORT',
        `--to: Service ${ns}/${name} has no port ${port} (ports: ${service.ports.map((p) => p.port).join(', ') || 'none'})`,
      );
    }
    const targets: { workload: Workload; port: number }[] = [];
    for (const e of service.endpoints) {
      const target = e.targetPorts.get(port);
      const workload = e.workloadUid === undefined ? undefined : state.findWorkloadByUid(e.workloadUid);
      if (target === undefined || workload === undefined || !e.ready) continue;
      targets.push({ workload, port: target });
    }
    let header = `destination Service ${ns}/${name}:${port} → ${targets.length} endpoint(s)`;
    const wp = state.findWaypointFor(service);
    if (wp !== undefined) {
      header += `; bound to waypoint ${wp.ref.namespace}/${wp.ref.name}${wp.waypoint ? '' : ' (missing: traffic fails closed)'}, which enforces targetRefs (L7) policies and is the only client the pods accept for this service`;
    }
    return { targets, header };
  }
  const workload = state.findWorkloadByName(ns, name);
  if (workload === undefined) {
    throw new ExplainError('UNKNOWN_DESTINATION', `--to: no Service or pod named ${ns}/${name}`);
  }
  return { targets: [{ workload, port }], header: `destination pod ${ns}/${name} port ${port}` };
}
