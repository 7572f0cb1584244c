// The resource types the stand-in API server knows, as the real server's discovery would list them.
// Built-in types omit apiVersion/kind on list items (as the real server's JSON does); custom
// resources keep them, and refuse strategic-merge patches (415), as a real server does for CRs.

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** Has a `/status` subresource: the main endpoint ignores status, `/status` ignores everything else. */
  status: boolean;
  /** Defined by a CustomResourceDefinition rather than compiled into the server. */
  custom: boolean;
  /** Field selectors accepted beyond metadata.name / metadata.namespace. */
  fieldSelectors: readonly string[];
  shortNames?: readonly string[];
  verbs?: readonly string[];
}

const POD_FIELDS = [
  'spec.nodeName',
  'spec.restartPolicy',
  'spec.schedulerName',
  'spec.serviceAccountName',
  'spec.hostNetwork',
  'status.phase',
  'status.podIP',
  'status.nominatedNodeName',
];
const EVENT_FIELDS = [
  'involvedObject.kind',
  'involvedObject.namespace',
  'involvedObject.name',
  'involvedObject.uid',
  'involvedObject.apiVersion',
  'involvedObject.resourceVersion',
  'involvedObject.fieldPath',
  'reason',
  'reportingComponent',
  'source',
  'type',
];

function builtin(
  group: string,
  version: string,
  kind: string,
  plural: string,
  namespaced: boolean,
  status: boolean,
  fieldSelectors: readonly string[] = [],
): ResourceType {
  return { group, version, kind, plural, namespaced, status, custom: false, fieldSelectors };
}

function custom(
  group: string,
  version: string,
  kind: string,
  plural: string,
  namespaced: boolean,
): ResourceType {
  return { group, version, kind, plural, namespaced, status: true, custom: true, fieldSelectors: [] };
}

/** What a cluster with Gateway API and the Hypha CRDs installed serves. */
export const DEFAULT_RESOURCES: readonly ResourceType[] = [
  builtin('', 'v1', 'Namespace', 'namespaces', false, true, ['status.phase']),
  builtin('', 'v1', 'Node', 'nodes', false, true, ['spec.unschedulable']),
  builtin('', 'v1', 'Pod', 'pods', true, true, POD_FIELDS),
  builtin('', 'v1', 'Service', 'services', true, true),
  builtin('', 'v1', 'Endpoints', 'endpoints', true, false),
  builtin('', 'v1', 'ServiceAccount', 'serviceaccounts', true, false),
  builtin('', 'v1', 'ConfigMap', 'configmaps', true, false),
  builtin('', 'v1', 'Secret', 'secrets', true, false, ['type']),
  builtin('', 'v1', 'Event', 'events', true, false, EVENT_FIELDS),
  builtin('events.k8s.io', 'v1', 'Event', 'events', true, false),
  builtin('discovery.k8s.io', 'v1', 'EndpointSlice', 'endpointslices', true, false),
  builtin('apps', 'v1', 'DaemonSet', 'daemonsets', true, true),
  builtin('apps', 'v1', 'Deployment', 'deployments', true, true),
  builtin('coordination.k8s.io', 'v1', 'Lease', 'leases', true, false),
  builtin('networking.k8s.io', 'v1', 'NetworkPolicy', 'networkpolicies', true, false),
  builtin('rbac.authorization.k8s.io', 'v1', 'ClusterRole', 'clusterroles', false, false),
  builtin('rbac.authorization.k8s.io', 'v1', 'ClusterRoleBinding', 'clusterrolebindings', false, false),
  builtin('rbac.authorization.k8s.io', 'v1', 'Role', 'roles', true, false),
  builtin('rbac.authorization.k8s.io', 'v1', 'RoleBinding', 'rolebindings', true, false),
  builtin('apiextensions.k8s.io', 'v1', 'CustomResourceDefinition', 'customresourcedefinitions', false, true),
  builtin('authentication.k8s.io', 'v1', 'TokenReview', 'tokenreviews', false, false),
  custom('gateway.networking.k8s.io', 'v1', 'GatewayClass', 'gatewayclasses', false),
  custom('gateway.networking.k8s.io', 'v1', 'Gateway', 'gateways', true),
  custom('gateway.networking.k8s.io', 'v1', 'HTTPRoute', 'httproutes', true),
  custom('gateway.networking.k8s.io', 'v1', 'GRPCRoute', 'grpcroutes', true),
  custom('security.hypha.dev', 'v1', 'AuthorizationPolicy', 'authorizationpolicies', true),
  custom('security.hypha.dev', 'v1', 'RequestAuthentication', 'requestauthentications', true),
  custom('security.hypha.dev', 'v1', 'PeerAuthentication', 'peerauthentications', true),
  custom('traffic.hypha.dev', 'v1alpha1', 'TrafficPolicy', 'trafficpolicies', true),
  custom('networking.hypha.dev', 'v1', 'ServiceEntry', 'serviceentries', true),
  custom('networking.hypha.dev', 'v1', 'MeshConfig', 'meshconfigs', true),
];

export function apiVersionOf(type: ResourceType): string {
  return type.group === '' ? type.version : `${type.group}/${type.version}`;
}

export function resourceKey(type: ResourceType): string {
  return `${type.group}/${type.version}/${type.plural}`;
}

const SHORT_NAMES: Record<string, readonly string[]> = {
  namespaces: ['ns'],
  nodes: ['no'],
  pods: ['po'],
  services: ['svc'],
  endpoints: ['ep'],
  serviceaccounts: ['sa'],
  configmaps: ['cm'],
  events: ['ev'],
  daemonsets: ['ds'],
  deployments: ['deploy'],
  networkpolicies: ['netpol'],
  customresourcedefinitions: ['crd', 'crds'],
  gatewayclasses: ['gc'],
  gateways: ['gtw'],
  authorizationpolicies: ['ap'],
  requestauthentications: ['ra'],
  peerauthentications: ['pa'],
  trafficpolicies: ['tp'],
  serviceentries: ['se'],
};

/** kubectl's short names (`kubectl get ns`), as discovery reports them. */
export function shortNamesOf(type: ResourceType): readonly string[] {
  return type.shortNames ?? (type.group === 'events.k8s.io' ? [] : (SHORT_NAMES[type.plural] ?? []));
}

/** Verbs a type supports; TokenReview is create-only, as in a real cluster. */
export function verbsOf(type: ResourceType): readonly string[] {
  if (type.verbs) return type.verbs;
  if (type.kind === 'TokenReview') return ['create'];
  return ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
}
