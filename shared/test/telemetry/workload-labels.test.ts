import { describe, expect, it } from 'vitest';
import { appLabel, versionLabel, workloadName } from '../../src/telemetry/workload-labels.js';

describe('workloadName: Istio names the controller, not the pod', () => {
  it('a Deployment pod is named after the Deployment', () => {
    expect(
      workloadName('reviews-v1-5d8f7b9c4-x2x7q', { 'pod-template-hash': '5d8f7b9c4', app: 'reviews' }),
    ).toBe('reviews-v1');
  });

  it('a StatefulSet pod is named after the StatefulSet', () => {
    expect(workloadName('db-12', { 'statefulset.kubernetes.io/pod-name': 'db-12', app: 'db' })).toBe('db');
  });

  it('a Job pod is named after the Job', () => {
    expect(workloadName('migrate-x7k2p', { 'batch.kubernetes.io/job-name': 'migrate' })).toBe('migrate');
    expect(workloadName('migrate-x7k2p', { 'job-name': 'migrate' })).toBe('migrate');
  });

  it('a DaemonSet pod is named after the DaemonSet', () => {
    expect(
      workloadName('hypha-agent-9zq4c', {
        'controller-revision-hash': '6f7d',
        'pod-template-generation': '3',
      }),
    ).toBe('hypha-agent');
  });

  it('a pod without a controller is its own workload, whatever its app label says', () => {
    expect(workloadName('echo-v2', { app: 'echo', version: 'v2' })).toBe('echo-v2');
    // A hash label that does not match the name is not trusted to cut it.
    expect(workloadName('web-1', { 'pod-template-hash': 'abc12' })).toBe('web-1');
  });

  it('app and version come from the app labels, the plain ones first', () => {
    expect(appLabel({ app: 'a', 'app.kubernetes.io/name': 'b' })).toBe('a');
    expect(appLabel({ 'app.kubernetes.io/name': 'b' })).toBe('b');
    expect(appLabel({})).toBeUndefined();
    expect(versionLabel({ 'app.kubernetes.io/version': '2' })).toBe('2');
    expect(versionLabel({ version: 'v1', 'app.kubernetes.io/version': '2' })).toBe('v1');
  });
});
