// Compiled config objects, memoized by the identity of their input, so a config update compiles only
// the objects that changed (zod validation, regexes, CIDRs are the expensive part of a snapshot).
//
// Invariants:
// - Config inputs are values: never edited in place. The shared config state replaces an object
//   when it changes (its views are immutable) and `buildWaypointInput` hands the same input object
//   back while its source is unchanged, so identity says "unchanged". A caller that edits an input
//   in place must pass a new object to have it recompiled.
// - A rejected object's errors are kept with it: every snapshot that contains the object reports
//   the same errors, as if it had been compiled again.
// - Entries live as long as their input (WeakMap): nothing to evict, no growth across updates.
// - A result also depends on a parameter (the cluster domain, the Gateway); a different parameter
//   recompiles.
import { WaypointConfigError } from './errors.js';

export interface Compiled<T> {
  /** undefined when the object was rejected (see `errors`) or compiles to nothing. */
  readonly value: T | undefined;
  readonly errors: readonly WaypointConfigError[];
}

/** How many objects a snapshot compiled, and how many it took compiled from an earlier one. */
export interface CompileStats {
  compiled: number;
  reused: number;
}

export function emptyCompileStats(): CompileStats {
  return { compiled: 0, reused: 0 };
}

export class CompileCache<P, T> {
  readonly #entries = new WeakMap<object, { param: string; result: Compiled<T> }>();
  readonly #compile: (raw: unknown, param: P) => T;
  readonly #paramKey: (param: P) => string;

  /** `compile` throws WaypointConfigError for a bad object; other errors are bugs and propagate. */
  constructor(compile: (raw: unknown, param: P) => T, paramKey: (param: P) => string) {
    this.#compile = compile;
    this.#paramKey = paramKey;
  }

  /** The compiled object: from the cache while `raw` and the parameter are unchanged. */
  compile(raw: unknown, param: P, stats?: CompileStats): Compiled<T> {
    const key = this.#paramKey(param);
    const cacheable = typeof raw === 'object' && raw !== null;
    if (cacheable) {
      const hit = this.#entries.get(raw);
      if (hit !== undefined && hit.param === key) {
        if (stats) stats.reused++;
        return hit.result;
      }
    }
    let result: Compiled<T>;
    try {
      result = { value: this.#compile(raw, param), errors: [] };
    } catch (err) {
      if (!(err instanceof WaypointConfigError)) throw err;
      result = { value: undefined, errors: [err] };
    }
    if (stats) stats.compiled++;
    if (cacheable) this.#entries.set(raw, { param: key, result });
    return result;
  }
}
