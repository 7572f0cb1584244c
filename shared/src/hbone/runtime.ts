/**
 * V8 flags every long-running mesh process (agent, waypoint, CA) starts with. They live here, in
 * one place; `agent/bin/hypha.js` (shebang), the image's ENTRYPOINT and every spawner of mesh
 * processes use this list, and a test holds the two non-TypeScript copies to it.
 *
 * Why: a proxy moves bytes through Buffers whose memory lives outside the V8 heap. V8 starts a
 * full Mark-Compact each time that external memory has grown by a fixed 64 MiB, so at 3 Gbit/s a
 * proxy ran ~10 Mark-Compacts a second (3-12 ms pauses, plus concurrent marking on the second
 * core), although the Buffers themselves die young and scavenges free them. Counting external
 * memory in V8's global limit, and starting that limit at 64 MiB instead of growing it from a few
 * MiB, takes the Mark-Compacts during a 14 s bulk transfer from ~100 to 0-10 per proxy. Measured
 * with the `npm run bench -- hbone` proxies (docs/hbone.md, "V8 flags"): single-stream throughput
 * 1.3-2.5 -> 3.0-3.6 Gbit/s from a cold start, new tunnels/s +20-30%; RSS unchanged.
 */
export const MESH_NODE_FLAGS: readonly string[] = Object.freeze([
  '--external-memory-accounted-in-global-limit',
  '--initial-heap-size=64',
]);
