// Filter 3 alone: an empty slot today; it must pass every request on untouched.
import { describe, expect, it } from 'vitest';
import { rateLimitFilter } from '../../src/pipeline/rate-limit.js';
import { recordingNext, requestOf, snapshotOf, svc, upstreamAnswer } from './fixtures.js';

const snap = snapshotOf({
  services: [svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }])],
});

describe('rate-limit filter', () => {
  it('calls next once and returns its outcome as is, leaving the request unchanged', async () => {
    const { rc, res } = requestOf(snap, { url: '/a?b=c', body: 'payload' });
    const body = rc.body;
    const answer = upstreamAnswer(201);
    const next = recordingNext(() => answer);
    expect(await rateLimitFilter.run(rc, next)).toBe(answer);
    expect(next.calls).toHaveLength(1);
    expect(next.calls[0]!.body).toBe(body);
    expect(rc.flags).toEqual([]);
    expect(res.headersSent).toBe(false);
  });

  it('passes a failure from next through unchanged', async () => {
    const { rc } = requestOf(snap);
    const o = { kind: 'failure', code: 'TIMEOUT' } as const;
    expect(
      await rateLimitFilter.run(
        rc,
        recordingNext(() => o),
      ),
    ).toBe(o);
  });
});
