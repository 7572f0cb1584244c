// Counters for L4 authorization outcomes, beside Istio's connection metrics: who was refused and
// which policy decided, AUDIT matches, dry-run policies' would-be decisions, and live connections a
// policy change closed.
// Labels stay low-cardinality on purpose (policy name and a fixed reason set); the peers of each
// denial are in istio_tcp_connections_failed_total{response_flags="DENY"} and the access log.
import { type DryRunLabelName, dryRunCounter } from '@hypha/shared/telemetry';
import { Counter, type Registry } from 'prom-client';

/** Why a connection was refused: the fixed set of `reason` label values. */
export type DenyKind = 'strict_mtls' | 'waypoint_only' | 'deny_policy' | 'no_allow_match' | 'fail_closed';

/** `policy` label value when no single policy decided (no ALLOW matched, STRICT mode). */
export const NO_POLICY = '-';

export class PolicyMetrics {
  readonly #denied: Counter<'policy' | 'reason'>;
  readonly #audit: Counter<'policy'>;
  readonly #closed: Counter<'policy' | 'reason'>;
  readonly #dryRun: Counter<DryRunLabelName>;

  constructor(registry: Registry) {
    this.#denied = new Counter({
      name: 'hypha_policy_denied_total',
      help: 'Inbound connections refused by L4 authorization or STRICT mTLS, by deciding policy and reason',
      labelNames: ['policy', 'reason'],
      registers: [registry],
    });
    this.#audit = new Counter({
      name: 'hypha_policy_audit_total',
      help: 'Inbound connections matched by an AUDIT policy (logged, never blocked)',
      labelNames: ['policy'],
      registers: [registry],
    });
    this.#closed = new Counter({
      name: 'hypha_policy_connections_closed_total',
      help: 'Live inbound connections closed because a policy or mTLS mode change now denies them',
      labelNames: ['policy', 'reason'],
      registers: [registry],
    });
    // Shared with the waypoint (layer L7): one definition, so Prometheus sees one HELP.
    this.#dryRun = dryRunCounter(registry);
  }

  recordDenied(policy: string | undefined, reason: DenyKind): void {
    this.#denied.labels(policy ?? NO_POLICY, reason).inc();
  }

  recordAudit(policy: string): void {
    this.#audit.labels(policy).inc();
  }

  /** A dry-run policy would have denied (or allowed) this connection; the enforced decision stands. */
  recordDryRun(policy: string, would: 'allow' | 'deny'): void {
    this.#dryRun.labels(policy, would, 'L4').inc();
  }

  recordClosedByPolicy(policy: string | undefined, reason: DenyKind): void {
    this.#closed.labels(policy ?? NO_POLICY, reason).inc();
  }
}
