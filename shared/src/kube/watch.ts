import { type KubeConfig, Watch } from '@kubernetes/client-node';

/**
 * client-node's Watch for our informers: asks for BOOKMARK events, passes every object through
 * `transform` before the ListWatch cache sees it (e.g. trimming), and aborts a watch whose connect
 * finished after the owner closed: ListWatch.stop() during the connect has no handle to abort yet.
 */
export class BookmarkWatch extends Watch {
  readonly #isClosed: () => boolean;
  readonly #transform: ((phase: string, obj: unknown) => unknown) | undefined;

  constructor(kc: KubeConfig, isClosed: () => boolean, transform?: (phase: string, obj: unknown) => unknown) {
    super(kc);
    this.#isClosed = isClosed;
    this.#transform = transform;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const transform = this.#transform;
    const controller = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      transform ? (phase, obj, watchObj) => callback(phase, transform(phase, obj), watchObj) : callback,
      done,
    );
    if (this.#isClosed()) controller.abort();
    return controller;
  }
}
