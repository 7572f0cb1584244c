// What the Kubernetes source watches: every kind the config translation reads, cluster-wide.
// The agent indexes all pods (routing and identity need every workload) and captures only its own.

export interface WatchedKind {
  kind: string;
  apiVersion: string;
  /** Collection path for list and watch across all namespaces. */
  path: string;
  /** Narrows list and watch (e.g. `type=kubernetes.io/tls` for Secrets). */
  fieldSelector?: string;
}

export const WATCHED_KINDS: readonly WatchedKind[] = [
  { kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces' },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods' },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services' },
  {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
  },
  {
    kind: 'Gateway',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/gateways',
  },
  {
    kind: 'HTTPRoute',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/httproutes',
  },
  {
    kind: 'GRPCRoute',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/grpcroutes',
  },
  {
    kind: 'AuthorizationPolicy',
    apiVersion: 'security.hypha.dev/v1',
    path: '/apis/security.hypha.dev/v1/authorizationpolicies',
  },
  {
    kind: 'RequestAuthentication',
    apiVersion: 'security.hypha.dev/v1',
    path: '/apis/security.hypha.dev/v1/requestauthentications',
  },
  {
    kind: 'PeerAuthentication',
    apiVersion: 'security.hypha.dev/v1',
    path: '/apis/security.hypha.dev/v1/peerauthentications',
  },
  {
    kind: 'TrafficPolicy',
    apiVersion: 'traffic.hypha.dev/v1alpha1',
    path: '/apis/traffic.hypha.dev/v1alpha1/trafficpolicies',
  },
  {
    kind: 'ServiceEntry',
    apiVersion: 'networking.hypha.dev/v1',
    path: '/apis/networking.hypha.dev/v1/serviceentries',
  },
  {
    kind: 'MeshConfig',
    apiVersion: 'networking.hypha.dev/v1',
    path: '/apis/networking.hypha.dev/v1/meshconfigs',
  },
];

/**
 * What an ingress gateway watches besides WATCHED_KINDS: TLSRoutes, TCPRoutes, and the TLS Secrets
 * of its own namespace only (certificateRefs to other namespaces are refused), so its RBAC can be a
 * Role there rather than cluster-wide read access to Secrets.
 */
export function gatewayWatchedKinds(namespace: string): WatchedKind[] {
  return [
    ...WATCHED_KINDS,
    {
      kind: 'TLSRoute',
      apiVersion: 'gateway.networking.k8s.io/v1alpha2',
      path: '/apis/gateway.networking.k8s.io/v1alpha2/tlsroutes',
    },
    {
      kind: 'TCPRoute',
      apiVersion: 'gateway.networking.k8s.io/v1alpha2',
      path: '/apis/gateway.networking.k8s.io/v1alpha2/tcproutes',
    },
    {
      kind: 'Secret',
      apiVersion: 'v1',
      path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`,
      fieldSelector: 'type=kubernetes.io/tls',
    },
  ];
}
