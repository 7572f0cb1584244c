// The `hypha dashboard` server, loaded by the CLI verb and by `hypha demo`.
export type { AdminPoller, AdminTargetState } from './admin.js';
export type { DemoDashboardCheck } from './demo.js';
export { checkDashboard, startDemoDashboard } from './demo.js';
export type { Endpoint } from './fetch.js';
export type { Graph, GraphEdge, GraphNode, Health } from './model.js';
export { buildGraph, buildHealth, buildPolicies, buildWorkload, GRAPH_QUERIES } from './model.js';
export type { Dashboard, DashboardOptions } from './server.js';
export { startDashboard } from './server.js';
