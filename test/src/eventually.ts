/**
 * Polls `fn` every 200 ms until `ok` accepts its value or `timeoutMs` passes; returns the last value
 * either way, so the caller's assertion on it reports what was actually seen.
 */
export async function eventually<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await fn();
  while (!ok(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    last = await fn();
  }
  return last;
}
