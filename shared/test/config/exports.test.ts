// Pins the runtime surface of @hypha/shared/config and @hypha/shared/policy: other packages build on
// these names, so a rename or removal must be a deliberate change to this list.
import * as config from '@hypha/shared/config';
import * as policy from '@hypha/shared/policy';
import { expect, it } from 'vitest';

it('@hypha/shared/config exports exactly these values', () => {
  expect(Object.keys(config).sort()).toEqual([
    'AUTO_VIP_CIDR',
    'ConfigError',
    'DEFAULT_ROOT_NAMESPACE',
    'DEMO_DEFAULTS',
    'INGRESS_GATEWAY_CLASS',
    'LABEL_DATAPLANE_MODE',
    'LABEL_GATEWAY_NAME',
    'LABEL_MTLS_MODE',
    'LABEL_SERVICE_NAME',
    'LABEL_USE_WAYPOINT',
    'LABEL_USE_WAYPOINT_NAMESPACE',
    'LABEL_WAYPOINT_FOR',
    'MESH_CONFIG_NAME',
    'SERVICE_ENTRY_API_VERSION',
    'WAYPOINT_GATEWAY_CLASS',
    'canonicalIp',
    'cidrContains',
    'configObjectKey',
    'createConfigState',
    'createFileSource',
    'demoConfigObjects',
    'demoConfigYaml',
    'flattenLists',
    'formatIp',
    'hashedVip',
    'isConfigKind',
    'mtlsFor',
    'parseCidr',
    'parseIp',
    'translateObject',
  ]);
});

it('@hypha/shared/policy exports exactly these values', () => {
  expect(Object.keys(policy).sort()).toEqual([
    'EMPTY_L7_POLICY_SET',
    'bindWaypointPolicy',
    'compileAuthorizationPolicy',
    'compileStringMatcher',
    'compileWaypointPolicy',
    'dependsOnRequest',
    'evaluateL4',
    'evaluateL7',
    'explainL4',
    'explainL7',
    'indexL7Policies',
    'matchString',
    'policyAppliesTo',
    'selectorMatches',
  ]);
});
