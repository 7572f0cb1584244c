// src.pipe(dst) with teardown both ways: an error or early close on either side destroys the other.
// Not stream.pipeline: it allocates an AbortController per call and aborts it (building a
// DOMException) on every normal finish, a measurable cost per request.
import type { Readable, Writable } from 'node:stream';

export function relay(src: Readable, dst: Writable): void {
  src.pipe(dst);
  src.once('error', () => dst.destroy());
  src.once('close', () => {
    if (!src.readableEnded) dst.destroy();
  });
  dst.once('close', () => {
    if (!src.readableEnded) src.destroy();
  });
}
