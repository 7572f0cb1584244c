// The DNS proxy's public surface, named one by one (agent/src/dns/index.ts): a new export is a
// decision, not an accident.
import { expect, it } from 'vitest';
import * as dns from '../../src/dns/index.js';

it('exports exactly the DNS proxy surface', () => {
  expect(Object.keys(dns).sort()).toEqual([
    'DEFAULT_CLUSTER_DOMAIN',
    'DEFAULT_DNS_PORT',
    'DnsCache',
    'DnsMetrics',
    'HostResolver',
    'HostResolverError',
    'MESH_TTL',
    'ServiceNameIndex',
    'UpstreamError',
    'createDnsProxy',
    'createHostLookup',
    'parseUpstream',
    'readResolvConf',
    'serviceFqdn',
    'startAgentDns',
  ]);
});
