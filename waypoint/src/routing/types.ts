// The typed route table the data path reads. Built from raw HTTPRoute/GRPCRoute objects by
// `translate.ts`; matched by `match.ts`. Plain data: the table is rebuilt on every config change
// from routes compiled once per object (actions and match entries are shared between tables).

export interface HeaderModifier {
  set: readonly { name: string; value: string }[];
  add: readonly { name: string; value: string }[];
  /** Lowercase names. */
  remove: readonly string[];
}

export type PathModifier =
  | { type: 'ReplaceFullPath'; value: string }
  | { type: 'ReplacePrefixMatch'; value: string };

export interface Redirect {
  scheme: string | undefined;
  hostname: string | undefined;
  port: number | undefined;
  path: PathModifier | undefined;
  statusCode: number;
}

export interface Rewrite {
  hostname: string | undefined;
  path: PathModifier | undefined;
}

export interface BackendRef {
  /** `namespace/name` of the Service. */
  service: string;
  port: number | undefined;
  weight: number;
  requestHeaders: HeaderModifier | undefined;
  responseHeaders: HeaderModifier | undefined;
}

export interface Mirror {
  service: string;
  port: number | undefined;
  /** 0..100 */
  percent: number;
}

export interface RetryPolicy {
  /** Retries after the first try (Gateway API `retry.attempts`). */
  attempts: number;
  /** HTTP statuses that are retried. */
  codes: ReadonlySet<number>;
  /** gRPC statuses that are retried when they come in a trailers-only answer (no message sent yet). */
  grpcCodes: ReadonlySet<number>;
  backoffMs: number;
  /** Per-try timeout from a TrafficPolicy's `retries.perTryTimeout`, used when the route sets none. */
  perTryTimeoutMs?: number;
}

export interface RouteAction {
  /** `HTTPRoute ns/name rule N` — for logs and the access log. */
  name: string;
  /** Weight > 0 only; empty with `invalidBackends` → 500, empty otherwise only with a redirect. */
  backends: readonly BackendRef[];
  totalWeight: number;
  invalidBackends: boolean;
  requestHeaders: HeaderModifier | undefined;
  responseHeaders: HeaderModifier | undefined;
  redirect: Redirect | undefined;
  rewrite: Rewrite | undefined;
  mirrors: readonly Mirror[];
  requestTimeoutMs: number | undefined;
  backendRequestTimeoutMs: number | undefined;
  retry: RetryPolicy | undefined;
}

export type PathMatch =
  | { type: 'Exact'; value: string }
  | { type: 'PathPrefix'; value: string }
  | { type: 'RegularExpression'; value: string; regex: RegExp };

export type ValueMatch =
  | { name: string; type: 'Exact'; value: string }
  | { name: string; type: 'RegularExpression'; value: string; regex: RegExp };

/** One (rule, match) pair of one route, in precedence order inside the table. */
export interface RouteEntry {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  routeName: string;
  creationTimestamp: string;
  ruleIndex: number;
  matchIndex: number;
  /** Lowercase; empty = any host. Only checked for routes attached to the Gateway. */
  hostnames: readonly string[];
  /** parentRef port; undefined = every port. */
  port: number | undefined;
  path: PathMatch;
  method: string | undefined;
  /** Lowercase header names. */
  headers: readonly ValueMatch[];
  query: readonly ValueMatch[];
  action: RouteAction;
}

export interface RouteTable {
  /** Service key → entries attached to that Service (GAMMA), sorted by precedence. */
  byService: ReadonlyMap<string, readonly RouteEntry[]>;
  /** Entries attached to the waypoint Gateway, sorted by precedence. */
  gateway: readonly RouteEntry[];
}
