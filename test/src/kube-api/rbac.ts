// RBAC authorization for the stand-in API server, with the real authorizer's semantics (the
// rbac.authorization.k8s.io/v1 objects stored in the server itself are the policy):
//
//   request ──▶ attributes (verb, group, resource[/subresource], namespace, name)
//           ──▶ every ClusterRoleBinding, and the RoleBindings of the request's namespace,
//               whose subjects match the user ──▶ their role's rules ──▶ allowed if any rule covers it
//
// Invariants (as in k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac):
// - deny by default; no rule ever denies, so the order of bindings and rules does not matter;
// - a RoleBinding grants only inside its own namespace, even when it points at a ClusterRole;
//   cluster-scoped requests (namespace "") are granted by ClusterRoleBindings alone;
// - resourceNames restrict only requests that carry a name: create and deletecollection never do,
//   list/watch do only through a `metadata.name=` field selector (what the real RequestInfo does);
// - a subresource is matched as "resource/subresource" (or "*/subresource"), never by "resource";
// - system:masters bypasses RBAC (the admin token), as the real server's privileged group does;
// - the discovery paths (/api, /apis, /version, group/version documents) are open to every
//   authenticated user, as the default system:discovery binding makes them.
// Not modelled: aggregated ClusterRoles, escalation checks on writing Roles/bindings, impersonation,
// non-resource URL rules, Node/ABAC/webhook authorizers.
import type { ResourceType as ResourceTypeLike } from './resources.js';
import type { KubeObject } from './store.js';

export const RBAC_API_VERSION = 'rbac.authorization.k8s.io/v1';
const RBAC_KINDS = new Set(['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding']);

export interface UserInfo {
  username: string;
  groups: readonly string[];
}

export const ADMIN_USER: UserInfo = {
  username: 'kubernetes-admin',
  groups: ['system:masters', 'system:authenticated'],
};

/** The user a service-account token authenticates as (what TokenReview reports too). */
export function serviceAccountUser(namespace: string, name: string): UserInfo {
  return {
    username: `system:serviceaccount:${namespace}:${name}`,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
  };
}

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection';

/** What is being asked, as the real server's RequestInfo resolves it. */
export interface ResourceAttributes {
  verb: Verb;
  /** "" for the core group. */
  group: string;
  resource: string;
  subresource?: string;
  /** "" or undefined for cluster scope. */
  namespace?: string;
  name?: string;
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs?: string[];
  nonResourceURLs?: string[];
}

export interface AuthorizationDecision {
  allowed: boolean;
  user: string;
  attributes: ResourceAttributes;
  /** For an allow: the binding and role that granted it. For a deny: the Forbidden message. */
  reason: string;
}

interface RoleRef {
  apiGroup?: string;
  kind?: string;
  name?: string;
}

interface Subject {
  kind?: string;
  name?: string;
  namespace?: string;
}

/** The objects the authorizer reads; the server passes its store's current contents. */
export interface RbacPolicySource {
  list(kind: 'Role' | 'ClusterRole' | 'RoleBinding' | 'ClusterRoleBinding', namespace?: string): KubeObject[];
}

function appliesTo(user: UserInfo, subject: Subject, bindingNamespace: string): boolean {
  switch (subject.kind) {
    case 'User':
      return subject.name === user.username;
    case 'Group':
      return subject.name !== undefined && user.groups.includes(subject.name);
    case 'ServiceAccount': {
      // A RoleBinding may leave the namespace out for a service account of its own namespace.
      const ns = subject.namespace || bindingNamespace;
      return ns !== '' && user.username === `system:serviceaccount:${ns}:${subject.name ?? ''}`;
    }
    default:
      return false;
  }
}

function verbMatches(rule: PolicyRule, verb: string): boolean {
  return (rule.verbs ?? []).some((v) => v === '*' || v === verb);
}

function groupMatches(rule: PolicyRule, group: string): boolean {
  return (rule.apiGroups ?? []).some((g) => g === '*' || g === group);
}

function resourceMatches(rule: PolicyRule, resource: string, subresource: string | undefined): boolean {
  const combined = subresource ? `${resource}/${subresource}` : resource;
  return (rule.resources ?? []).some(
    (r) => r === '*' || r === combined || (subresource !== undefined && r === `*/${subresource}`),
  );
}

function nameMatches(rule: PolicyRule, name: string | undefined): boolean {
  const names = rule.resourceNames ?? [];
  if (names.length === 0) return true;
  return name !== undefined && name !== '' && names.includes(name);
}

/** Does one rule cover the request? Exported for the unit tests of rule semantics. */
export function ruleAllows(rule: PolicyRule, attrs: ResourceAttributes): boolean {
  return (
    verbMatches(rule, attrs.verb) &&
    groupMatches(rule, attrs.group) &&
    resourceMatches(rule, attrs.resource, attrs.subresource) &&
    nameMatches(rule, attrs.name)
  );
}

function rulesOf(source: RbacPolicySource, ref: RoleRef, bindingNamespace: string): PolicyRule[] {
  if (ref.apiGroup !== undefined && ref.apiGroup !== 'rbac.authorization.k8s.io') return [];
  let role: KubeObject | undefined;
  if (ref.kind === 'ClusterRole') role = source.list('ClusterRole').find((r) => r.metadata.name === ref.name);
  else if (ref.kind === 'Role' && bindingNamespace !== '')
    role = source.list('Role', bindingNamespace).find((r) => r.metadata.name === ref.name);
  // A binding to a role that does not exist (yet) grants nothing, as in a real cluster.
  return (role?.rules as PolicyRule[] | undefined) ?? [];
}

/** `User "x" cannot list resource "pods" in API group "" at the cluster scope`, word for word. */
function denialMessage(user: UserInfo, attrs: ResourceAttributes): string {
  const resource = attrs.subresource ? `${attrs.resource}/${attrs.subresource}` : attrs.resource;
  const scope = attrs.namespace ? `in the namespace "${attrs.namespace}"` : 'at the cluster scope';
  return `User "${user.username}" cannot ${attrs.verb} resource "${resource}" in API group "${attrs.group}" ${scope}`;
}

export function authorize(
  source: RbacPolicySource,
  user: UserInfo,
  attrs: ResourceAttributes,
): AuthorizationDecision {
  const decision = (allowed: boolean, reason: string): AuthorizationDecision => ({
    allowed,
    user: user.username,
    attributes: attrs,
    reason,
  });
  if (user.groups.includes('system:masters')) return decision(true, 'system:masters');
  for (const binding of source.list('ClusterRoleBinding')) {
    const subjects = (binding.subjects as Subject[] | undefined) ?? [];
    if (!subjects.some((s) => appliesTo(user, s, ''))) continue;
    const ref = (binding.roleRef ?? {}) as RoleRef;
    if (ref.kind !== 'ClusterRole') continue;
    if (rulesOf(source, ref, '').some((r) => ruleAllows(r, attrs)))
      return decision(true, `ClusterRoleBinding ${binding.metadata.name} → ClusterRole ${ref.name}`);
  }
  const ns = attrs.namespace ?? '';
  if (ns !== '') {
    for (const binding of source.list('RoleBinding', ns)) {
      const subjects = (binding.subjects as Subject[] | undefined) ?? [];
      if (!subjects.some((s) => appliesTo(user, s, ns))) continue;
      const ref = (binding.roleRef ?? {}) as RoleRef;
      if (rulesOf(source, ref, ns).some((r) => ruleAllows(r, attrs)))
        return decision(true, `RoleBinding ${ns}/${binding.metadata.name} → ${ref.kind} ${ref.name}`);
    }
  }
  return decision(false, denialMessage(user, attrs));
}

/** The 403 Status body the real server sends for a denial (NewForbidden in apimachinery). */
export function forbiddenStatus(decision: AuthorizationDecision): Record<string, unknown> {
  const a = decision.attributes;
  const qualified = a.group === '' ? a.resource : `${a.resource}.${a.group}`;
  const subject = a.name ? `${qualified} "${a.name}"` : qualified;
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `${subject} is forbidden: ${decision.reason}`,
    reason: 'Forbidden',
    details: {
      ...(a.name ? { name: a.name } : {}),
      ...(a.group ? { group: a.group } : {}),
      kind: a.resource,
    },
    code: 403,
  };
}

/** The name a list/watch is limited to by `fieldSelector=metadata.name=x` (undefined otherwise). */
export function nameFromFieldSelector(selector: string | null | undefined): string | undefined {
  if (!selector) return undefined;
  for (const term of selector.split(',')) {
    const m = /^\s*metadata\.name\s*==?\s*(.+?)\s*$/.exec(term);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * The objects of a rendered manifest set that the stand-in needs to enforce its RBAC: Namespaces,
 * ServiceAccounts, and the four RBAC kinds. Everything else (Deployments, CRDs...) is left out.
 */
export function selectRbacObjects(objects: readonly KubeObject[]): KubeObject[] {
  const order = ['Namespace', 'ServiceAccount', 'ClusterRole', 'Role', 'ClusterRoleBinding', 'RoleBinding'];
  return objects
    .filter(
      (o) =>
        (o.apiVersion === 'v1' && (o.kind === 'Namespace' || o.kind === 'ServiceAccount')) ||
        (o.apiVersion === RBAC_API_VERSION && RBAC_KINDS.has(o.kind ?? '')),
    )
    .sort((a, b) => order.indexOf(a.kind ?? '') - order.indexOf(b.kind ?? ''));
}

/** One line per denied request, for a test's failure message. */
export function describeDenials(
  requests: readonly {
    method: string;
    path: string;
    query: Record<string, string>;
    authorization?: AuthorizationDecision;
  }[],
): string[] {
  return requests
    .filter((r) => r.authorization && !r.authorization.allowed)
    .map((r) => {
      const q = new URLSearchParams(r.query).toString();
      return `${r.method} ${r.path}${q ? `?${q}` : ''}: ${r.authorization?.reason}`;
    });
}

/**
 * Puts the RBAC side of rendered manifests (`hypha install --print`, `kubectl kustomize`) into a
 * stand-in server: Namespaces, ServiceAccounts, Roles, ClusterRoles and bindings. Returns what it put.
 */
export function loadRbacObjects(
  server: { put(object: KubeObject): KubeObject },
  objects: readonly KubeObject[],
): KubeObject[] {
  return selectRbacObjects(objects).map((o) => server.put(o));
}

/** One permission a user holds: a verb on a resource (optionally one name), and where it came from. */
export interface Grant {
  verb: string;
  group: string;
  resource: string;
  resourceName?: string;
  /** Undefined: granted cluster-wide (ClusterRoleBinding); else only in this namespace. */
  namespace?: string;
  /** `ClusterRole hypha-ca via ClusterRoleBinding hypha-ca`. */
  via: string;
}

/** Everything the bindings give a user, one entry per verb × group × resource × name. */
export function grantsOf(source: RbacPolicySource, user: UserInfo): Grant[] {
  const out: Grant[] = [];
  const expand = (rules: PolicyRule[], via: string, namespace: string | undefined) => {
    for (const rule of rules) {
      const names = rule.resourceNames && rule.resourceNames.length > 0 ? rule.resourceNames : [undefined];
      for (const verb of rule.verbs ?? [])
        for (const group of rule.apiGroups ?? [])
          for (const resource of rule.resources ?? [])
            for (const resourceName of names)
              out.push({
                verb,
                group,
                resource,
                ...(resourceName !== undefined ? { resourceName } : {}),
                ...(namespace !== undefined ? { namespace } : {}),
                via,
              });
    }
  };
  for (const b of source.list('ClusterRoleBinding')) {
    const ref = (b.roleRef ?? {}) as RoleRef;
    if (ref.kind !== 'ClusterRole') continue;
    if (!((b.subjects as Subject[] | undefined) ?? []).some((s) => appliesTo(user, s, ''))) continue;
    expand(
      rulesOf(source, ref, ''),
      `ClusterRole ${ref.name} via ClusterRoleBinding ${b.metadata.name}`,
      undefined,
    );
  }
  for (const b of source.list('RoleBinding')) {
    const ns = b.metadata.namespace ?? '';
    const ref = (b.roleRef ?? {}) as RoleRef;
    if (!((b.subjects as Subject[] | undefined) ?? []).some((s) => appliesTo(user, s, ns))) continue;
    expand(rulesOf(source, ref, ns), `${ref.kind} ${ref.name} via RoleBinding ${ns}/${b.metadata.name}`, ns);
  }
  return out;
}

/**
 * The grants no allowed request of the user needed: a list of what its role could lose. Requests
 * are the server's log (their recorded decisions), so run the component's flows first.
 */
export function unusedGrants(
  source: RbacPolicySource,
  user: UserInfo,
  requests: readonly { authorization?: AuthorizationDecision }[],
): string[] {
  const used = requests
    .map((r) => r.authorization)
    .filter((d): d is AuthorizationDecision => d?.allowed === true && d.user === user.username)
    .map((d) => d.attributes);
  return grantsOf(source, user)
    .filter(
      (g) =>
        !used.some(
          (a) =>
            (g.namespace === undefined || g.namespace === a.namespace) &&
            ruleAllows(
              {
                verbs: [g.verb],
                apiGroups: [g.group],
                resources: [g.resource],
                ...(g.resourceName !== undefined ? { resourceNames: [g.resourceName] } : {}),
              },
              a,
            ),
        ),
    )
    .map(
      (g) =>
        `${g.verb} ${g.group ? `${g.resource}.${g.group}` : g.resource}${g.resourceName ? `/${g.resourceName}` : ''}${g.namespace ? ` in ${g.namespace}` : ''} (${g.via})`,
    );
}

/** The RBAC objects of a stand-in server's store, for authorize/grantsOf/unusedGrants. */
export function storePolicySource(store: {
  findTypeByKind(apiVersion: string, kind: string): ResourceTypeLike | undefined;
  list(type: ResourceTypeLike, namespace?: string): KubeObject[];
}): RbacPolicySource {
  return {
    list(kind, namespace) {
      const type = store.findTypeByKind(RBAC_API_VERSION, kind);
      return type ? store.list(type, namespace) : [];
    },
  };
}
