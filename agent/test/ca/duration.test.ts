import { describe, expect, it } from 'vitest';
import {
  DurationError,
  formatDurationSeconds,
  parseDurationMs,
  parseDurationSeconds,
} from '../../src/ca/duration.js';

describe('durations', () => {
  it.each([
    ['90s', 90],
    ['30m', 1800],
    ['24h', 86400],
    ['7d', 604800],
    ['1h30m', 5400],
  ])('parses %s', (text, seconds) => {
    expect(parseDurationSeconds(text)).toBe(seconds);
  });

  it.each(['', '24', '1.5h', '-5m', '5 m', '5y', 'h', '0s', '1500ms'])('refuses %j', (text) => {
    expect(() => parseDurationSeconds(text)).toThrow(DurationError);
  });

  it('keeps milliseconds when asked and formats seconds back', () => {
    expect(parseDurationMs('250ms')).toBe(250);
    expect(formatDurationSeconds(5400)).toBe('1h30m');
    expect(formatDurationSeconds(86400)).toBe('1d');
  });
});
