// `hypha gateway apply` renders the manifests/gateway template for a namespace, a name and ports.
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { readWaypointTemplate } from '../../src/daemon/render.js';
import { renderGatewayObjects } from '../../src/gateway/render.js';

const TEMPLATE = join(import.meta.dirname, '..', '..', '..', 'manifests', 'gateway', 'gateway.yaml');

it('names everything after the Gateway, exposes its listener ports on a LoadBalancer, and scopes Secrets to its namespace', async () => {
  const objects = renderGatewayObjects({
    namespace: 'shop',
    name: 'edge',
    ports: [80, 443, 8443],
    template: await readWaypointTemplate(TEMPLATE),
    // biome-ignore lint/suspicious/noExplicitAny: rendered YAML is navigated freely in assertions
  }) as unknown as Record<string, any>[];
  expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
    'ServiceAccount/edge',
    'Deployment/edge',
    'Service/edge',
    'ClusterRoleBinding/hypha-gateway-shop-edge',
    'Role/hypha-gateway-edge',
    'RoleBinding/hypha-gateway-edge',
  ]);
  const byKind = Object.fromEntries(objects.map((o) => [o.kind, o]));
  const svc = byKind.Service;
  expect(svc.spec.type).toBe('LoadBalancer');
  expect(svc.spec.ports.map((p: { port: number }) => p.port)).toEqual([80, 443, 8443]);
  expect(svc.spec.selector['gateway.networking.k8s.io/gateway-name']).toBe('edge');
  const pod = byKind.Deployment.spec.template.spec;
  expect(pod.serviceAccountName).toBe('edge');
  expect(pod.containers[0].args.slice(0, 3)).toEqual(['gateway', '--name', 'edge']);
  expect(pod.containers[0].ports.map((p: { containerPort: number }) => p.containerPort)).toEqual([
    80, 443, 8443, 15020, 15021,
  ]);
  expect(byKind.Deployment.spec.template.metadata.labels['hypha.dev/dataplane-mode']).toBe('none');
  const role = byKind.Role;
  expect(role.metadata.namespace).toBe('shop');
  expect(role.rules).toEqual(
    expect.arrayContaining([{ apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch'] }]),
  );
  expect(byKind.RoleBinding.roleRef.name).toBe('hypha-gateway-edge');
  expect(byKind.ClusterRoleBinding.subjects).toEqual([
    { kind: 'ServiceAccount', name: 'edge', namespace: 'shop' },
  ]);
  expect(byKind.ClusterRoleBinding.metadata.namespace).toBeUndefined();
});
