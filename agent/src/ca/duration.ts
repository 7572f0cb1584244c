// Strict durations for flags: one or more <integer><unit> groups, units d/h/m/s/ms
// ("90s", "30m", "24h", "1h30m", "7d"). A bare number is refused: "24" could mean anything.

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;
const WHOLE = /^(?:\d+(?:ms|d|h|m|s))+$/;
const PART = /(\d+)(ms|d|h|m|s)/g;

export class DurationError extends Error {
  readonly code = 'INVALID_DURATION' as const;
  constructor(input: string, reason: string) {
    super(`invalid duration ${JSON.stringify(input)}: ${reason}`);
    this.name = 'DurationError';
  }
}

/** Parses a duration into milliseconds. */
export function parseDurationMs(input: string): number {
  const text = input.trim();
  if (text.length === 0) throw new DurationError(input, 'empty');
  if (!WHOLE.test(text)) {
    throw new DurationError(
      input,
      'expected a whole number with a unit (ms, s, m, h, d), like 90s, 30m, 24h or 1h30m',
    );
  }
  let total = 0;
  for (const m of text.matchAll(PART)) total += Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (!Number.isSafeInteger(total)) throw new DurationError(input, 'too large');
  if (total === 0) throw new DurationError(input, 'must be greater than zero');
  return total;
}

/** Parses a duration into whole seconds (at least 1 s). */
export function parseDurationSeconds(input: string): number {
  const ms = parseDurationMs(input);
  if (ms < 1000) throw new DurationError(input, 'must be at least 1s');
  if (ms % 1000 !== 0) throw new DurationError(input, 'must be a whole number of seconds');
  return ms / 1000;
}

/** 86400 → "24h", 5400 → "1h30m", for messages. */
export function formatDurationSeconds(seconds: number): string {
  let rest = Math.round(seconds);
  if (rest === 0) return '0s';
  let out = '';
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}
