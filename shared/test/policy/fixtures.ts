// Test fixtures shared by the L4 and L7 policy tests: policies go through the same translation and
// compiler as on the data path.
import { parseSpiffeId } from '@hypha/shared';
import { translateObject, type Workload } from '@hypha/shared/config';
import { type CompiledAuthorizationPolicy, compileAuthorizationPolicy } from '@hypha/shared/policy';

export function compiledPolicy(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  annotations?: Record<string, string>,
): CompiledAuthorizationPolicy {
  const metadata = { namespace, name, ...(annotations !== undefined ? { annotations } : {}) };
  const r = translateObject(
    { apiVersion: 'security.hypha.dev/v1', kind: 'AuthorizationPolicy', metadata, spec },
    { source: 'test' },
  );
  if (r.status !== 'ok' || r.object.kind !== 'AuthorizationPolicy') {
    throw new Error(
      `bad test policy: ${r.status === 'invalid' ? r.errors.map((e) => e.message).join('; ') : r.status}`,
    );
  }
  return compileAuthorizationPolicy(r.object);
}

export function workload(namespace: string, name: string, labels: Record<string, string>): Workload {
  return {
    uid: `${namespace}/${name}`,
    name,
    namespace,
    serviceAccount: name,
    identity: parseSpiffeId(`spiffe://cluster.local/ns/${namespace}/sa/${name}`),
    ips: ['10.244.1.20'],
    node: 'node-a',
    labels,
    inMesh: true,
    waypoint: undefined,
    ready: true,
    mtlsMode: 'permissive',
    mtls: { base: { mode: 'permissive', rule: 'mesh default: PERMISSIVE' }, ports: undefined },
    hostNetwork: false,
    namedPorts: undefined,
  };
}
