// Public surface of @hypha/agent (used by the end-to-end tests and benchmarks).
export type { Agent } from './agent/app.js';
export { startAgent } from './agent/app.js';
export type { AgentConfig, ConfigSource } from './agent/config.js';
export { DEFAULT_PORTS, parseConfigSource } from './agent/config.js';
export type { DemoCheck, DemoResult } from './mesh/demo.js';
export { DEMO_NODES, demoConfigParams, runDemoTraffic, startDemo } from './mesh/demo.js';
export type {
  AgentProcess,
  LocalMeshOptions,
  LogEvent,
  MeshProcessExit,
  StartWaypointOptions,
  WaypointProcess,
} from './mesh/local-mesh.js';
export { LocalMesh } from './mesh/local-mesh.js';
