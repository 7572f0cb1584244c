export type CaptureErrorCode =
  | 'NFT_MISSING'
  | 'IP_MISSING'
  | 'PERMISSION_DENIED'
  | 'NFT_FAILED'
  | 'ROUTING_FAILED'
  | 'INVALID_ARGUMENT';

export class CaptureError extends Error {
  readonly code: CaptureErrorCode;
  constructor(code: CaptureErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CaptureError';
    this.code = code;
  }
}
