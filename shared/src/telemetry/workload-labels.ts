// What Istio's `*_workload`, `*_app` and `*_version` labels say about a pod, in one place: the agent
// (istio_tcp_*) and the waypoint (istio_requests_total) must name the same pod the same way, or
// Kiali draws one workload as two nodes and Grafana's per-workload panels lose half the traffic.
//
// Istio's workload name is the pod's controller, not the pod: Deployment `reviews-v1` for pod
// `reviews-v1-5d8f7b9c4-x2x7q`, StatefulSet `db` for pod `db-0`, the Job for its pods; a pod
// without a controller is its own workload. Pods carry no owner references in our config model, so
// the name comes from the labels each controller stamps on its pods.

type Labels = Readonly<Record<string, string>>;

/** The workload (controller) a pod belongs to, as Istio's `source_workload`/`destination_workload`. */
export function workloadName(podName: string, labels: Labels): string {
  // ReplicaSet (Deployment) pods: <deployment>-<pod-template-hash>-<5 chars>.
  const hash = labels['pod-template-hash'];
  if (hash !== undefined && hash !== '') {
    const suffix = `-${hash}-`;
    const at = podName.lastIndexOf(suffix);
    if (at > 0 && /^[a-z0-9]{5}$/.test(podName.slice(at + suffix.length))) return podName.slice(0, at);
  }
  // StatefulSet pods: <statefulset>-<ordinal>.
  if (labels['statefulset.kubernetes.io/pod-name'] === podName) {
    const m = /^(.+)-\d+$/.exec(podName);
    if (m !== null) return m[1]!;
  }
  // Job pods: the Job's name is a label.
  const job = labels['batch.kubernetes.io/job-name'] ?? labels['job-name'];
  if (job !== undefined && job !== '') return job;
  // DaemonSet pods: <daemonset>-<5 chars>, stamped with pod-template-generation.
  if (labels['pod-template-generation'] !== undefined && labels['controller-revision-hash'] !== undefined) {
    const m = /^(.+)-[a-z0-9]{5}$/.exec(podName);
    if (m !== null) return m[1]!;
  }
  return podName;
}

/** Istio's `*_app` label: `app`, else `app.kubernetes.io/name`. */
export function appLabel(labels: Labels): string | undefined {
  return labels.app ?? labels['app.kubernetes.io/name'];
}

/** Istio's `*_version` label: `version`, else `app.kubernetes.io/version`. */
export function versionLabel(labels: Labels): string | undefined {
  return labels.version ?? labels['app.kubernetes.io/version'];
}
