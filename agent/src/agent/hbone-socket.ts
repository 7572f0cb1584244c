// The send buffer every HBONE TCP socket gets (agent, waypoint and gateway daemons), so a bulk
// transfer both ways cannot deadlock node:http2 under packet loss (the why: HboneSocketTuner in
// shared/src/hbone/settings.ts; the figures: docs/hbone.md, "Flow control").
//
// Invariants:
// - Never throws: a socket whose option cannot be set keeps the kernel's autotuned buffer.
// - Says once per process when the buffer cannot hold a connection window (no native addon, or no
//   CAP_NET_ADMIN past net.core.wmem_max), naming what to change; then stays quiet. The agent says
//   it at warn; waypoints and gateways (unprivileged pods) at info: one tuned end breaks the cycle
//   (its writes complete, so it keeps reading, so the other end's writes drain), and the other end
//   of their HBONE connections is an agent.
import type { Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import { DEFAULT_FLOW_CONTROL, type HboneSocketTuner, hboneSendBufferBytes } from '@hypha/shared/hbone';
import { isNativeAvailable, setSendBuffer } from '../native/index.js';

export interface HboneSocketTunerOptions {
  /** Level of the one message when the buffer cannot be raised: warn (agent) or info. */
  refusedLevel?: 'warn' | 'info';
}

export function createHboneSocketTuner(
  logger: Logger,
  options: HboneSocketTunerOptions = {},
): HboneSocketTuner {
  const wanted = hboneSendBufferBytes(DEFAULT_FLOW_CONTROL);
  const level = options.refusedLevel ?? 'warn';
  let warned = false;
  const warnOnce = (why: string): void => {
    if (warned) return;
    warned = true;
    logger[level](
      { component: 'hbone', wantedBytes: wanted },
      level === 'warn'
        ? `HBONE send buffer not raised (${why}): bulk transfers both ways over one HBONE connection can stall under packet loss until PING closes it; run with CAP_NET_ADMIN or raise net.core.wmem_max to ${wanted}`
        : `HBONE send buffer not raised (${why}); the agent at the other end of each HBONE connection raises its own, which keeps bulk transfers moving under packet loss`,
    );
  };
  if (!isNativeAvailable()) {
    return () => warnOnce('the native addon does not load');
  }
  return (socket: Socket) => {
    try {
      // The kernel reports twice what was asked: it counts its own bookkeeping.
      const effective = setSendBuffer(socket, wanted);
      if (effective < 2 * wanted) warnOnce(`the kernel allowed ${effective / 2} bytes`);
    } catch (err) {
      // A socket closed under us has no descriptor: nothing to tune, nothing to say.
      if (!socket.destroyed) warnOnce((err as Error).message);
    }
  };
}
