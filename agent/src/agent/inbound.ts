// Inbound: traffic arriving for a local mesh pod, by HBONE (15008), by plaintext capture (15006),
// or handed over in-process by outbound when source and destination share this node.
//
//   HBONE stream ─┐
//   plaintext ────┼─► admit(): destination is a local mesh pod? authority matches? mTLS mode?
//   same-node ────┘            waypoint-only? L4 policy ─► connectToPod() ─► copy bytes
//
// Invariants:
// - One decision function (admit) serves all three entries, so a policy means the same thing
//   whichever way the bytes came in, and `hypha policy explain` can call the same evaluator.
// - The source IP we connect from is the client's only when the client's identity vouches for
//   it (the forwarded IP belongs to a workload with the peer's identity); otherwise we connect
//   from the node's own address. A peer cannot spoof another pod's IP into our pods' logs or
//   ipBlocks rules.
import net, { type Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import { type ConfigState, mtlsFor, type Workload } from '@hypha/shared/config';
import {
  copyBidirectional,
  createByteCounters,
  type HboneRequest,
  type HboneResponse,
} from '@hypha/shared/hbone';
import type { SpiffeId } from '@hypha/shared/identity';
import { evaluateL4, type L4Decision } from '@hypha/shared/policy';
import { connectTransparent } from '../native/index.js';
import type { ConnectionStart, ConnectionTracker } from './connections.js';
import type { DenyKind, PolicyMetrics } from './policy-metrics.js';
import type { WaypointGuard } from './waypoint-guard.js';

export interface InboundOptions {
  state: ConfigState;
  nodeName: string;
  tracker: ConnectionTracker;
  waypointGuard: WaypointGuard;
  logger: Logger;
  /** Connect to pods from the client's IP (needs capture's policy routing and CAP_NET_ADMIN). */
  transparent: boolean;
  connectTimeoutMs?: number;
  /** Denial and AUDIT counters (optional so unit tests can leave them out). */
  policyMetrics?: PolicyMetrics;
  /** True for an identity on the CA's revocation list: refused here too, not only at handshakes. */
  isIdentityRevoked?: (id: SpiffeId) => boolean;
}

export type Admission =
  | { ok: true; workload: Workload; port: number; decision: L4Decision }
  | {
      ok: false;
      status: 400 | 401 | 503;
      flag: string;
      reason: string;
      workload?: Workload;
      policy?: string | undefined;
      /** Set for policy and mTLS-mode refusals. */
      kind?: DenyKind;
    };

/** What an inbound connection's policy check concluded; see decideInbound. */
export type InboundVerdict =
  | { ok: true; decision: L4Decision }
  | {
      ok: false;
      kind: DenyKind;
      reason: string;
      /** `namespace/name` of the deciding policy, when one policy decided. */
      policy: string | undefined;
      /** Absent when the mTLS mode refused before any policy was evaluated. */
      decision: L4Decision | undefined;
    };

/**
 * The policy half of admission, pure (no logging, no metrics): mTLS mode, then waypoint-only
 * (pods behind a waypoint accept only the waypoint's identity; a missing waypoint refuses all),
 * then L4 authorization. `Inbound.admit` and `hypha policy explain` both call it, so they cannot
 * disagree.
 */
export function decideInbound(
  state: ConfigState,
  workload: Workload,
  req: { port: number; peer: SpiffeId | undefined; sourceIp: string },
  guard: WaypointGuard | undefined,
): InboundVerdict {
  if (req.peer === undefined) {
    const mtls = mtlsFor(workload, req.port);
    if (mtls.mode === 'strict') {
      return {
        ok: false,
        kind: 'strict_mtls',
        reason: `plaintext refused: port ${req.port} of ${workload.namespace}/${workload.name} requires mTLS (STRICT, set by ${mtls.rule})`,
        policy: undefined,
        decision: undefined,
      };
    }
  }
  const bound = guard?.find(workload.uid);
  if (bound !== undefined && (req.peer === undefined || !bound.allowed.has(req.peer.toString()))) {
    const via = bound.waypoints.join(', ');
    return {
      ok: false,
      kind: 'waypoint_only',
      reason:
        bound.allowed.size === 0
          ? `${workload.namespace}/${workload.name} is bound to waypoint ${via}, which does not exist: refused (fail closed)`
          : `${workload.namespace}/${workload.name} accepts connections only from its waypoint ${via}, not from ${req.peer?.toString() ?? 'a plaintext client'}`,
      policy: undefined,
      decision: undefined,
    };
  }
  const decision = evaluateL4(state.findPoliciesFor(workload), {
    source: { identity: req.peer, ip: req.sourceIp },
    destination: { workload, port: req.port },
  });
  if (decision.decision === 'allow') return { ok: true, decision };
  const policy = decision.policy ? `${decision.policy.namespace}/${decision.policy.name}` : undefined;
  return {
    ok: false,
    kind: decision.failClosed ? 'fail_closed' : policy !== undefined ? 'deny_policy' : 'no_allow_match',
    reason: decision.reason,
    policy,
    decision,
  };
}

export interface AdmitRequest {
  /** The pod IP the client wanted. */
  destinationIp: string;
  port: number;
  /** Verified peer identity; undefined for plaintext. */
  peer: SpiffeId | undefined;
  sourceIp: string;
}

export class Inbound {
  readonly #o: InboundOptions;
  readonly #log: Logger;
  readonly #failClosedLogged = new Set<string>();

  constructor(options: InboundOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'inbound' });
  }

  /**
   * The single admission decision for traffic to a local pod. `recheck` is live re-evaluation of a
   * connection admitted earlier: same decision, but AUDIT matches and denials are not logged or
   * counted again (the caller counts what it closes).
   */
  admit(req: AdmitRequest, mode: 'admit' | 'recheck' = 'admit'): Admission {
    const workload = this.#o.state.findWorkloadByIp(req.destinationIp);
    if (workload === undefined || workload.node !== this.#o.nodeName || !workload.inMesh) {
      return {
        ok: false,
        status: 503,
        flag: 'NO_HEALTHY_UPSTREAM',
        reason: `${req.destinationIp} is not a mesh pod on node ${this.#o.nodeName}`,
      };
    }
    // The same-node path has no TLS handshake at which a revoked certificate would fail.
    if (req.peer !== undefined && this.#o.isIdentityRevoked?.(req.peer)) {
      return {
        ok: false,
        status: 401,
        flag: 'DENY',
        workload,
        reason: `peer identity ${req.peer} is revoked`,
      };
    }
    const verdict = decideInbound(this.#o.state, workload, req, this.#o.waypointGuard);
    if (mode === 'admit' && verdict.decision !== undefined) {
      const dry = verdict.decision.dryRun;
      if (dry !== undefined) {
        const policy = `${dry.policy.namespace}/${dry.policy.name}`;
        this.#o.policyMetrics?.recordDryRun(policy, dry.would);
        this.#log.info(
          {
            policy,
            would: dry.would,
            rule: dry.rule,
            enforced: verdict.decision.decision,
            peer: req.peer?.toString(),
            src: req.sourceIp,
            dst: `${workload.namespace}/${workload.name}`,
            port: req.port,
          },
          `dry-run policy ${policy} would ${dry.would}`,
        );
      }
      for (const a of verdict.decision.audit) {
        const audit = `${a.namespace}/${a.name}`;
        this.#o.policyMetrics?.recordAudit(audit);
        this.#log.info(
          { audit, rule: a.rule, peer: req.peer?.toString(), src: req.sourceIp },
          'AUDIT policy matched',
        );
      }
    }
    if (!verdict.ok) {
      const policy = verdict.policy;
      if (verdict.kind === 'fail_closed' && policy && !this.#failClosedLogged.has(policy)) {
        this.#failClosedLogged.add(policy);
        this.#log.warn({ policy }, verdict.reason);
      }
      if (mode === 'admit') this.#o.policyMetrics?.recordDenied(policy, verdict.kind);
      return {
        ok: false,
        status: 401,
        flag: 'DENY',
        workload,
        reason: verdict.reason,
        policy,
        kind: verdict.kind,
      };
    }
    return { ok: true, workload, port: req.port, decision: verdict.decision };
  }

  /** HBONE CONNECT stream handler (port 15008). */
  async handleHbone(req: HboneRequest): Promise<HboneResponse> {
    const conn = req.connection;
    // The listener takes both families on one `::` socket: IPv4 peers show up v4-mapped.
    const destinationIp = conn.originalDestination?.ip ?? stripV4Mapped(conn.localAddress);
    const port = req.authority.port;
    const peer = req.peer.toString();
    const claimed = req.forwardedFor;
    const sourceIp = this.#vouchedSourceIp(req.peer, claimed?.ip) ?? stripV4Mapped(conn.remoteAddress);
    // The source workload (metric labels, logs) is the pod at the source address only when it holds
    // the identity the peer proved, as for a claimed address: a waypoint dials from its own pod
    // without `forwarded`, and is then named as itself rather than "unknown".
    const sourcePod = this.#o.state.findWorkloadByIp(sourceIp);
    const base = {
      direction: 'inbound' as const,
      source: {
        ip: sourceIp,
        port: claimed?.port ?? conn.remotePort,
        workload: sourcePod?.identity.equals(req.peer) ? sourcePod : undefined,
        identity: peer,
      },
      destination: {
        ip: destinationIp,
        port,
        workload: undefined as Workload | undefined,
        identity: undefined as string | undefined,
      },
      mutualTls: true,
    };
    if (req.authority.host !== destinationIp) {
      const reason = `authority ${req.authority.host}:${port} does not match the destination ${destinationIp}`;
      this.#o.tracker.recordRefused(base, { responseFlags: 'BAD_REQUEST', error: reason });
      return { status: 400, reason };
    }
    const admission = this.admit({ destinationIp, port, peer: req.peer, sourceIp });
    base.destination.workload = admission.workload;
    base.destination.identity = admission.workload?.identity.toString();
    if (!admission.ok) {
      this.#o.tracker.recordRefused(base, {
        responseFlags: admission.flag,
        error: admission.reason,
        policy: admission.policy,
      });
      return { status: admission.status, reason: admission.reason };
    }
    let upstream: Socket;
    try {
      upstream = await this.connectToPod(sourceIp, destinationIp, port, req.signal);
    } catch (err) {
      const reason = `connect to ${destinationIp}:${port} failed: ${(err as Error).message}`;
      this.#o.tracker.recordRefused(base, { responseFlags: 'UPSTREAM_CONNECT_FAILURE', error: reason });
      return { status: 503, reason };
    }
    if (req.signal.aborted) {
      upstream.destroy();
      return { status: 503, reason: 'client went away' };
    }
    const { finish } = this.#o.tracker.open(
      { ...base, abort: (why) => upstream.destroy(new Error(why)) },
      req.counters,
    );
    return {
      status: 200,
      upstream,
      onDone: (result) =>
        finish(
          result.error && result.outcome !== 'complete'
            ? { responseFlags: '-', error: result.error.message }
            : { responseFlags: '-' },
        ),
    };
  }

  /** Plaintext capture (port 15006): no peer identity; STRICT refuses, PERMISSIVE applies policy. */
  async handlePlaintext(socket: Socket, destination: { ip: string; port: number }): Promise<void> {
    socket.on('error', () => {});
    const sourceIp = stripV4Mapped(socket.remoteAddress ?? '');
    const sourcePort = socket.remotePort ?? 0;
    const base = {
      direction: 'inbound_plaintext' as const,
      source: { ip: sourceIp, port: sourcePort, workload: this.#o.state.findWorkloadByIp(sourceIp) },
      destination: {
        ip: destination.ip,
        port: destination.port,
        workload: undefined as Workload | undefined,
      },
      mutualTls: false,
    };
    const admission = this.admit({
      destinationIp: destination.ip,
      port: destination.port,
      peer: undefined,
      sourceIp,
    });
    base.destination.workload = admission.workload;
    if (!admission.ok) {
      this.#o.tracker.recordRefused(base, {
        responseFlags: admission.flag,
        error: admission.reason,
        policy: admission.policy,
      });
      socket.destroy();
      return;
    }
    await this.pipeToPod(socket, base, sourceIp, destination.ip, destination.port);
  }

  /**
   * Connects an accepted client socket to a local pod and copies bytes both ways until both
   * sides end; tracked (metrics, access log, /connections) from the connect to the end.
   */
  async pipeToPod(
    socket: Socket,
    start: Omit<ConnectionStart, 'abort'>,
    sourceIp: string,
    podIp: string,
    port: number,
  ): Promise<void> {
    let upstream: Socket;
    try {
      upstream = await this.connectToPod(sourceIp, podIp, port);
    } catch (err) {
      this.#o.tracker.recordRefused(start, {
        responseFlags: 'UPSTREAM_CONNECT_FAILURE',
        error: `connect to ${podIp}:${port} failed: ${(err as Error).message}`,
      });
      socket.destroy();
      return;
    }
    if (socket.destroyed) {
      upstream.destroy();
      return;
    }
    const bytes = createByteCounters();
    const { finish } = this.#o.tracker.open(
      { ...start, abort: (why) => upstream.destroy(new Error(why)) },
      bytes,
    );
    const r = await copyBidirectional(socket, upstream, { counters: bytes });
    finish({ responseFlags: '-', ...(r.error ? { error: r.error.message } : {}) });
  }

  /**
   * Connects to a local pod. From the client's IP when we may (transparent socket, see the
   * invariant above), else from the node's address.
   */
  async connectToPod(
    sourceIp: string | undefined,
    podIp: string,
    port: number,
    signal?: AbortSignal,
  ): Promise<Socket> {
    const timeoutMs = this.#o.connectTimeoutMs ?? 10_000;
    // A socket has one family: a client whose address is of the other family than the pod's is
    // connected from its own address of the pod's family (a dual-stack client pod has both), else
    // from the node's.
    const from = sourceIp === undefined ? undefined : this.#sourceOfFamily(sourceIp, podIp);
    if (this.#o.transparent && from !== undefined && from !== podIp) {
      // Nagle off on every pod-side socket: we relay whatever arrives at once, and a small write
      // held back for an ACK (delayed ACK, up to 40 ms) would show up as tail latency.
      const s = await connectTransparent({
        localAddress: from,
        remoteAddress: podIp,
        remotePort: port,
        // No SO_MARK here: the mark routes *replies* to us locally (capture's policy routing);
        // on our own SYN it would loop the packet back into this node instead of to the pod.
        timeoutMs,
        allowHalfOpen: true,
        ...(signal ? { signal } : {}),
      });
      s.setNoDelay(true);
      return s;
    }
    return new Promise<Socket>((resolve, reject) => {
      const s = net.connect({ host: podIp, port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(() => s.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => s.destroy(new Error('cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      s.once('connect', () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      });
    });
  }

  /** `sourceIp`, or the same workload's address of `podIp`'s family when the families differ. */
  #sourceOfFamily(sourceIp: string, podIp: string): string | undefined {
    const v6 = podIp.includes(':');
    if (sourceIp.includes(':') === v6) return sourceIp;
    return this.#o.state.findWorkloadByIp(sourceIp)?.ips.find((ip) => ip.includes(':') === v6);
  }

  /** The claimed client IP, if a workload with that IP has exactly the peer's identity. */
  #vouchedSourceIp(peer: SpiffeId, claimedIp: string | undefined): string | undefined {
    if (claimedIp === undefined) return undefined;
    const w = this.#o.state.findWorkloadByIp(claimedIp);
    return w?.identity.equals(peer) ? claimedIp : undefined;
  }
}

export function stripV4Mapped(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
