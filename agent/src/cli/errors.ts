// Exit codes shared by every verb: 0 ok, 1 failure, 2 usage (bad flags or arguments).
import { DurationError, parseDurationMs, parseDurationSeconds } from '../ca/duration.js';

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

/** A duration flag's value in milliseconds (`90s`, `1h30m`); a bad value is a UsageError naming the flag. */
export function durationFlagMs(flag: string, text: string): number {
  return asUsage(flag, () => parseDurationMs(text));
}

/** A duration flag's value in whole seconds; a bad value is a UsageError naming the flag. */
export function durationFlagSeconds(flag: string, text: string): number {
  return asUsage(flag, () => parseDurationSeconds(text));
}

function asUsage<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof DurationError) throw new UsageError(`${flag}: ${err.message}`);
    throw err;
  }
}
