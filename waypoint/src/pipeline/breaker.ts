// Filter 8, circuit breaker and outlier detection. The request takes one slot of its cluster's
// connection pool limits before its first try and keeps it across retries (given back in finish);
// over the limits it queues (bounded) or fails fast with 503 UO. After each try the endpoint's
// outcome feeds outlier detection: a connect failure, reset, per-try timeout or 5xx counts against
// it; a route timeout that cut the try short does not (the endpoint was not at fault).
import { type Filter, failure, type Next, type Outcome, type RequestContext } from './context.js';

function recordOutcome(rc: RequestContext, o: Outcome): Outcome {
  const ep = rc.endpoint;
  if (ep === undefined) return o;
  if (o.kind === 'response') rc.cluster!.recordOutcome(ep, o.status >= 500);
  else if (o.kind === 'failure' && o.code !== 'NO_HEALTHY_UPSTREAM')
    rc.cluster!.recordOutcome(ep, o.code !== 'TIMEOUT' || rc.aborted === undefined);
  return o;
}

function tryOnce(rc: RequestContext, next: Next): Outcome | Promise<Outcome> {
  const o = next(rc);
  return o instanceof Promise ? o.then((v) => recordOutcome(rc, v)) : recordOutcome(rc, o);
}

async function waitForSlot(
  rc: RequestContext,
  next: Next,
  slot: { wait: Promise<void>; cancel: () => boolean },
): Promise<Outcome> {
  const cluster = rc.cluster!;
  const aborted = new Promise<void>((resolve) => {
    if (!rc.onAbort(resolve)) resolve();
  });
  await Promise.race([slot.wait, aborted]);
  rc.clearAbort();
  if (rc.aborted !== undefined) {
    if (!slot.cancel()) cluster.release();
    return failure(rc.aborted);
  }
  if (rc.finished || rc.res.destroyed) {
    cluster.release();
    return failure('DOWNSTREAM_CLOSED');
  }
  rc.slot = true;
  return tryOnce(rc, next);
}

export const breakerFilter: Filter = {
  name: 'breaker',
  run(rc, next) {
    if (rc.slot) return tryOnce(rc, next);
    const cluster = rc.cluster!;
    const slot = cluster.acquire();
    if ('result' in slot) {
      if (slot.result === 'overflow') return failure('OVERFLOW');
      if (rc.finished || rc.res.destroyed) {
        cluster.release();
        return failure('DOWNSTREAM_CLOSED');
      }
      rc.slot = true;
      return tryOnce(rc, next);
    }
    return waitForSlot(rc, next, slot);
  },
};
