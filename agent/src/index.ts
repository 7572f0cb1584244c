// Public surface of @hypha/agent: the node agent, for embedding and tests. The local mesh and the
// demo are @hypha/test's (the agent runs without them).
export type { Agent } from './agent/app.js';
export { startAgent } from './agent/app.js';
export type { AgentConfig, ConfigSource } from './agent/config.js';
export { DEFAULT_PORTS, parseConfigSource } from './agent/config.js';
