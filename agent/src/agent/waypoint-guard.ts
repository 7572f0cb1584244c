// Which pods accept traffic only from a waypoint.
//
// A pod is waypoint-guarded when it is an endpoint of a service bound to a waypoint (for: service
// or all) or is itself bound (for: workload or all). Its agent then admits HBONE only from that
// waypoint's identity, so L7 policy cannot be bypassed by dialing the pod's IP, and a binding to a
// waypoint that does not exist refuses everything (fail closed). Istio ambient lets such direct
// traffic through; this is the deliberate difference.
//
// The index is rebuilt on config changes (O(endpoints)); the data path does one map read.
import type { ConfigState, WaypointLookup } from '@hypha/shared/config';

export interface GuardEntry {
  /** Identities (SPIFFE URIs) of the waypoints allowed to reach the pod; empty = none exists. */
  readonly allowed: ReadonlySet<string>;
  /** For messages: the waypoints the pod is bound to, as namespace/name. */
  readonly waypoints: readonly string[];
}

export class WaypointGuard {
  #byUid = new Map<string, { allowed: Set<string>; waypoints: string[] }>();

  rebuild(state: ConfigState): void {
    const next = new Map<string, { allowed: Set<string>; waypoints: string[] }>();
    const add = (uid: string, lookup: WaypointLookup) => {
      let e = next.get(uid);
      if (e === undefined) {
        e = { allowed: new Set(), waypoints: [] };
        next.set(uid, e);
      }
      const name = `${lookup.ref.namespace}/${lookup.ref.name}`;
      if (!e.waypoints.includes(name)) e.waypoints.push(name);
      if (lookup.waypoint !== undefined) e.allowed.add(lookup.waypoint.identity.toString());
    };
    for (const svc of state.services()) {
      const lookup = state.findWaypointFor(svc);
      if (lookup === undefined) continue;
      for (const ep of svc.endpoints) if (ep.workloadUid !== undefined) add(ep.workloadUid, lookup);
    }
    for (const w of state.workloads()) {
      const lookup = state.findWaypointFor(w);
      if (lookup !== undefined) add(w.uid, lookup);
    }
    this.#byUid = next;
  }

  /** undefined when the pod is not guarded. */
  find(uid: string): GuardEntry | undefined {
    return this.#byUid.get(uid);
  }
}
