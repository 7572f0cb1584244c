// Trims objects to what the mesh reads before the informer caches them: with 100k pods, container
// specs, env, volumes, managedFields and last-applied annotations would dominate the agent's memory.
// Keep in step with shared/src/config/translate.ts: a field it starts reading must be kept here.

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function pick(source: unknown, keys: readonly string[]): Obj | undefined {
  if (!isObj(source)) return undefined;
  const out: Obj = {};
  for (const k of keys) if (source[k] !== undefined) out[k] = source[k];
  return out;
}

const META_KEYS = [
  'name',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'labels',
  'deletionTimestamp',
];

function stripMeta(meta: unknown): Obj {
  const out = pick(meta, META_KEYS) ?? {};
  // Only Hypha's own annotations can matter to the mesh, and Istio's dry-run (AuthorizationPolicy).
  if (isObj(meta) && isObj(meta.annotations)) {
    const kept = Object.entries(meta.annotations).filter(
      ([k]) => k.includes('hypha.dev/') || k === 'istio.io/dry-run',
    );
    if (kept.length > 0) out.annotations = Object.fromEntries(kept);
  }
  return out;
}

function withCreated(stripped: unknown, meta: unknown): Obj {
  const out = isObj(stripped) ? { ...stripped } : {};
  if (isObj(meta) && typeof meta.creationTimestamp === 'string')
    out.creationTimestamp = meta.creationTimestamp;
  return out;
}

function stripPod(o: Obj): Obj {
  const spec = isObj(o.spec) ? o.spec : {};
  const containers = Array.isArray(spec.containers) ? spec.containers : [];
  const status = isObj(o.status) ? o.status : undefined;
  return {
    spec: {
      ...pick(spec, ['nodeName', 'serviceAccountName', 'serviceAccount', 'hostNetwork']),
      containers: containers.map((c) => {
        const ports = isObj(c) && Array.isArray(c.ports) ? c.ports : undefined;
        return ports ? { ports: ports.map((p) => pick(p, ['name', 'containerPort', 'protocol'])) } : {};
      }),
    },
    ...(status
      ? {
          status: {
            ...pick(status, ['phase', 'podIP', 'podIPs', 'hostIP']),
            ...(Array.isArray(status.conditions)
              ? { conditions: status.conditions.map((c) => pick(c, ['type', 'status'])) }
              : {}),
          },
        }
      : {}),
  };
}

/**
 * A copy of `raw` with apiVersion/kind set (list items of built-in types omit them) and every field
 * the mesh never reads removed.
 */
export function stripObject(raw: unknown, apiVersion: string, kind: string): Obj {
  const o = isObj(raw) ? raw : {};
  const base: Obj = { apiVersion, kind, metadata: stripMeta(o.metadata) };
  switch (kind) {
    case 'Pod':
      return { ...base, ...stripPod(o) };
    case 'Namespace':
      return isObj(o.status) ? { ...base, status: pick(o.status, ['phase']) } : base;
    case 'Service':
      return { ...base, spec: o.spec };
    case 'EndpointSlice':
      return { ...base, addressType: o.addressType, endpoints: o.endpoints, ports: o.ports };
    case 'Secret':
      // Only kubernetes.io/tls Secrets are watched (by the ingress gateway): its certificate and key.
      return { ...base, type: o.type, data: pick(o.data, ['tls.crt', 'tls.key']) };
    case 'Gateway':
      return { ...base, spec: o.spec, ...(isObj(o.status) ? { status: pick(o.status, ['addresses']) } : {}) };
    case 'PeerAuthentication':
    case 'ServiceEntry':
      // The oldest PeerAuthentication wins a tie; ServiceEntries get VIPs in creation order.
      return { ...base, metadata: withCreated(base.metadata, o.metadata), spec: o.spec };
    default:
      // Routes and Hypha policies: the spec is the configuration; their status is written, not read.
      return { ...base, spec: o.spec };
  }
}
