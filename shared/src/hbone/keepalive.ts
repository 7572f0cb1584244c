// HTTP/2 liveness for one session: a PING every interval; if one stays unanswered past the
// timeout the peer (or the path) is gone and the session is destroyed, so pooled streams fail fast
// instead of hanging on a dead TCP connection. Timers are unref'd: they never keep a process alive.
import type { Http2Session } from 'node:http2';

export interface KeepaliveOptions {
  intervalMs: number;
  timeoutMs: number;
  onTimeout: () => void;
}

export interface KeepaliveGuard {
  stop(): void;
}

export function startKeepalive(session: Http2Session, options: KeepaliveOptions): KeepaliveGuard {
  let outstandingSince: number | undefined;
  const tick = (): void => {
    if (session.destroyed || session.closed) return;
    const now = Date.now();
    if (outstandingSince !== undefined) {
      if (now - outstandingSince >= options.timeoutMs) options.onTimeout();
      return;
    }
    outstandingSince = now;
    try {
      session.ping((err) => {
        if (!err) outstandingSince = undefined;
      });
    } catch {
      // Too many outstanding pings or session closing: the timeout above decides.
    }
  };
  const timer = setInterval(tick, Math.max(1, Math.min(options.intervalMs, options.timeoutMs)));
  timer.unref();
  const stop = (): void => clearInterval(timer);
  session.once('close', stop);
  return { stop };
}
