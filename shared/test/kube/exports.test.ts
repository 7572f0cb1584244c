// Pins the runtime surface of @hypha/shared/kube: the agent, the CA, the waypoint and the CLI build
// on these names, so a rename or removal must be a deliberate change to this list.
import * as kube from '@hypha/shared/kube';
import { expect, it } from 'vitest';

it('@hypha/shared/kube exports exactly these values', () => {
  expect(Object.keys(kube).sort()).toEqual([
    'Informer',
    'KubeConfig',
    'KubeError',
    'PORT_FORWARD_PROTOCOL',
    'PortForwardAgent',
    'PortForwardStream',
    'WATCHED_KINDS',
    'createKubeSource',
    'fetchKube',
    'gatewayWatchedKinds',
    'loadKubeConfig',
    'openPortForward',
    'stripObject',
  ]);
});
