// Bidirectional byte copy between the two halves of a tunnel (HBONE stream <-> TCP socket).
//
// Invariants:
// - Backpressure both ways: a source is paused whenever its destination's buffer is full,
//   so a slow reader never makes us buffer more than one highWaterMark per direction.
// - Half-close propagates: a clean end of one side's readable half ends the other side's writable
//   half (TCP FIN <-> HTTP/2 END_STREAM) and the opposite direction keeps flowing.
// - A reset propagates: an abnormal end of one side (error, RST_STREAM, TCP RST) resets the other
//   (RFC 9113 8.5: TCP error -> RST_STREAM(CONNECT_ERROR); stream error -> TCP RST).
// - Counters are plain numbers updated per chunk, so metrics can read them while bytes flow.
import { constants as h2 } from 'node:http2';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Live byte counters for one tunnel, named from the downstream (client) side. */
export interface ByteCounters {
  /** Bytes that went downstream -> upstream (what the client sent). */
  sent: number;
  /** Bytes that went upstream -> downstream (what the client received). */
  received: number;
}

export function createByteCounters(): ByteCounters {
  return { sent: 0, received: 0 };
}

export type CopyOutcome =
  /** Both directions ended with a clean EOF. */
  | 'complete'
  /** The downstream side ended abnormally; the upstream side was reset. */
  | 'downstream_reset'
  /** The upstream side ended abnormally; the downstream side was reset. */
  | 'upstream_reset';

export interface CopyResult {
  outcome: CopyOutcome;
  sent: number;
  received: number;
  /** The error that ended the tunnel, if one side failed with an error. */
  error?: Error;
}

export interface CopyOptions {
  counters?: ByteCounters;
}

interface H2StreamLike {
  rstCode?: number;
  /** True once the peer or the session's end aborted the stream (node:http2). */
  aborted?: boolean;
  close(code?: number): void;
}

function isH2Stream(s: Duplex): s is Duplex & H2StreamLike {
  return 'rstCode' in s && 'session' in s && typeof (s as unknown as H2StreamLike).close === 'function';
}

const resetLocally = new WeakSet<Duplex>();

/** True if this side reset the stream through resetStream (as opposed to the peer resetting it). */
export function wasResetLocally(s: Duplex): boolean {
  return resetLocally.has(s);
}

/**
 * Resets a stream the way its protocol spells "reset": RST_STREAM for HTTP/2, TCP RST for sockets.
 *
 * node:http2's `stream.close(code)` sends END_STREAM before RST_STREAM while our write side is
 * open, and the peer then sees a clean end followed by a reset, too late to turn its FIN into a
 * TCP RST. `destroy(err)` sends RST_STREAM(INTERNAL_ERROR) at once, so we use it then, and
 * close(CONNECT_ERROR) only once END_STREAM is already out.
 */
export function resetStream(s: Duplex): void {
  if (s.destroyed) return;
  resetLocally.add(s);
  if (isH2Stream(s)) {
    if (s.writableEnded) s.close(h2.NGHTTP2_CONNECT_ERROR);
    else s.destroy(new Error('tunnel reset: the other side of the tunnel failed'));
    return;
  }
  // A socket that already sent FIN (or is sending it) cannot be RST: libuv answers EINVAL and Node
  // then never emits 'close', so whoever waits for it (the copy loop, the connection tracker) waits
  // forever. It is closed normally instead.
  if (s instanceof Socket && !s.connecting && !s.writableEnded) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // TLS sockets and pipes have no TCP handle to reset: a plain close is the best we can say.
    }
  }
  s.destroy();
}

function endedAbnormally(s: Duplex, sawError: boolean): boolean {
  if (sawError) return true;
  if (isH2Stream(s)) return s.rstCode !== undefined && s.rstCode !== h2.NGHTTP2_NO_ERROR;
  return !(s.readableEnded && s.writableFinished);
}

/**
 * Copies bytes both ways until both sides are closed. Never rejects: the outcome says how it ended.
 * Both streams are switched to allowHalfOpen so one side's FIN doesn't cut the other direction.
 */
export function copyBidirectional(
  downstream: Duplex,
  upstream: Duplex,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const counters = options.counters ?? createByteCounters();
  (downstream as { allowHalfOpen: boolean }).allowHalfOpen = true;
  (upstream as { allowHalfOpen: boolean }).allowHalfOpen = true;

  return new Promise<CopyResult>((resolve) => {
    let outcome: CopyOutcome | undefined;
    let firstError: Error | undefined;
    let downErrored = false;
    let upErrored = false;
    let closed = 0;

    const onClosed = (side: 'downstream' | 'upstream'): void => {
      const self = side === 'downstream' ? downstream : upstream;
      const other = side === 'downstream' ? upstream : downstream;
      if (outcome === undefined && endedAbnormally(self, side === 'downstream' ? downErrored : upErrored)) {
        outcome = side === 'downstream' ? 'downstream_reset' : 'upstream_reset';
        resetStream(other);
      }
      closed += 1;
      if (closed === 2) {
        const result: CopyResult = {
          outcome: outcome ?? 'complete',
          sent: counters.sent,
          received: counters.received,
        };
        if (firstError !== undefined) result.error = firstError;
        resolve(result);
      }
    };

    downstream.on('error', (err) => {
      downErrored = true;
      firstError ??= err;
    });
    upstream.on('error', (err) => {
      upErrored = true;
      firstError ??= err;
    });
    // Either side may already be gone (a stream cancelled while the handler ran): 'close' won't repeat.
    if (downstream.closed) queueMicrotask(() => onClosed('downstream'));
    else downstream.once('close', () => onClosed('downstream'));
    if (upstream.closed) queueMicrotask(() => onClosed('upstream'));
    else upstream.once('close', () => onClosed('upstream'));
    // An HTTP/2 stream reset by the peer with CANCEL emits 'aborted' but no 'error'.
    downstream.once('aborted', () => {
      downErrored = true;
    });
    upstream.once('aborted', () => {
      upErrored = true;
    });

    pump(downstream, upstream, (n) => {
      counters.sent += n;
    });
    pump(upstream, downstream, (n) => {
      counters.received += n;
    });
  });
}

/**
 * One direction of the copy: like `pipe`, plus byte counting in the same listener.
 *
 * Backpressure is plain and strict: pause the source as soon as the destination refuses a write,
 * resume on 'drain' (which Node emits exactly once after a refused write has been flushed).
 *
 * Writes into a plain TCP socket are corked until the end of this event-loop turn. An HTTP/2
 * stream hands us its DATA in pieces cut at TLS record boundaries (16 KiB), each piece in its own
 * callback, so without corking every piece costs one write(2): measured 11.6k writes/s of ~8 KiB
 * on the receiving agent at 1.9 Gbit/s. Uncorking in setImmediate turns one socket read's worth of
 * pieces into one writev. Only sockets are corked: the earlier version also corked HTTP/2 streams
 * and paused only above 256 KiB buffered, and that stalled bidirectional bulk transfers under CPU
 * contention (docs/hbone.md, "Copy loop").
 */
function pump(src: Duplex, dst: Duplex, count: (n: number) => void): void {
  const corkable = dst instanceof Socket;
  let corked = false;
  const uncork = (): void => {
    corked = false;
    dst.uncork();
  };
  src.on('data', (chunk: Buffer) => {
    count(chunk.length);
    if (dst.destroyed || dst.writableEnded) return;
    if (corkable && !corked) {
      corked = true;
      dst.cork();
      setImmediate(uncork);
    }
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', () => {
    if (dst.destroyed || dst.writableEnded) return;
    // A stream aborted under us (its HTTP/2 session destroyed: PING timeout, peer gone) still emits
    // 'end'. That is no clean end: leave the other side open for the reset that 'close' brings.
    if (isH2Stream(src) && src.aborted) return;
    if (corked) uncork();
    dst.end();
  });
}
