// The names the DNS proxy answers itself: one map from a Service's FQDN to the Service's key, so a
// query is one Map read (no scan of the state, no parsing guesses on the hot path).
//
// Invariants:
// - The map holds exactly the Services in the state: built from `state.services()` at creation and
//   kept by `state.onChange` (added/removed; an update never renames a Service). The Service itself
//   is read from the state at query time, so VIPs and endpoints are never stale.
// - Keys are lower case without the trailing dot (DNS names compare case-insensitively).
import type { ConfigChange, ConfigState, Service } from '@hypha/shared/config';

export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** `name.ns.svc.<domain>` in the form the index keys on. */
export function serviceFqdn(namespace: string, name: string, clusterDomain: string): string {
  return `${name}.${namespace}.svc.${clusterDomain}`.toLowerCase();
}

/** Lower case, no trailing dot: how a question's name is looked up. */
export function normalizeName(name: string): string {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  return n.toLowerCase();
}

interface ServiceKey {
  readonly namespace: string;
  readonly name: string;
}

export class ServiceNameIndex {
  readonly clusterDomain: string;
  /** `svc.<domain>`: names under it that are not in the index do not exist (NXDOMAIN). */
  readonly serviceZone: string;
  readonly #state: ConfigState;
  readonly #byName = new Map<string, ServiceKey>();
  readonly #unsubscribe: () => void;

  constructor(state: ConfigState, clusterDomain = DEFAULT_CLUSTER_DOMAIN) {
    this.clusterDomain = normalizeName(clusterDomain);
    this.serviceZone = `svc.${this.clusterDomain}`;
    this.#state = state;
    for (const s of state.services()) this.#add(s);
    this.#unsubscribe = state.onChange((change) => this.#apply(change));
  }

  get size(): number {
    return this.#byName.size;
  }

  /** The Service a normalized name belongs to, or undefined. */
  findService(name: string): Service | undefined {
    const key = this.#byName.get(name);
    return key === undefined ? undefined : this.#state.findServiceByName(key.namespace, key.name);
  }

  /** Whether a normalized name lies in `svc.<domain>` (so a miss there is NXDOMAIN, not forwarded). */
  isInServiceZone(name: string): boolean {
    return name === this.serviceZone || name.endsWith(`.${this.serviceZone}`);
  }

  /**
   * Whether a normalized name lies *below* a known Service (`db-0.db.ns.svc.<domain>`: a
   * StatefulSet pod's hostname; `_http._tcp.web.ns.svc.<domain>`: an SRV name). The proxy does not
   * make those records; the cluster's DNS does, so such names are forwarded, not NXDOMAIN.
   */
  isBelowService(name: string): boolean {
    if (!name.endsWith(`.${this.serviceZone}`)) return false;
    const labels = name.slice(0, -(this.serviceZone.length + 1)).split('.');
    if (labels.length < 3) return false;
    const parent = `${labels[labels.length - 2]}.${labels[labels.length - 1]}.${this.serviceZone}`;
    return this.#byName.has(parent);
  }

  close(): void {
    this.#unsubscribe();
  }

  #add(s: Service): void {
    this.#byName.set(serviceFqdn(s.namespace, s.name, this.clusterDomain), {
      namespace: s.namespace,
      name: s.name,
    });
  }

  #apply(change: ConfigChange): void {
    for (const s of change.services.removed)
      this.#byName.delete(serviceFqdn(s.namespace, s.name, this.clusterDomain));
    for (const s of change.services.added) this.#add(s);
  }
}
