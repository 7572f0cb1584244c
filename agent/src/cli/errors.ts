// Exit codes shared by every verb: 0 ok, 1 failure, 2 usage (bad flags or arguments).
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Thrown for bad flags or arguments that commander itself cannot detect. Exits with 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
