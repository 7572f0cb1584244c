/**
 * V8 flags the node agent starts with (`node <flags> agent/bin/hypha.js agent`). One list, used
 * by the agent DaemonSet's container command (manifests/base/agent.yaml, held to this list by a
 * test), by the demo/test clusters' agent processes and by the HBONE benchmark's proxies. An agent
 * started without them logs which are missing (`missingAgentNodeFlags`).
 *
 * Why: an agent moves bytes through Buffers whose memory lives outside the V8 heap. With HBONE's
 * 4/16 MiB windows many of them live long enough to be promoted, and by default each 64 MiB of
 * such external memory starts a full Mark-Compact: ~10 per second per proxy at 3 Gbit/s (3-12 ms
 * pauses plus concurrent marking on the other core). Counting external memory in V8's global
 * limit and starting that limit at 64 MiB takes the Mark-Compacts during 14 s of bulk transfer
 * from ~100 to 0-10 per proxy: single-stream throughput 1.3-2.5 -> 3.0-3.6 Gbit/s from a cold
 * start, new tunnels/s +20-30% (`npm run bench -- hbone`, docs/hbone.md "V8 flags").
 *
 * Cost: ~60 MB more peak RSS in `npm run bench -- l4`; CPU per request within the run-to-run
 * spread (docs/benchmarks.md). Why not the waypoint: its request path (undici, HTTP parsing) got
 * slower with a larger initial heap, 0.63-0.65 -> 0.79-0.99 vCPU per 1000 req/s
 * (`npm run bench -- waypoint --quick`); the first flag alone did not change it, and alone it
 * does not stop the Mark-Compacts either.
 *
 * `--max-semi-space-size=2` (MiB): V8 grows the young generation to 2 x 16 MiB semi-spaces during
 * start-up and keeps them, which is 12 MB of an idle agent's RSS (103 -> 91 MB when ready) and
 * more at peak (`npm run bench -- l4`, interleaved: peak 126-149 MB with it, 219-261 without).
 * Bulk throughput and CPU per request did not change beyond the run-to-run spread
 * (`npm run bench -- hbone --quick` and `l4`, interleaved; docs/benchmarks.md "Memory").
 */
export const AGENT_NODE_FLAGS: readonly string[] = Object.freeze([
  '--external-memory-accounted-in-global-limit',
  '--initial-heap-size=64',
  '--max-semi-space-size=2',
]);

/**
 * V8 flags the waypoint starts with (`node <flags> agent/bin/hypha.js waypoint`): the waypoint
 * Deployment's container command (manifests/waypoint/waypoint.yaml, held to this list by a test)
 * and the demo/test clusters' waypoints.
 *
 * Why: under load V8 grows the young generation to 2 x 16 MiB semi-spaces and keeps them, most of
 * the gap between an idle waypoint and its peak RSS. Capped at 4 MiB the waypoint's peak fell and its
 * CPU per request stayed within the run-to-run spread (`node --max-semi-space-size=N
 * bench/tools/waypoint-engine.mjs waypoint`, N = 2, 4, 8, unset; and `npm run bench -- waypoint`,
 * docs/benchmarks.md "Waypoint"). Not the agent's other two flags: with them the waypoint's request
 * path got slower (see AGENT_NODE_FLAGS).
 */
export const WAYPOINT_NODE_FLAGS: readonly string[] = Object.freeze(['--max-semi-space-size=4']);

/**
 * V8 flags for the CA (`hypha ca serve`). Without a cap on the young generation V8 grew the CA's
 * committed heap to 88 MiB for 24 MiB in use late in a 20-minute soak (docs/reliability.md); the
 * CA signs a certificate at a time, so small semi-spaces cost it nothing it would notice.
 */
export const CA_NODE_FLAGS: readonly string[] = Object.freeze(['--max-semi-space-size=2']);

/**
 * Environment every Hypha process (agent, waypoint, gateway, CA) runs with: the manifests' `env` and
 * the test cluster's processes (held to this by a test).
 *
 * `MALLOC_ARENA_MAX=2`: glibc gives each thread that allocates (V8's GC and compiler threads,
 * libuv's pool running crypto) its own malloc arena, up to 8 per core, and memory freed into an
 * arena is rarely returned. In 20-minute soaks the memory outside the V8 heap grew about 1 MiB a
 * minute in every process; the CA's RSS ended +22% to +49% above its warm-up level. With two arenas
 * the CA ended +5.9% (its memory outside the heap 18 -> 23 MiB instead of 20 -> 39), the agents and
 * the waypoint within the same 10% as before (`MALLOC_ARENA_MAX=2 npm run bench -- soak --minutes
 * 20`, docs/reliability.md). glibc reads it once at start, so it cannot be set from JavaScript.
 */
export const MESH_PROCESS_ENV: Readonly<Record<string, string>> = Object.freeze({ MALLOC_ARENA_MAX: '2' });

/** The AGENT_NODE_FLAGS missing from a process's `execArgv` (empty when all are there). */
export function missingAgentNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return AGENT_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}
