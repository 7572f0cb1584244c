// Translation of Kubernetes-shaped objects into the typed model. Pure: no I/O, no state, no clock.
// Both the file source and the (future) Kubernetes informer source call `translateObject` on each
// object they receive, so both accept and reject exactly the same things.
//
// Invariants:
// - Every object either becomes one ConfigObject, is ignored on purpose (kinds Hypha does not read,
//   Gateways of other classes), or yields ConfigErrors that name source, kind, namespace/name and
//   the field path. One bad object never stops the others.
// - Output records are plain data with canonical addresses (see ip.ts), so equal input gives equal
//   output and the state can diff snapshots structurally.
import { z } from 'zod';
import { authorizationRuleSchema, toAuthorizationRule } from '../policy/schema.js';
import { ConfigError, type ConfigObjectLocation } from './errors.js';
import { canonicalIp, parseCidr } from './ip.js';
import {
  type ConfigKind,
  type ConfigObject,
  type ConfigObjectKey,
  type DataplaneMode,
  DRY_RUN_ANNOTATIONS,
  type EndpointSliceObject,
  type GatewayObject,
  INGRESS_GATEWAY_CLASS,
  LABEL_DATAPLANE_MODE,
  LABEL_MTLS_MODE,
  LABEL_SERVICE_NAME,
  LABEL_USE_WAYPOINT,
  LABEL_USE_WAYPOINT_NAMESPACE,
  LABEL_WAYPOINT_FOR,
  type Labels,
  MESH_CONFIG_NAME,
  type MeshConfigObject,
  type MtlsMode,
  type PeerAuthenticationMode,
  type PodObject,
  type PolicyTargetRef,
  SERVICE_ENTRY_API_VERSION,
  type ServiceEntryEndpoint,
  type ServiceEntryObject,
  type ServiceEntryPort,
  type ServiceObject,
  type ServicePort,
  WAYPOINT_GATEWAY_CLASS,
  type WaypointBinding,
  type WaypointFor,
} from './types.js';

export interface TranslateOptions {
  /** Named in every error: a file path, or `kubernetes`. */
  source: string;
  /** 1-based document number in a multi-document file (for objects without a usable name). */
  document?: number;
  /**
   * Readiness of a pod whose status has no Ready condition. The file source says true (hand-written
   * pods rarely carry status conditions); the Kubernetes source must say false (a pod without the
   * condition has not started yet).
   */
  readyWhenConditionAbsent?: boolean;
}

export type TranslateResult =
  | { status: 'ok'; object: ConfigObject }
  | { status: 'ignored'; kind: string; reason: string }
  /** `key` is set when kind, namespace and name were readable, so a caller can keep an older version. */
  | { status: 'invalid'; errors: ConfigError[]; key: ConfigObjectKey | undefined };

// ---- small schemas shared by several kinds ----

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const dnsLabel = z
  .string()
  .max(63)
  .regex(DNS_LABEL, 'must be a DNS-1123 label (lowercase letters, digits and "-")');
const dnsSubdomain = z
  .string()
  .max(253)
  .regex(DNS_SUBDOMAIN, 'must be a DNS-1123 subdomain (lowercase letters, digits, "-" and ".")');
const labels = z.record(z.string(), z.string());
const port = z.number().int().min(1).max(65535);
const ipAddress = z.string().refine((s) => canonicalIp(s) !== undefined, { message: 'is not an IP address' });

const metadata = z.object({
  name: dnsSubdomain,
  namespace: dnsLabel.optional(),
  uid: z.string().min(1).optional(),
  labels: labels.optional(),
  deletionTimestamp: z.unknown().optional(),
});

const podSchema = z.object({
  metadata,
  spec: z
    .object({
      nodeName: z.string().optional(),
      serviceAccountName: dnsSubdomain.optional(),
      serviceAccount: dnsSubdomain.optional(),
      hostNetwork: z.boolean().optional(),
      containers: z
        .array(
          z.object({
            ports: z
              .array(z.object({ name: z.string().regex(PORT_NAME).optional(), containerPort: port }))
              .optional(),
          }),
        )
        .optional(),
    })
    .optional(),
  status: z
    .object({
      phase: z.string().optional(),
      podIP: ipAddress.optional(),
      podIPs: z.array(z.object({ ip: ipAddress })).optional(),
      conditions: z.array(z.object({ type: z.string(), status: z.string() })).optional(),
    })
    .optional(),
});

const namespaceSchema = z.object({ metadata: metadata.extend({ name: dnsLabel }) });

const serviceSchema = z.object({
  metadata,
  spec: z.object({
    clusterIP: z.string().optional(),
    clusterIPs: z.array(z.string()).optional(),
    selector: labels.optional(),
    ports: z
      .array(
        z.object({
          name: z.string().optional(),
          port,
          targetPort: z.union([port, z.string().min(1)]).optional(),
          protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
          appProtocol: z.string().optional(),
        }),
      )
      .optional(),
  }),
});

const endpointSliceSchema = z.object({
  metadata,
  addressType: z.enum(['IPv4', 'IPv6', 'FQDN']),
  endpoints: z
    .array(
      z.object({
        addresses: z.array(z.string()).min(1),
        conditions: z.object({ ready: z.boolean().nullable().optional() }).optional(),
        nodeName: z.string().optional(),
        targetRef: z.object({ kind: z.string().optional(), name: z.string().optional() }).optional(),
      }),
    )
    .nullable()
    .optional(),
  ports: z
    .array(z.object({ name: z.string().nullable().optional(), port: port.nullable().optional() }))
    .nullable()
    .optional(),
});

const addressList = z.array(z.object({ type: z.string().optional(), value: z.string() })).optional();
const gatewaySchema = z.object({
  metadata,
  spec: z.object({
    gatewayClassName: z.string(),
    listeners: z
      .array(
        z.object({
          name: z.string(),
          port,
          protocol: z.string(),
          hostname: z.string().optional(),
          tls: z
            .object({
              mode: z.string().optional(),
              certificateRefs: z
                .array(
                  z.object({
                    group: z.string().optional(),
                    kind: z.string().optional(),
                    name: z.string().min(1),
                    namespace: z.string().optional(),
                  }),
                )
                .optional(),
            })
            .optional(),
          allowedRoutes: z
            .object({ namespaces: z.object({ from: z.string().optional() }).optional() })
            .optional(),
        }),
      )
      .optional(),
    addresses: addressList,
  }),
  status: z.object({ addresses: addressList }).optional(),
});

const targetRef = z.object({
  group: z.string().optional(),
  kind: z.string().min(1),
  name: z.string().min(1),
  namespace: z.string().optional(),
});
const parentRef = targetRef.extend({ kind: z.string().min(1).optional() });

const authorizationPolicySchema = z.object({
  metadata: metadata.extend({ annotations: z.record(z.string(), z.unknown()).optional() }),
  spec: z
    .object({
      selector: z.object({ matchLabels: labels.optional() }).optional(),
      targetRef: targetRef.optional(),
      targetRefs: z.array(targetRef).optional(),
      action: z.enum(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']).optional(),
      provider: z.unknown().optional(),
      rules: z.array(authorizationRuleSchema).nullable().optional(),
    })
    .optional(),
});

const rawSpecSchema = z.object({ metadata, spec: z.record(z.string(), z.unknown()) });

// Secrets: only kubernetes.io/tls ones are read (ingress gateway certificates); values are base64.
const secretSchema = z.object({
  metadata,
  type: z.string().optional(),
  data: z.record(z.string(), z.string()).optional(),
});

const peerAuthMode = z.enum(['STRICT', 'PERMISSIVE', 'DISABLE', 'UNSET']);
const peerAuthenticationSchema = z.object({
  metadata: metadata.extend({ creationTimestamp: z.string().optional() }),
  spec: z
    .object({
      selector: z.object({ matchLabels: labels.optional() }).nullable().optional(),
      mtls: z.object({ mode: peerAuthMode.optional() }).nullable().optional(),
      portLevelMtls: z
        .record(z.string(), z.object({ mode: peerAuthMode.optional() }))
        .nullable()
        .optional(),
    })
    .strict()
    .nullable()
    .optional(),
});

const SE_PROTOCOLS = ['HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'TLS', 'TCP', 'MONGO'] as const;
const serviceEntrySchema = z.object({
  metadata: metadata.extend({ creationTimestamp: z.string().optional() }),
  spec: z
    .object({
      hosts: z.array(z.string()).min(1, 'must name at least one host'),
      addresses: z.array(z.string()).optional(),
      ports: z
        .array(
          z
            .object({
              number: port,
              protocol: z.enum(SE_PROTOCOLS).optional(),
              name: z
                .string()
                .regex(PORT_NAME, 'must be a port name (lowercase letters, digits, "-")')
                .optional(),
              targetPort: port.optional(),
            })
            .strict(),
        )
        .min(1, 'must list at least one port'),
      resolution: z.enum(['DNS', 'STATIC', 'NONE']).optional(),
      location: z.enum(['MESH_EXTERNAL', 'MESH_INTERNAL']).optional(),
      endpoints: z
        .array(
          z
            .object({
              address: z.string().min(1),
              ports: z.record(z.string(), port).optional(),
              labels: labels.optional(),
              network: z.string().optional(),
              locality: z.string().optional(),
              weight: z.number().int().min(0).optional(),
              serviceAccount: z.string().optional(),
            })
            .strict(),
        )
        .optional(),
      exportTo: z.array(z.string()).optional(),
      workloadSelector: z.unknown().optional(),
      subjectAltNames: z.array(z.string()).optional(),
    })
    .strict(),
});

const meshConfigSchema = z.object({
  metadata,
  spec: z.record(z.string(), z.unknown()).nullable().optional(),
});

// ---- kinds ----

type Build = (raw: unknown, ctx: BuildContext) => ConfigObject | Ignored;
interface Ignored {
  ignored: string;
}
interface KindSpec {
  apiVersions: readonly string[];
  namespaced: boolean;
  build: Build;
}

class FieldProblem extends Error {
  readonly field: string;
  readonly detail: string;
  constructor(field: string, detail: string) {
    super(detail);
    this.field = field;
    this.detail = detail;
  }
}

interface BuildContext {
  readyWhenConditionAbsent: boolean;
}

const KINDS: Readonly<Record<ConfigKind, KindSpec>> = {
  Namespace: { apiVersions: ['v1'], namespaced: false, build: buildNamespace },
  Pod: { apiVersions: ['v1'], namespaced: true, build: buildPod },
  Service: { apiVersions: ['v1'], namespaced: true, build: buildService },
  EndpointSlice: { apiVersions: ['discovery.k8s.io/v1'], namespaced: true, build: buildEndpointSlice },
  Gateway: {
    apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
    namespaced: true,
    build: buildGateway,
  },
  AuthorizationPolicy: {
    apiVersions: ['security.hypha.dev/v1'],
    namespaced: true,
    build: buildAuthorizationPolicy,
  },
  TrafficPolicy: {
    apiVersions: ['traffic.hypha.dev/v1alpha1'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'TrafficPolicy'),
  },
  RequestAuthentication: {
    apiVersions: ['security.hypha.dev/v1'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'RequestAuthentication'),
  },
  PeerAuthentication: {
    apiVersions: ['security.hypha.dev/v1'],
    namespaced: true,
    build: buildPeerAuthentication,
  },
  HTTPRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'HTTPRoute'),
  },
  GRPCRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1alpha2'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'GRPCRoute'),
  },
  TLSRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1alpha2', 'gateway.networking.k8s.io/v1alpha3'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'TLSRoute'),
  },
  TCPRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1alpha2'],
    namespaced: true,
    build: (raw) => buildRaw(raw, 'TCPRoute'),
  },
  Secret: { apiVersions: ['v1'], namespaced: true, build: buildTlsSecret },
  ServiceEntry: { apiVersions: [SERVICE_ENTRY_API_VERSION], namespaced: true, build: buildServiceEntry },
  MeshConfig: { apiVersions: [SERVICE_ENTRY_API_VERSION], namespaced: true, build: buildMeshConfig },
};

/** Kinds that commonly sit in the same manifests (e.g. `hypha waypoint apply --print`); skipped quietly. */
const IGNORED_KINDS: ReadonlySet<string> = new Set([
  'ServiceAccount',
  'Deployment',
  'DaemonSet',
  'StatefulSet',
  'ReplicaSet',
  'Job',
  'CronJob',
  'ConfigMap',
  'Endpoints',
  'Role',
  'RoleBinding',
  'ClusterRole',
  'ClusterRoleBinding',
  'NetworkPolicy',
  'CustomResourceDefinition',
  'Ingress',
  'IngressClass',
  'GatewayClass',
  'ReferenceGrant',
  'PodDisruptionBudget',
  'HorizontalPodAutoscaler',
  'PersistentVolumeClaim',
  'LimitRange',
  'ResourceQuota',
  'PriorityClass',
  'Node',
  'Event',
  'Lease',
  'MutatingWebhookConfiguration',
  'ValidatingWebhookConfiguration',
  'Kustomization',
]);

export function isConfigKind(kind: string): kind is ConfigKind {
  return Object.hasOwn(KINDS, kind);
}

/** Expands `kind: List` objects (kubectl output) and arrays into their items; anything else is returned as is. */
export function flattenLists(raw: unknown): unknown[] {
  // A top-level array (e.g. a JSON file holding several objects) is a list too.
  if (Array.isArray(raw)) return raw.flatMap(flattenLists);
  if (
    isRecord(raw) &&
    typeof raw.kind === 'string' &&
    raw.kind.endsWith('List') &&
    Array.isArray(raw.items)
  ) {
    return raw.items.flatMap(flattenLists);
  }
  return [raw];
}

/** Validates one Kubernetes-shaped object into a ConfigObject. Never throws. */
export function translateObject(raw: unknown, options: TranslateOptions): TranslateResult {
  const where: ConfigObjectLocation = { source: options.source, document: options.document };
  if (!isRecord(raw)) {
    return invalid(
      new ConfigError('NOT_AN_OBJECT', where, '', 'expected a mapping with apiVersion and kind'),
    );
  }
  const kind = raw.kind;
  const meta = isRecord(raw.metadata) ? raw.metadata : {};
  if (typeof meta.name === 'string') where.name = meta.name;
  if (typeof kind !== 'string' || kind === '') {
    return invalid(new ConfigError('NOT_AN_OBJECT', where, 'kind', 'missing: every object needs a kind'));
  }
  where.kind = kind;
  if (!isConfigKind(kind)) {
    if (IGNORED_KINDS.has(kind)) return { status: 'ignored', kind, reason: 'kind not used by the mesh' };
    return invalid(
      new ConfigError(
        'UNKNOWN_KIND',
        where,
        'kind',
        `unknown kind "${kind}"; Hypha reads ${Object.keys(KINDS).join(', ')}`,
      ),
    );
  }
  const spec = KINDS[kind];
  if (spec.namespaced) where.namespace = typeof meta.namespace === 'string' ? meta.namespace : 'default';
  const key: ConfigObjectKey | undefined =
    typeof meta.name === 'string' ? { kind, namespace: where.namespace ?? '', name: meta.name } : undefined;
  if (typeof raw.apiVersion !== 'string' || !spec.apiVersions.includes(raw.apiVersion)) {
    const got = typeof raw.apiVersion === 'string' ? `"${raw.apiVersion}"` : 'missing';
    return invalid(
      new ConfigError(
        'WRONG_API_VERSION',
        where,
        'apiVersion',
        `${got}; ${kind} must use ${spec.apiVersions.map((v) => `"${v}"`).join(' or ')}`,
      ),
      key,
    );
  }
  try {
    const built = spec.build(raw, { readyWhenConditionAbsent: options.readyWhenConditionAbsent ?? true });
    if ('ignored' in built) return { status: 'ignored', kind, reason: built.ignored };
    return { status: 'ok', object: built };
  } catch (err) {
    if (err instanceof z.ZodError) {
      const errors = err.issues.map(
        (issue) =>
          new ConfigError('INVALID_OBJECT', where, formatPath(issue.path), describeIssue(issue, raw)),
      );
      return { status: 'invalid', errors, key };
    }
    if (err instanceof FieldProblem) {
      return invalid(new ConfigError('INVALID_OBJECT', where, err.field, err.detail), key);
    }
    throw err;
  }
}

function invalid(error: ConfigError, key?: ConfigObjectKey): TranslateResult {
  return { status: 'invalid', errors: [error], key };
}

// ---- builders ----

function objectMeta(m: z.infer<typeof metadata>): { name: string; namespace: string; labels: Labels } {
  return { name: m.name, namespace: m.namespace ?? 'default', labels: m.labels ?? {} };
}

function buildNamespace(raw: unknown): ConfigObject {
  const { metadata: m } = namespaceSchema.parse(raw);
  const l = m.labels ?? {};
  return {
    kind: 'Namespace',
    name: m.name,
    labels: l,
    dataplaneMode: dataplaneModeLabel(l),
    mtlsMode: mtlsModeLabel(l),
    waypoint: waypointLabel(l, m.name),
  };
}

function buildPod(raw: unknown, ctx: BuildContext): ConfigObject {
  const p = podSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(p.metadata);
  const ips: string[] = [];
  for (const ip of [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)]) {
    if (ip === undefined) continue;
    const c = canonicalIp(ip)!;
    if (!ips.includes(c)) ips.push(c);
  }
  let namedPorts: Record<string, number> | undefined;
  for (const c of p.spec?.containers ?? []) {
    for (const cp of c.ports ?? []) {
      if (cp.name === undefined) continue;
      namedPorts ??= {};
      namedPorts[cp.name] = cp.containerPort;
    }
  }
  const phase = p.status?.phase;
  const condition = p.status?.conditions?.find((c) => c.type === 'Ready');
  const ready =
    p.metadata.deletionTimestamp === undefined &&
    phase !== 'Succeeded' &&
    phase !== 'Failed' &&
    (condition === undefined ? ctx.readyWhenConditionAbsent : condition.status === 'True');
  const pod: PodObject = {
    kind: 'Pod',
    uid: p.metadata.uid ?? `${namespace}/${name}`,
    name,
    namespace,
    labels: l,
    serviceAccount: p.spec?.serviceAccountName ?? p.spec?.serviceAccount ?? 'default',
    node: p.spec?.nodeName ?? '',
    ips,
    ready,
    hostNetwork: p.spec?.hostNetwork ?? false,
    dataplaneMode: dataplaneModeLabel(l),
    waypoint: waypointLabel(l, namespace),
    namedPorts,
  };
  return pod;
}

function buildService(raw: unknown): ConfigObject {
  const s = serviceSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(s.metadata);
  const vips: string[] = [];
  const candidates: [string, string][] = [];
  if (s.spec.clusterIP !== undefined) candidates.push(['spec.clusterIP', s.spec.clusterIP]);
  s.spec.clusterIPs?.forEach((ip, i) => {
    candidates.push([`spec.clusterIPs[${i}]`, ip]);
  });
  for (const [field, value] of candidates) {
    if (value === '' || value === 'None') continue;
    const c = canonicalIp(value);
    if (c === undefined)
      throw new FieldProblem(field, `"${value}" is not an IP address (or "None" for headless)`);
    if (!vips.includes(c)) vips.push(c);
  }
  const ports: ServicePort[] = [];
  (s.spec.ports ?? []).forEach((p, i) => {
    const protocol = p.protocol ?? 'TCP';
    if (ports.some((q) => q.port === p.port && q.protocol === protocol)) {
      throw new FieldProblem(`spec.ports[${i}].port`, `port ${p.port}/${protocol} is listed twice`);
    }
    let target: number | string = p.targetPort ?? p.port;
    // Kubernetes would reject a numeric string; reading it as the number is what the writer meant.
    if (typeof target === 'string' && /^\d+$/.test(target)) {
      target = Number(target);
      if (target < 1 || target > 65535) {
        throw new FieldProblem(`spec.ports[${i}].targetPort`, `${target} is not a port number (1-65535)`);
      }
    } else if (typeof target === 'string' && !PORT_NAME.test(target)) {
      throw new FieldProblem(
        `spec.ports[${i}].targetPort`,
        `"${target}" is neither a port number nor a port name`,
      );
    }
    ports.push({ port: p.port, targetPort: target, name: p.name, protocol, appProtocol: p.appProtocol });
  });
  const svc: ServiceObject = {
    kind: 'Service',
    name,
    namespace,
    labels: l,
    vips,
    ports,
    selector:
      s.spec.selector !== undefined && Object.keys(s.spec.selector).length > 0 ? s.spec.selector : undefined,
    waypoint: waypointLabel(l, namespace),
  };
  return svc;
}

function buildEndpointSlice(raw: unknown): ConfigObject | Ignored {
  const s = endpointSliceSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(s.metadata);
  if (s.addressType === 'FQDN') return { ignored: 'FQDN EndpointSlices are not used by the mesh' };
  const serviceName = l[LABEL_SERVICE_NAME];
  if (serviceName === undefined) {
    throw new FieldProblem(
      `metadata.labels["${LABEL_SERVICE_NAME}"]`,
      'missing: it names the Service of this slice',
    );
  }
  const endpoints: EndpointSliceObject['endpoints'][number][] = [];
  (s.endpoints ?? []).forEach((e, i) => {
    const addresses = e.addresses.map((a, j) => {
      const c = canonicalIp(a);
      if (c === undefined)
        throw new FieldProblem(`endpoints[${i}].addresses[${j}]`, `"${a}" is not an IP address`);
      return c;
    });
    endpoints.push({
      addresses,
      // Kubernetes: a missing ready condition means ready.
      ready: e.conditions?.ready ?? true,
      node: e.nodeName,
      podName: e.targetRef?.kind === 'Pod' ? e.targetRef.name : undefined,
    });
  });
  const ports = (s.ports ?? []).flatMap((p) =>
    p.port == null ? [] : [{ name: p.name ?? '', port: p.port }],
  );
  return {
    kind: 'EndpointSlice',
    name,
    namespace,
    serviceName,
    addressType: s.addressType,
    endpoints,
    ports,
  };
}

function buildGateway(raw: unknown): ConfigObject | Ignored {
  const g = gatewaySchema.parse(raw);
  const className = g.spec.gatewayClassName;
  if (className !== WAYPOINT_GATEWAY_CLASS && className !== INGRESS_GATEWAY_CLASS) {
    return { ignored: `gatewayClassName is neither ${WAYPOINT_GATEWAY_CLASS} nor ${INGRESS_GATEWAY_CLASS}` };
  }
  const { name, namespace, labels: l } = objectMeta(g.metadata);
  const addresses: string[] = [];
  const lists: [string, typeof g.spec.addresses][] = [
    ['spec.addresses', g.spec.addresses],
    ['status.addresses', g.status?.addresses],
  ];
  for (const [field, list] of lists) {
    list?.forEach((a, i) => {
      if (a.type !== undefined && a.type !== 'IPAddress') return;
      const c = canonicalIp(a.value);
      if (c === undefined)
        throw new FieldProblem(`${field}[${i}].value`, `"${a.value}" is not an IP address`);
      if (!addresses.includes(c)) addresses.push(c);
    });
  }
  const forLabel = l[LABEL_WAYPOINT_FOR];
  let waypointFor: WaypointFor = 'service';
  if (forLabel !== undefined) {
    if (forLabel !== 'service' && forLabel !== 'workload' && forLabel !== 'all' && forLabel !== 'none') {
      throw new FieldProblem(
        `metadata.labels["${LABEL_WAYPOINT_FOR}"]`,
        `"${forLabel}" must be one of service, workload, all, none`,
      );
    }
    waypointFor = forLabel;
  }
  const gw: GatewayObject = {
    kind: 'Gateway',
    name,
    namespace,
    labels: l,
    waypointFor,
    addresses,
    listeners: g.spec.listeners ?? [],
    gatewayClassName: className,
  };
  return gw;
}

function buildTlsSecret(raw: unknown): ConfigObject | Ignored {
  const s = secretSchema.parse(raw);
  if (s.type !== 'kubernetes.io/tls') return { ignored: 'only Secrets of type kubernetes.io/tls are read' };
  const { name, namespace, labels: l } = objectMeta(s.metadata);
  // Never echo a value in an error: they are key material.
  const pem = (key: 'tls.crt' | 'tls.key', marker: string): string => {
    const v = s.data?.[key];
    if (v === undefined) throw new FieldProblem(`data["${key}"]`, 'is missing');
    const text = Buffer.from(v, 'base64').toString('utf8');
    if (!text.includes(marker)) throw new FieldProblem(`data["${key}"]`, 'is not base64 of a PEM block');
    return text;
  };
  return {
    kind: 'Secret',
    name,
    namespace,
    labels: l,
    certificate: pem('tls.crt', '-----BEGIN CERTIFICATE-----'),
    privateKey: pem('tls.key', 'PRIVATE KEY-----'),
  };
}

function buildAuthorizationPolicy(raw: unknown): ConfigObject {
  const p = authorizationPolicySchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(p.metadata);
  const spec = p.spec ?? {};
  if (spec.action === 'CUSTOM' || spec.provider !== undefined) {
    throw new FieldProblem(
      spec.action === 'CUSTOM' ? 'spec.action' : 'spec.provider',
      'CUSTOM actions (external authorizers) are not supported; use ALLOW, DENY or AUDIT',
    );
  }
  const refs = [...(spec.targetRef !== undefined ? [spec.targetRef] : []), ...(spec.targetRefs ?? [])];
  if (refs.length > 0 && spec.selector !== undefined) {
    throw new FieldProblem(
      spec.targetRefs !== undefined ? 'spec.targetRefs' : 'spec.targetRef',
      'cannot be combined with spec.selector: use selector for L4 (agent) or targetRefs for L7 (waypoint)',
    );
  }
  const targetRefs: PolicyTargetRef[] = refs.map((r) => ({
    group: r.group ?? '',
    kind: r.kind,
    name: r.name,
    namespace: r.namespace,
  }));
  const rules = spec.rules == null ? undefined : spec.rules.map(toAuthorizationRule);
  const matchLabels = spec.selector?.matchLabels;
  return {
    kind: 'AuthorizationPolicy',
    name,
    namespace,
    labels: l,
    action: spec.action ?? 'ALLOW',
    selector: matchLabels !== undefined && Object.keys(matchLabels).length > 0 ? matchLabels : undefined,
    targetRefs,
    rules,
    ...(dryRunOf(p.metadata.annotations) ? { dryRun: true } : {}),
  };
}

function buildPeerAuthentication(raw: unknown): ConfigObject {
  const p = peerAuthenticationSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(p.metadata);
  const spec = p.spec ?? {};
  let portLevel: Record<string, PeerAuthenticationMode> | undefined;
  for (const [key, value] of Object.entries(spec.portLevelMtls ?? {})) {
    const n = /^[0-9]{1,5}$/.test(key) ? Number(key) : 0;
    if (n < 1 || n > 65535) {
      throw new FieldProblem(
        `spec.portLevelMtls[${JSON.stringify(key)}]`,
        'must be a port number from 1 to 65535 (the workload port, not the Service port)',
      );
    }
    if (value.mode === undefined) {
      throw new FieldProblem(
        `spec.portLevelMtls[${JSON.stringify(key)}].mode`,
        'missing: say STRICT, PERMISSIVE, DISABLE or UNSET',
      );
    }
    portLevel ??= {};
    portLevel[String(n)] = value.mode;
  }
  const matchLabels = spec.selector?.matchLabels;
  return {
    kind: 'PeerAuthentication',
    name,
    namespace,
    labels: l,
    created: p.metadata.creationTimestamp,
    selector: matchLabels !== undefined && Object.keys(matchLabels).length > 0 ? matchLabels : undefined,
    mode: spec.mtls?.mode,
    portLevel,
  };
}

/** A host of a ServiceEntry: a DNS name, or `*.` followed by one (any name below it). */
const SE_HOST = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function buildServiceEntry(raw: unknown): ConfigObject {
  const e = serviceEntrySchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(e.metadata);
  const spec = e.spec;
  const resolution = spec.resolution ?? 'NONE';
  const hosts: string[] = [];
  spec.hosts.forEach((h, i) => {
    const host = h.endsWith('.') ? h.slice(0, -1) : h;
    if (host === '*') {
      throw new FieldProblem(
        `spec.hosts[${i}]`,
        '"*" would match every name; write "*.domain" for a wildcard',
      );
    }
    if (host.length > 253 || !SE_HOST.test(host)) {
      throw new FieldProblem(
        `spec.hosts[${i}]`,
        `"${h}" must be a lower-case DNS name, optionally starting with "*." (got it as written)`,
      );
    }
    if (canonicalIp(host) !== undefined) {
      throw new FieldProblem(`spec.hosts[${i}]`, `"${h}" is an IP address; put addresses in spec.addresses`);
    }
    if (hosts.includes(host)) throw new FieldProblem(`spec.hosts[${i}]`, `"${h}" is listed twice`);
    if (host.startsWith('*.') && resolution === 'DNS' && (spec.endpoints ?? []).length === 0) {
      throw new FieldProblem(
        `spec.hosts[${i}]`,
        `the wildcard "${h}" cannot be resolved by DNS: give spec.endpoints, or use resolution NONE`,
      );
    }
    hosts.push(host);
  });
  const addresses: string[] = [];
  (spec.addresses ?? []).forEach((a, i) => {
    const ip = canonicalIp(a);
    const cidr = ip === undefined ? parseCidr(a) : undefined;
    if (ip === undefined && cidr === undefined) {
      throw new FieldProblem(`spec.addresses[${i}]`, `"${a}" is neither an IP address nor a CIDR`);
    }
    // A /32 (/128) block is one address: stored as the address, so DNS can answer it.
    const full = cidr !== undefined && cidr.prefix === (cidr.family === 4 ? 32 : 128);
    const value = ip ?? (full ? cidr!.text.split('/')[0]! : cidr!.text);
    if (!addresses.includes(value)) addresses.push(value);
  });
  const ports: ServiceEntryPort[] = [];
  spec.ports.forEach((p, i) => {
    if (ports.some((q) => q.number === p.number)) {
      throw new FieldProblem(`spec.ports[${i}].number`, `port ${p.number} is listed twice`);
    }
    if (p.name !== undefined && ports.some((q) => q.name === p.name)) {
      throw new FieldProblem(`spec.ports[${i}].name`, `port name "${p.name}" is used twice`);
    }
    ports.push({ number: p.number, protocol: p.protocol ?? 'TCP', name: p.name, targetPort: p.targetPort });
  });
  const endpoints: ServiceEntryEndpoint[] = [];
  (spec.endpoints ?? []).forEach((ep, i) => {
    const field = `spec.endpoints[${i}]`;
    if (resolution === 'NONE') {
      throw new FieldProblem(
        'spec.endpoints',
        'must be empty with resolution NONE (traffic goes where the client sent it)',
      );
    }
    let address = canonicalIp(ep.address);
    if (address === undefined) {
      if (resolution === 'STATIC') {
        throw new FieldProblem(
          `${field}.address`,
          `"${ep.address}" must be an IP address with resolution STATIC`,
        );
      }
      const host = ep.address.toLowerCase();
      if (!DNS_SUBDOMAIN.test(host)) {
        throw new FieldProblem(
          `${field}.address`,
          `"${ep.address}" is neither an IP address nor a host name`,
        );
      }
      address = host;
    }
    for (const portName of Object.keys(ep.ports ?? {})) {
      if (!ports.some((p) => p.name === portName)) {
        throw new FieldProblem(
          `${field}.ports[${JSON.stringify(portName)}]`,
          `names no port of spec.ports (${ports.map((p) => p.name ?? p.number).join(', ')})`,
        );
      }
    }
    endpoints.push({ address, ports: ep.ports, labels: ep.labels ?? {} });
  });
  if (resolution === 'STATIC' && endpoints.length === 0) {
    throw new FieldProblem('spec.endpoints', 'missing: resolution STATIC sends traffic to these addresses');
  }
  const entry: ServiceEntryObject = {
    kind: 'ServiceEntry',
    name,
    namespace,
    labels: l,
    hosts,
    addresses,
    ports,
    resolution,
    location: spec.location ?? 'MESH_EXTERNAL',
    endpoints,
    waypoint: waypointLabel(l, namespace),
    created: e.metadata.creationTimestamp,
  };
  return entry;
}

/**
 * The mesh-wide MeshConfig. Its metadata is validated like any object's, but a problem in its spec
 * does not skip it: the object then says REGISTRY_ONLY with the problems listed (fail closed: a
 * typo in the mesh's egress setting must not open egress).
 */
function buildMeshConfig(raw: unknown): ConfigObject {
  const m = meshConfigSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(m.metadata);
  if (name !== MESH_CONFIG_NAME) {
    throw new FieldProblem(
      'metadata.name',
      `"${name}": the mesh reads one MeshConfig, named "${MESH_CONFIG_NAME}" in the root namespace (hypha-system)`,
    );
  }
  const problems: string[] = [];
  let mode: MeshConfigObject['outboundTrafficPolicy'];
  const spec = m.spec ?? {};
  for (const key of Object.keys(spec)) {
    if (key !== 'outboundTrafficPolicy')
      problems.push(`field spec.${key}: unknown (Hypha reads outboundTrafficPolicy)`);
  }
  const otp = spec.outboundTrafficPolicy;
  if (otp !== undefined && otp !== null) {
    const v = isRecord(otp) ? otp.mode : undefined;
    if (!isRecord(otp)) problems.push('field spec.outboundTrafficPolicy: must be a mapping with a mode');
    else if (v === 'ALLOW_ANY' || v === 'REGISTRY_ONLY') mode = v;
    else if (v !== undefined) {
      problems.push(
        `field spec.outboundTrafficPolicy.mode: must be one of "ALLOW_ANY", "REGISTRY_ONLY" (got ${preview(v)})`,
      );
    }
    for (const key of isRecord(otp) ? Object.keys(otp) : []) {
      if (key !== 'mode')
        problems.push(`field spec.outboundTrafficPolicy.${key}: unknown (Hypha reads mode)`);
    }
  }
  const object: MeshConfigObject = {
    kind: 'MeshConfig',
    name,
    namespace,
    labels: l,
    outboundTrafficPolicy: problems.length > 0 ? 'REGISTRY_ONLY' : mode,
    problems,
  };
  return object;
}

/** `istio.io/dry-run` (Istio's spelling) or `hypha.dev/dry-run`: "true" or "false". */
function dryRunOf(annotations: Readonly<Record<string, unknown>> | undefined): boolean {
  let dryRun = false;
  for (const key of DRY_RUN_ANNOTATIONS) {
    const v = annotations?.[key];
    if (v === undefined) continue;
    if (v !== 'true' && v !== 'false') {
      throw new FieldProblem(
        `metadata.annotations["${key}"]`,
        `${JSON.stringify(v)} must be "true" or "false"`,
      );
    }
    if (v === 'true') dryRun = true;
  }
  return dryRun;
}

function buildRaw<
  K extends 'TrafficPolicy' | 'RequestAuthentication' | 'HTTPRoute' | 'GRPCRoute' | 'TLSRoute' | 'TCPRoute',
>(raw: unknown, kind: K): ConfigObject {
  const r = rawSpecSchema.parse(raw);
  const { name, namespace, labels: l } = objectMeta(r.metadata);
  const policy = kind === 'TrafficPolicy' || kind === 'RequestAuthentication';
  const field = policy ? 'targetRefs' : 'parentRefs';
  const schema = z.object({
    spec: z.object({ [field]: z.array(policy ? targetRef : parentRef).optional() }),
  });
  const refs = (schema.parse(raw).spec[field] ?? []) as z.infer<typeof parentRef>[];
  return {
    kind,
    name,
    namespace,
    labels: l,
    refs: refs.map((ref) => ({
      group: ref.group ?? (policy ? '' : 'gateway.networking.k8s.io'),
      kind: ref.kind ?? 'Gateway',
      name: ref.name,
      namespace: ref.namespace,
    })),
    spec: r.spec,
  } as ConfigObject;
}

// ---- labels of the user-facing API ----

function dataplaneModeLabel(l: Labels): DataplaneMode | undefined {
  const v = l[LABEL_DATAPLANE_MODE];
  if (v === undefined) return undefined;
  if (v === 'ambient' || v === 'none') return v;
  throw new FieldProblem(`metadata.labels["${LABEL_DATAPLANE_MODE}"]`, `"${v}" must be "ambient" or "none"`);
}

function mtlsModeLabel(l: Labels): MtlsMode | undefined {
  const v = l[LABEL_MTLS_MODE];
  if (v === undefined) return undefined;
  if (v === 'strict' || v === 'permissive') return v;
  throw new FieldProblem(`metadata.labels["${LABEL_MTLS_MODE}"]`, `"${v}" must be "strict" or "permissive"`);
}

function waypointLabel(l: Labels, ownNamespace: string): WaypointBinding | undefined {
  const v = l[LABEL_USE_WAYPOINT];
  if (v === undefined) return undefined;
  if (v === 'none') return 'none';
  if (!DNS_SUBDOMAIN.test(v)) {
    throw new FieldProblem(
      `metadata.labels["${LABEL_USE_WAYPOINT}"]`,
      `"${v}" must be a Gateway name or "none"`,
    );
  }
  const ns = l[LABEL_USE_WAYPOINT_NAMESPACE] ?? ownNamespace;
  if (!DNS_LABEL.test(ns)) {
    throw new FieldProblem(
      `metadata.labels["${LABEL_USE_WAYPOINT_NAMESPACE}"]`,
      `"${ns}" is not a namespace name`,
    );
  }
  return { namespace: ns, name: v };
}

// ---- error text ----

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = String(seg);
      out += /^[A-Za-z_][A-Za-z0-9_]*$/.test(s) ? (out === '' ? s : `.${s}`) : `[${JSON.stringify(s)}]`;
    }
  }
  return out;
}

function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string {
  const value = valueAt(raw, issue.path);
  const shown = value === undefined ? '' : ` (got ${preview(value)})`;
  if (issue.code === 'invalid_type' && value === undefined) return `missing: expected ${issue.expected}`;
  if (issue.code === 'invalid_value') {
    return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}${shown}`;
  }
  if (issue.code === 'invalid_union') return `has the wrong type${shown}`;
  return `${issue.message}${shown}`;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = raw;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/**
 * The offending value as it would read in the file, cut short. A value nested thousands of levels
 * deep (or one that refers to itself through YAML aliases) cannot be serialized; the error then
 * says what it is instead of failing the whole translation.
 */
function preview(value: unknown): string {
  try {
    return truncate(JSON.stringify(value));
  } catch {
    return Array.isArray(value) ? 'a list nested too deeply to show' : 'a mapping nested too deeply to show';
  }
}

function truncate(s: string | undefined): string {
  if (s === undefined) return 'undefined';
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
