// The objects `hypha waypoint apply` writes: Gateway (class hypha-waypoint, listener mesh 15008
// HBONE), ServiceAccount, Deployment running `hypha waypoint` and its Service, and the two RBAC
// bindings without which the waypoint's ServiceAccount can read nothing (ClusterRoleBinding to
// hypha-waypoint; RoleBinding to hypha-waypoint-status in its own namespace), built from the
// manifests/waypoint template so the template stays the single source of truth. Also the edit of
// a config YAML file (the file source) that appends or replaces them.
import { readFile } from 'node:fs/promises';
import { parseAllDocuments, stringify } from 'yaml';

export type WaypointFor = 'service' | 'workload' | 'all';

export interface RenderWaypointOptions {
  namespace: string;
  name: string;
  for: WaypointFor;
  /** Template objects (manifests/waypoint rendered); the built-in copy when absent. */
  template: readonly Record<string, unknown>[];
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

const KINDS = ['Gateway', 'ServiceAccount', 'Deployment', 'Service'] as const;
/** Rendered when the template has them (it does; an older custom template may not). */
const BINDING_KINDS = ['ClusterRoleBinding', 'RoleBinding'] as const;
const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function validateName(value: string, what: string): string | undefined {
  if (value.length === 0 || value.length > 63 || !NAME_RE.test(value))
    return `${what} "${value}" is not a valid name (lowercase letters, digits and '-', at most 63)`;
  return undefined;
}

/** The objects for Gateway `name` in `namespace`, from the template (whose defaults are waypoint/default). */
export function renderWaypointObjects(opts: RenderWaypointOptions): KubeObject[] {
  const { name, namespace } = opts;
  const out: KubeObject[] = [];
  for (const kind of KINDS) {
    const t = opts.template.find((o) => o.kind === kind);
    if (t === undefined) throw new Error(`the waypoint template has no ${kind}`);
    const o = structuredClone(t) as unknown as KubeObject;
    o.metadata.name = name;
    o.metadata.namespace = namespace;
    const labels = o.metadata.labels ?? {};
    if ('gateway.networking.k8s.io/gateway-name' in labels)
      labels['gateway.networking.k8s.io/gateway-name'] = name;
    if (kind === 'Gateway') labels['hypha.dev/waypoint-for'] = opts.for;
    o.metadata.labels = labels;
    if (kind === 'Deployment') {
      const spec = o.spec as {
        selector: { matchLabels: Record<string, string> };
        template: {
          metadata: { labels: Record<string, string> };
          spec: { serviceAccountName: string; containers: { args?: string[] }[] };
        };
      };
      spec.selector.matchLabels['gateway.networking.k8s.io/gateway-name'] = name;
      spec.template.metadata.labels['gateway.networking.k8s.io/gateway-name'] = name;
      spec.template.spec.serviceAccountName = name;
      for (const c of spec.template.spec.containers) {
        const args = c.args ?? [];
        const i = args.indexOf('--name');
        if (i >= 0 && i + 1 < args.length) args[i + 1] = name;
      }
    }
    if (kind === 'Service') {
      const spec = o.spec as { selector: Record<string, string> };
      spec.selector['gateway.networking.k8s.io/gateway-name'] = name;
    }
    out.push(o);
  }
  for (const kind of BINDING_KINDS) {
    const t = opts.template.find((o) => o.kind === kind);
    if (t === undefined) continue;
    const o = structuredClone(t) as unknown as KubeObject & {
      subjects?: { kind?: string; name?: string; namespace?: string }[];
    };
    if (kind === 'ClusterRoleBinding') {
      // Cluster-scoped, so the name carries the namespace to stay unique per waypoint.
      o.metadata.name = `hypha-waypoint-${namespace}-${name}`;
    } else {
      o.metadata.name = `hypha-waypoint-status-${name}`;
      o.metadata.namespace = namespace;
    }
    for (const s of o.subjects ?? []) {
      if (s.kind !== 'ServiceAccount') continue;
      s.name = name;
      s.namespace = namespace;
    }
    out.push(o);
  }
  return out;
}

/** Reads manifests/waypoint/waypoint.yaml. */
export async function readWaypointTemplate(path: string): Promise<Record<string, unknown>[]> {
  return parseYamlObjects(await readFile(path, 'utf8'), path);
}

export function parseYamlObjects(text: string, source: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: invalid YAML: ${doc.errors[0]!.message}`);
    const o = doc.toJS() as Record<string, unknown> | null;
    if (o !== null && o !== undefined) out.push(o);
  }
  return out;
}

const keyOf = (o: Record<string, unknown>) => {
  const m = (o.metadata ?? {}) as { name?: string; namespace?: string };
  return `${String(o.kind)}/${m.namespace ?? ''}/${m.name ?? ''}`;
};

/**
 * Replaces objects of the same kind/namespace/name in a multi-document YAML text and appends the
 * others; documents it does not touch are kept as they were (comments included).
 */
export function mergeIntoConfigYaml(
  text: string,
  objects: readonly KubeObject[],
): { text: string; replaced: number; added: number } {
  const docs = text.trim() === '' ? [] : parseAllDocuments(text);
  const byKey = new Map(objects.map((o) => [keyOf(o), o]));
  const parts: string[] = [];
  let replaced = 0;
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors[0]!.message}`);
    const o = doc.toJS() as Record<string, unknown> | null;
    const k = o ? keyOf(o) : undefined;
    const next = k ? byKey.get(k) : undefined;
    if (next !== undefined && k !== undefined) {
      parts.push(stringify(next));
      byKey.delete(k);
      replaced++;
    } else if (o !== null) parts.push(doc.toString().replace(/^---[^\n]*\n/, ''));
  }
  const added = byKey.size;
  for (const o of byKey.values()) parts.push(stringify(o));
  return { text: parts.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('---\n'), replaced, added };
}
