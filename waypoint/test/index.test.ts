// Pins the public surface of @hypha/waypoint: adding or removing an export is a deliberate change.
import { expect, it } from 'vitest';
import * as waypoint from '../src/index.js';

it('exports exactly the documented runtime API', () => {
  expect(Object.keys(waypoint).sort()).toEqual(
    [
      'Cluster',
      'DEFAULT_TRAFFIC',
      'FAILURES',
      'HTTP_LABEL_NAMES',
      'NOOP_TRACING',
      'ProxyFailure',
      'RequestMetrics',
      'UpstreamPools',
      'WaypointConfigError',
      'buildRouteTable',
      'buildSnapshot',
      'compileAuthorizationPolicy',
      'compileTrafficPolicy',
      'createTracing',
      'createWaypoint',
      'evaluateAuthz',
      'findRoute',
      'hboneConnectUpstream',
      'hboneIngressHandler',
      'httpLabels',
      'indexPolicies',
      'parseDuration',
      'sniffProtocol',
      'computeRouteStatus',
      'DEFAULT_CONTROLLER_NAME',
      'createRouteStatusReporter',
    ].sort(),
  );
});
