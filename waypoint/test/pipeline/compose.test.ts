// compose(): filters run in order in front of the terminal step; each may answer itself or call the
// rest of the chain (once, or several times for retries). And the waypoint's documented order.

import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { compose, type Filter, type Outcome } from '../../src/pipeline/context.js';
import { pipelineFilters } from '../../src/pipeline/index.js';
import { RequestMetrics } from '../../src/telemetry.js';
import { requestOf, snapshotOf, svc, tcpPools } from './fixtures.js';

const snap = snapshotOf({
  services: [svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }])],
});
const done: Outcome = { kind: 'local', status: 200, body: 'terminal' };

function tracing(trace: string[], name: string, behave: 'pass' | 'stop' | 'twice' = 'pass'): Filter {
  return {
    name,
    async run(rc, next) {
      trace.push(`${name}>`);
      if (behave === 'stop') return { kind: 'local', status: 403, body: name };
      let o = await next(rc);
      if (behave === 'twice') o = await next(rc);
      trace.push(`<${name}`);
      return o;
    },
  };
}

describe('compose', () => {
  it('runs the filters in order around the terminal step', async () => {
    const trace: string[] = [];
    const chain = compose([tracing(trace, 'a'), tracing(trace, 'b'), tracing(trace, 'c')], () => {
      trace.push('terminal');
      return done;
    });
    expect(await chain(requestOf(snap).rc)).toBe(done);
    expect(trace).toEqual(['a>', 'b>', 'c>', 'terminal', '<c', '<b', '<a']);
  });

  it('stops at a filter that answers itself', async () => {
    const trace: string[] = [];
    const chain = compose([tracing(trace, 'a'), tracing(trace, 'b', 'stop'), tracing(trace, 'c')], () => {
      trace.push('terminal');
      return done;
    });
    expect(await chain(requestOf(snap).rc)).toEqual({ kind: 'local', status: 403, body: 'b' });
    expect(trace).toEqual(['a>', 'b>', '<a']);
  });

  it('lets a filter run the rest of the chain again (a retry)', async () => {
    const trace: string[] = [];
    const chain = compose([tracing(trace, 'retry', 'twice'), tracing(trace, 'after')], () => {
      trace.push('terminal');
      return done;
    });
    await chain(requestOf(snap).rc);
    expect(trace).toEqual([
      'retry>',
      'after>',
      'terminal',
      '<after',
      'after>',
      'terminal',
      '<after',
      '<retry',
    ]);
  });

  it('with no filters is the terminal step itself', () => {
    const terminal = () => done;
    expect(compose([], terminal)).toBe(terminal);
  });
});

describe('the waypoint pipeline', () => {
  it('runs its filters in the documented order', async () => {
    const pools = tcpPools();
    const filters = pipelineFilters({
      clusters: new Map(),
      pools,
      metrics: new RequestMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      maxBufferedBodyBytes: 1024,
    });
    expect(filters.map((f) => f.name)).toEqual([
      'route',
      'authn',
      'authz',
      'rate-limit',
      'fault',
      'rewrite',
      'mirror',
      'retry',
      'breaker',
      'balance',
    ]);
    await pools.close();
  });
});
