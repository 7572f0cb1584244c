// Request bodies that retries and mirrors must replay: buffered once, up to a limit. A larger body
// streams on (what was read first, then the rest) and is neither retried nor mirrored with a body.
import { Readable } from 'node:stream';
import type { RequestContext } from './context.js';

/** Makes `rc.body` a Buffer when it fits in `max` bytes; resolves once decided. */
export async function bufferForReplay(rc: RequestContext, max: number): Promise<void> {
  const body = rc.body;
  if (body === null || Buffer.isBuffer(body)) return;
  const chunks: Buffer[] = [];
  let size = 0;
  // Leaving a plain `for await` early destroys the stream: the rest of the body would be lost.
  for await (const c of body.iterator({ destroyOnReturn: false })) {
    const chunk = c as Buffer;
    chunks.push(chunk);
    size += chunk.length;
    if (size > max) {
      rc.requestBytes = size;
      rc.body = Readable.from(
        (async function* () {
          yield* chunks;
          for await (const rest of body) {
            rc.requestBytes += (rest as Buffer).length;
            yield rest as Buffer;
          }
        })(),
      );
      return;
    }
  }
  rc.body = Buffer.concat(chunks, size);
  rc.requestBytes = size;
}
