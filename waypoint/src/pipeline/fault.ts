// Filter 4, fault injection (the destination service's TrafficPolicy `fault`): a delay (flag DI)
// and/or an abort (flag FI) before any upstream work. A gRPC call is aborted with grpc-status in a
// 200, as gRPC clients expect.
import { trafficFor } from '../config.js';
import type { TrafficSettings } from '../traffic/policy.js';
import { type Filter, type Next, type Outcome, type RequestContext, sleepFor } from './context.js';

export function roll(percent: number): boolean {
  return percent >= 100 || Math.random() * 100 < percent;
}

export const faultFilter: Filter = {
  name: 'fault',
  run(rc, next) {
    const fault = trafficFor(rc.snap, rc.service!.key).fault;
    if (fault.delay === undefined && fault.abort === undefined) return next(rc);
    return inject(rc, next, fault);
  },
};

async function inject(rc: RequestContext, next: Next, fault: TrafficSettings['fault']): Promise<Outcome> {
  if (fault.delay !== undefined && roll(fault.delay.percent)) {
    rc.addFlag('DI');
    await sleepFor(rc, fault.delay.ms);
    if (rc.aborted !== undefined) return { kind: 'failure', code: rc.aborted };
  }
  if (fault.abort !== undefined && roll(fault.abort.percent)) {
    if (rc.grpc && fault.abort.grpcStatus !== undefined) {
      rc.grpcStatus = String(fault.abort.grpcStatus);
      return {
        kind: 'local',
        status: 200,
        body: '',
        flag: 'FI',
        headers: {
          'content-type': 'application/grpc',
          'grpc-status': rc.grpcStatus,
          'grpc-message': 'fault filter abort',
        },
      };
    }
    return { kind: 'local', status: fault.abort.httpStatus, body: 'fault filter abort', flag: 'FI' };
  }
  return next(rc);
}
