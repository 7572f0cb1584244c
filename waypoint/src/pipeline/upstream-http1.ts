// Filter 10a, the upstream try over HTTP/1.1: undici's dispatcher with a handler (no response
// stream object, no promise per chunk), on the endpoint's keep-alive pool. Response bytes go
// straight to the downstream response with backpressure (pause/resume). A per-try timeout
// (`timeouts.backendRequest` or the retry's perTryTimeout) or an aborted request cancels the try.
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { transportFailureReason } from '../egress/connect.js';
import type { ProxyFailureCode } from '../errors.js';
import { isConnectFailure, type UpstreamPools } from '../upstream.js';
import { failure, type Outcome, type RequestContext, type UpstreamAnswer } from './context.js';
import { responseHead, writeHead } from './respond.js';

/** Responses up to this size (by content-length) are written whole. */
const WHOLE_RESPONSE_BYTES = 64 * 1024;

type State = 'waiting' | 'held' | 'responding' | 'discarding' | 'done';

class Http1Exchange implements Dispatcher.DispatchHandler, UpstreamAnswer {
  readonly kind = 'response';
  status = 0;
  readonly grpcStatus = undefined;
  readonly #rc: RequestContext;
  #resolve: ((o: Outcome) => void) | undefined;
  #controller: Dispatcher.DispatchController | undefined;
  #headers: Record<string, string | string[] | undefined> = {};
  #state: State = 'waiting';
  #timer: NodeJS.Timeout | undefined;
  #timedOut = false;
  /** Body bytes that arrived before respond() or discard() decided where they go. */
  #early: Buffer[] | undefined;
  #ended = false;
  /** Collect the body and write it with end() (small, known length). */
  #whole = false;

  constructor(rc: RequestContext, resolve: (o: Outcome) => void) {
    this.#rc = rc;
    this.#resolve = resolve;
    const perTry = rc.perTryTimeoutMs;
    if (perTry !== undefined)
      this.#timer = setTimeout(() => {
        this.#timedOut = true;
        this.#cancel();
      }, perTry);
    if (!rc.onAbort(() => this.#cancel())) this.#timedOut = rc.aborted === 'TIMEOUT';
  }

  #cancel(): void {
    if (this.#state !== 'waiting') return;
    if (this.#controller !== undefined)
      this.#controller.abort(new Error('waypoint cancelled the upstream try'));
    else {
      // Still queued or connecting: undici starts it later; onRequestStart aborts it then.
      this.#state = 'done';
      this.#settle(failure(this.#failureCode(undefined)));
    }
  }

  #failureCode(err: unknown): ProxyFailureCode {
    const reason = transportFailureReason(err);
    if (reason !== undefined) this.#rc.upstreamFailureReason = reason;
    if (this.#timedOut || this.#rc.aborted === 'TIMEOUT') return 'TIMEOUT';
    return isConnectFailure(err) ? 'CONNECT_FAILED' : 'UPSTREAM_RESET';
  }

  #settle(o: Outcome): void {
    clearTimeout(this.#timer);
    this.#rc.clearAbort();
    const r = this.#resolve;
    this.#resolve = undefined;
    r?.(o);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#rc.aborted !== undefined || this.#state === 'done')
      controller.abort(new Error('waypoint cancelled the upstream try'));
  }

  onBodySent(chunk: Buffer | string): void {
    if (!Buffer.isBuffer(this.#rc.body)) this.#rc.requestBytes += chunk.length;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (status < 200 || this.#state !== 'waiting') return;
    controller.pause();
    this.status = status;
    this.#headers = headers;
    this.#state = 'held';
    this.#settle(this);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state === 'discarding') return;
    if (this.#state !== 'responding' || this.#whole) {
      if (this.#early === undefined) this.#early = [chunk];
      else this.#early.push(chunk);
      return;
    }
    this.#rc.responseBytes += chunk.length;
    const res = this.#rc.res;
    if (!res.write(chunk) && !controller.paused) {
      controller.pause();
      res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    this.#ended = true;
    if (this.#state !== 'responding') return;
    this.#state = 'done';
    const early = this.#early;
    this.#early = undefined;
    if (early === undefined) this.#rc.res.end();
    else {
      // A small answer leaves in one write: head and body together.
      const body = early.length === 1 ? early[0]! : Buffer.concat(early);
      this.#rc.responseBytes += body.length;
      this.#rc.res.end(body);
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#state === 'waiting') {
      this.#state = 'done';
      this.#settle(failure(this.#failureCode(err)));
    } else if (this.#state === 'responding' || this.#state === 'held') {
      this.#state = 'done';
      this.#rc.res.destroy();
    }
  }

  discard(): void {
    // Drain rather than destroy: the connection stays reusable for the retry.
    this.#state = 'discarding';
    this.#early = undefined;
    this.#controller?.resume();
  }

  respond(rc: RequestContext): void {
    const res = rc.res;
    if (res.destroyed) {
      this.#state = 'done';
      this.#controller?.abort(new Error('client went away'));
      return;
    }
    writeHead(res, this.status, responseHead(rc, this.#headers));
    this.#state = 'responding';
    // A body of known small size is collected and written with the head in one write (one
    // syscall, or one HBONE DATA frame) instead of head, chunks and end apart.
    const len = this.#headers['content-length'];
    this.#whole = typeof len === 'string' && Number(len) <= WHOLE_RESPONSE_BYTES;
    if (!this.#whole) {
      const early = this.#early;
      this.#early = undefined;
      if (early !== undefined) for (const c of early) this.onResponseData(this.#controller!, c);
    }
    if (this.#ended) this.onResponseEnd();
    else this.#controller?.resume();
  }
}

export function http1Try(rc: RequestContext, pools: UpstreamPools): Promise<Outcome> {
  return new Promise((resolve) => {
    const ex = new Http1Exchange(rc, resolve);
    if (rc.aborted !== undefined) return resolve(failure(rc.aborted === 'TIMEOUT' ? 'TIMEOUT' : rc.aborted));
    // The upstream head is built once (rewrite filter); undici skips undefined values, so it goes as
    // it is, with the Host it needs (the same on every try).
    const headers = rc.upstreamHeaders;
    headers.host = rc.upstreamHost;
    // A streamed body is counted as undici writes it (onBodySent): a 'data' listener here would
    // start the stream flowing before undici reads it.
    const body: Buffer | Readable | null = rc.body;
    pools
      .findHttp1(rc.upstream!)
      .dispatch({ path: rc.upstreamPath, method: rc.method as Dispatcher.HttpMethod, headers, body }, ex);
  });
}
