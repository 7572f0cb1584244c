// Giving the memory of a large one-off load back to the kernel.
//
// Since V8 13 (Node 24), the pages a garbage collection frees go to a page pool: they stay mapped
// and resident, for reuse, until a memory-reducing collection empties the pool. Such a collection
// runs on memory pressure or from V8's idle memory reducer, and a daemon that waits on sockets does
// not reach either (measured: 40 s idle after the Kubernetes source synced 100k pods, RSS stayed at
// 462 MB with 263 MB of heap in use). After a load that parses and drops hundreds of MB, that pool
// is most of the gap between the heap and the RSS. A `last-resort` collection is the
// memory-reducing one: it collects until nothing more is freed, then releases the pool.
//
// The `gc` function is reached without `--expose-gc` on the command line: the flag is read when a
// context is created, so a fresh context made after setting it has `gc`. The main context's global
// object is left alone.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from '../log/logger.js';

/** A load at least this many objects big is followed by `releaseFreedMemory`. */
export const LARGE_LOAD_OBJECTS = 5000;

type GcFunction = (options?: { type?: string; execution?: string; flavor?: string }) => void;
let gcFunction: GcFunction | undefined;

export interface MemoryRelease {
  /** Resident set size before and after, bytes. */
  rssBefore: number;
  rssAfter: number;
  /** How long the collection held the event loop, ms. */
  ms: number;
}

/**
 * A full, memory-reducing garbage collection that also unmaps V8's pooled pages. It holds the event
 * loop for as long as it runs (0.56 s with a 230 MB heap), so call it after a large load, not on a
 * hot path.
 */
export function releaseFreedMemory(): MemoryRelease {
  if (gcFunction === undefined) {
    const exposed = (globalThis as { gc?: GcFunction }).gc;
    if (typeof exposed === 'function') gcFunction = exposed;
    else {
      setFlagsFromString('--expose-gc');
      gcFunction = runInNewContext('gc') as GcFunction;
    }
  }
  const rssBefore = process.memoryUsage.rss();
  const start = performance.now();
  gcFunction({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const ms = performance.now() - start;
  lastReleaseAt = performance.now();
  return { rssBefore, rssAfter: process.memoryUsage.rss(), ms };
}

let lastReleaseAt = Number.NEGATIVE_INFINITY;
/** A release this recent makes the one at ready redundant (a large config load just ran it). */
const STARTUP_RELEASE_WINDOW_MS = 10_000;

/**
 * The release a daemon runs once before it reports ready (start-up's garbage: modules compiled,
 * config parsed, keys made). Undefined, and no collection, when one ran in the last 10 s: after a
 * large config load the source has just given that memory back, and a second full collection of a
 * large heap would only hold the event loop again.
 */
export function releaseStartupMemory(): MemoryRelease | undefined {
  return performance.now() - lastReleaseAt < STARTUP_RELEASE_WINDOW_MS ? undefined : releaseFreedMemory();
}

/** `RSS 472 → 343 MB in 563 ms`, for the log line of whoever asked. */
export function describeRelease(r: MemoryRelease): string {
  const mb = (n: number) => Math.round(n / 1048576);
  return `RSS ${mb(r.rssBefore)} → ${mb(r.rssAfter)} MB in ${Math.round(r.ms)} ms`;
}

/** A release as log fields, the same in every line that reports one (bytes, ms). */
export function releaseFields(r: MemoryRelease): { rssBefore: number; rss: number; releaseMs: number } {
  return { rssBefore: r.rssBefore, rss: r.rssAfter, releaseMs: Math.round(r.ms) };
}

/** releaseFreedMemory, logged: `returned the memory freed by <what> to the kernel: RSS A → B MB in N ms`. */
export function releaseFreedMemoryAfter(
  log: Pick<Logger, 'info'>,
  what: string,
  fields: Record<string, unknown> = {},
): MemoryRelease {
  const r = releaseFreedMemory();
  log.info(
    { ...fields, ...releaseFields(r) },
    `returned the memory freed by ${what} to the kernel: ${describeRelease(r)}`,
  );
  return r;
}
