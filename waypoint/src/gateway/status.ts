// The ingress Gateway's status (Gateway API): Gateway conditions Accepted and Programmed, its
// addresses, and per listener Accepted / ResolvedRefs / Programmed / Conflicted with the number of
// routes attached. `computeGatewayStatus` is pure (the unit tests drive it); the reporter writes it
// to the API server's `gateways/<name>/status` when it changed (merge patch, with the live object's
// resourceVersion; a 409 is retried on the next pass).
//
//   status:
//     addresses: [{ type: IPAddress, value: 10.0.0.7 }]
//     conditions: [Accepted True Accepted | ListenersNotValid, Programmed True Programmed | False Invalid]
//     listeners:
//       - name: https-a   attachedRoutes: 1   supportedKinds: [HTTPRoute, GRPCRoute]
//         conditions: [Accepted, ResolvedRefs False InvalidCertificateRef "Secret shop/a-cert not found", Programmed False Invalid, Conflicted]
import type { Logger } from '@hypha/shared';
import type { GatewayPlan } from './input.js';
import type { ListenerCondition } from './listeners.js';

export const GATEWAY_CONTROLLER_NAME = 'hypha.dev/gateway';

export interface StatusCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number | undefined;
  lastTransitionTime: string;
}

export interface ListenerStatus {
  name: string;
  supportedKinds: { group: string; kind: string }[];
  attachedRoutes: number;
  conditions: StatusCondition[];
}

export interface GatewayStatus {
  addresses: { type: 'IPAddress'; value: string }[];
  conditions: StatusCondition[];
  listeners: ListenerStatus[];
}

export interface ComputeGatewayStatusOptions {
  /** The addresses clients reach the gateway at (LoadBalancer Service VIPs, else its pods' IPs). */
  addresses: readonly string[];
  /** Why a listener port does not listen (bind failure), undefined when it does. */
  findPortError: (port: number) => string | undefined;
  /** metadata.generation of the Gateway the verdict is about. */
  generation?: number | undefined;
  /** The status now on the object: lastTransitionTime is kept for conditions whose status is unchanged. */
  previous?: Partial<GatewayStatus> | undefined;
  now?: Date;
}

function stamp(
  c: Omit<StatusCondition, 'lastTransitionTime' | 'observedGeneration'>,
  previous: readonly StatusCondition[] | undefined,
  generation: number | undefined,
  now: string,
): StatusCondition {
  const prev = previous?.find((p) => p.type === c.type);
  return {
    ...c,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime: prev !== undefined && prev.status === c.status ? prev.lastTransitionTime : now,
  };
}

/** The Gateway's status for a plan (pure). */
export function computeGatewayStatus(plan: GatewayPlan, opts: ComputeGatewayStatusOptions): GatewayStatus {
  const now = (opts.now ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const gen = opts.generation;
  const prevListeners = opts.previous?.listeners ?? [];
  let programmed = 0;
  const invalid: string[] = [];
  const listeners: ListenerStatus[] = plan.compiled.listeners.map((l) => {
    const conds: Omit<ListenerCondition, never>[] = [...l.conditions];
    let prog: ListenerCondition;
    if (!l.serving) {
      const why = l.conditions.find((c) => c.status === (c.type === 'Conflicted' ? 'True' : 'False'));
      prog = {
        type: 'Programmed',
        status: 'False',
        reason: 'Invalid',
        message: why ? `not serving: ${why.message}` : 'not serving',
      };
      invalid.push(l.name);
    } else {
      const err = opts.findPortError(l.port);
      prog =
        err === undefined
          ? { type: 'Programmed', status: 'True', reason: 'Programmed', message: `serving on port ${l.port}` }
          : { type: 'Programmed', status: 'False', reason: 'Pending', message: err };
      if (err === undefined) programmed++;
    }
    conds.push(prog);
    const prev = prevListeners.find((p) => p.name === l.name)?.conditions;
    return {
      name: l.name,
      supportedKinds: l.supportedKinds.map((kind) => ({ group: 'gateway.networking.k8s.io', kind })),
      attachedRoutes: plan.attachedRoutes.get(l.name) ?? 0,
      conditions: conds.map((c) => stamp(c, prev, gen, now)),
    };
  });
  const addresses = opts.addresses.map((value) => ({ type: 'IPAddress' as const, value }));
  const accepted =
    invalid.length === 0
      ? {
          type: 'Accepted',
          status: 'True' as const,
          reason: 'Accepted',
          message: 'accepted by hypha.dev/gateway',
        }
      : {
          type: 'Accepted',
          status: 'True' as const,
          reason: 'ListenersNotValid',
          message: `listener(s) not valid: ${invalid.join(', ')} (see their conditions); the others serve`,
        };
  const programmedCond =
    programmed > 0 && addresses.length > 0
      ? {
          type: 'Programmed',
          status: 'True' as const,
          reason: 'Programmed',
          message: `${programmed} of ${listeners.length} listener(s) serving`,
        }
      : {
          type: 'Programmed',
          status: 'False' as const,
          reason: addresses.length === 0 ? 'AddressNotAssigned' : 'Invalid',
          message:
            addresses.length === 0
              ? 'no address yet (no ready gateway pod or Service)'
              : 'no listener is serving',
        };
  const prevConds = opts.previous?.conditions;
  return {
    addresses,
    conditions: [stamp(accepted, prevConds, gen, now), stamp(programmedCond, prevConds, gen, now)],
    listeners,
  };
}

// ---- writing it (Kubernetes only) ----

export interface GatewayStatusReporterOptions {
  kubeconfig?: string;
  gateway: { namespace: string; name: string };
  /** The current verdict for the live object's generation and status; undefined: nothing to say. */
  compute: (
    generation: number | undefined,
    previous: Partial<GatewayStatus> | undefined,
  ) => GatewayStatus | undefined;
  logger: Logger;
  debounceMs?: number;
}

export interface GatewayStatusReporter {
  /** Schedules a pass (debounced). */
  update(): void;
  close(): Promise<void>;
}

interface LiveGateway {
  metadata?: { generation?: number; resourceVersion?: string };
  status?: Partial<GatewayStatus>;
}

function sameStatus(a: Partial<GatewayStatus> | undefined, b: GatewayStatus): boolean {
  return JSON.stringify(a ?? {}) === JSON.stringify(b);
}

export async function createGatewayStatusReporter(
  opts: GatewayStatusReporterOptions,
): Promise<GatewayStatusReporter> {
  const { fetchKube, KubeError, loadKubeConfig } = await import('@hypha/shared/kube');
  const kc = loadKubeConfig(opts.kubeconfig);
  const log = opts.logger.child({ component: 'gateway-status' });
  const path = `/apis/gateway.networking.k8s.io/v1/namespaces/${opts.gateway.namespace}/gateways/${opts.gateway.name}`;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;
  let warned = false;

  const pass = async (): Promise<void> => {
    for (let attempt = 0; attempt < 5 && !closed; attempt++) {
      try {
        const live = (await fetchKube(kc, path)) as LiveGateway;
        const next = opts.compute(live.metadata?.generation, live.status);
        if (next === undefined || sameStatus(live.status, next)) return;
        await fetchKube(kc, `${path}/status`, {
          method: 'PATCH',
          contentType: 'application/merge-patch+json',
          body: { metadata: { resourceVersion: live.metadata?.resourceVersion }, status: next },
        });
        log.info({ listeners: next.listeners.length }, 'Gateway status written');
        warned = false;
        return;
      } catch (err) {
        const status = err instanceof KubeError ? err.status : undefined;
        if (status === 404) return;
        if (status === 403 || status === 422) {
          if (!warned)
            log.warn(
              { err: (err as Error).message },
              'cannot write the Gateway status (check RBAC: patch on gateways/status)',
            );
          warned = true;
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)).unref());
      }
    }
  };

  const run = () => {
    timer = undefined;
    if (running !== undefined) {
      again = true;
      return;
    }
    running = pass()
      .catch((err: Error) => log.warn({ err: err.message }, 'Gateway status pass failed'))
      .finally(() => {
        running = undefined;
        if (again && !closed) {
          again = false;
          run();
        }
      });
  };

  return {
    update() {
      if (closed || timer !== undefined) return;
      timer = setTimeout(run, opts.debounceMs ?? 250);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
