// Public surface of the native socket helpers (agent/native addon).
export type { NativeErrorCode, OriginalDst, SocketLike, TransparentConnectOptions } from './sockets.js';
export {
  connectTransparent,
  findNetnsPath,
  findSocketFd,
  getMark,
  getOriginalDst,
  isNativeAvailable,
  NativeError,
  setFreebind,
  setMark,
  setTransparent,
} from './sockets.js';
