// Public surface of the agent's DNS proxy.

export type { AgentDnsOptions } from './agent.js';
export { startAgentDns } from './agent.js';
export type { CacheLimits } from './cache.js';
export { DnsCache } from './cache.js';
export type { DnsDropReason, DnsSource } from './metrics.js';
export { DnsMetrics } from './metrics.js';
export { DEFAULT_CLUSTER_DOMAIN, ServiceNameIndex, serviceFqdn } from './names.js';
export type { HostResolverOptions } from './resolve-host.js';
export { createHostLookup, HostResolver, HostResolverError } from './resolve-host.js';
export type { DnsDebugView, DnsProxy, DnsProxyOptions, DnsRecentQuery, DnsTcpLimits } from './server.js';
export { createDnsProxy, DEFAULT_DNS_PORT, MESH_TTL } from './server.js';
export type { UpstreamErrorCode, UpstreamServer } from './upstream.js';
export { parseUpstream, readResolvConf, UpstreamError } from './upstream.js';
