// Filter 7, timeout and retry. The route timeout (`timeouts.request`) runs from here to the
// upstream's response headers, across every try and backoff; once headers arrive the body streams
// without a deadline (gRPC server streaming). A try is repeated, with jittered exponential backoff,
// on a connect failure, a reset, a per-try timeout, or a status or grpc-status the policy names;
// only when the body can be replayed (buffered, see body.ts). Flag URX: retries ran out.
import type { RetryPolicy } from '../routing/types.js';
import { bufferForReplay } from './body.js';
import { type Filter, failure, type Next, type Outcome, type RequestContext, sleepFor } from './context.js';

/** Jittered exponential backoff: base × 2^(n-1), scaled by a random factor in [0.5, 1). */
export function backoff(baseMs: number, retry: number): number {
  return baseMs * 2 ** Math.min(retry - 1, 6) * (0.5 + Math.random() / 2);
}

export function retryFilter(opts: { maxBufferedBodyBytes: number }): Filter {
  const tries = async (rc: RequestContext, next: Next, retry: RetryPolicy | undefined): Promise<Outcome> => {
    const action = rc.action!;
    let timer: NodeJS.Timeout | undefined;
    if (action.requestTimeoutMs !== undefined)
      timer = setTimeout(() => rc.abort('TIMEOUT'), action.requestTimeoutMs);
    try {
      if (retry !== undefined && retry.attempts > 0) await bufferForReplay(rc, opts.maxBufferedBodyBytes);
      if (rc.aborted !== undefined) return failure(rc.aborted);
      const replayable = rc.body === null || Buffer.isBuffer(rc.body);
      const maxTries = 1 + (retry !== undefined && replayable ? retry.attempts : 0);
      let last: Outcome = failure('NO_HEALTHY_UPSTREAM');
      let tried = 0;
      for (let attempt = 0; attempt < maxTries; attempt++) {
        if (attempt > 0) {
          await sleepFor(rc, backoff(retry!.backoffMs, attempt));
          if (rc.aborted !== undefined) return failure(rc.aborted);
        }
        const o = await next(rc);
        if (rc.aborted !== undefined && o.kind === 'failure') return failure(rc.aborted);
        if (o.kind === 'local') return o;
        if (o.kind === 'failure') {
          if (o.code === 'NO_HEALTHY_UPSTREAM' || o.code === 'OVERFLOW' || o.code === 'DOWNSTREAM_CLOSED')
            return tried > 1 ? withFlag(rc, o) : o;
          tried++;
          last = o;
          continue;
        }
        tried++;
        const retriable =
          retry !== undefined &&
          (retry.codes.has(o.status) || (o.grpcStatus !== undefined && retry.grpcCodes.has(o.grpcStatus)));
        if (attempt < maxTries - 1 && retriable) {
          rc.releaseActive();
          o.discard();
          continue;
        }
        if (attempt > 0 && retriable) rc.addFlag('URX');
        return o;
      }
      rc.endpoint = undefined;
      return tried > 1 ? withFlag(rc, last) : last;
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    name: 'retry',
    run(rc, next) {
      const action = rc.action!;
      const retry = action.retry ?? rc.cluster!.settings.retry;
      rc.perTryTimeoutMs = action.backendRequestTimeoutMs ?? retry?.perTryTimeoutMs;
      if (action.requestTimeoutMs === undefined && (retry === undefined || retry.attempts === 0))
        return next(rc);
      return tries(rc, next, retry);
    },
  };
}

function withFlag(rc: RequestContext, o: Outcome): Outcome {
  rc.pendingFlag = 'URX';
  return o;
}
