// Errors of the Kubernetes source. Each names what to check: the kubeconfig, the API server's
// reachability, or RBAC (a 403 lists the verb and resource the ServiceAccount needs).

export type KubeErrorCode =
  /** No usable kubeconfig / in-cluster credentials. */
  | 'KUBECONFIG'
  /** The API server answered with an error status (see `status` and `reason`). */
  | 'API_ERROR'
  /** The API server could not be reached or the connection broke. */
  | 'API_UNREACHABLE'
  /** The source was closed before it finished its initial sync. */
  | 'CLOSED';

export class KubeError extends Error {
  readonly code: KubeErrorCode;
  /** HTTP status for API_ERROR. */
  readonly status: number | undefined;
  /** The Status reason (NotFound, Forbidden, Expired, ...) for API_ERROR. */
  readonly reason: string | undefined;

  constructor(code: KubeErrorCode, message: string, status?: number, reason?: string) {
    super(message);
    this.name = 'KubeError';
    this.code = code;
    this.status = status;
    this.reason = reason;
  }
}

/** Adds the operator's next step to an API failure. */
export function describeApiFailure(method: string, path: string, status: number, message: string): string {
  const base = `${method} ${path}: ${status} ${message}`;
  if (status === 401)
    return `${base} (the credentials in the kubeconfig or the ServiceAccount token were refused)`;
  if (status === 403) {
    return `${base} (RBAC: the ServiceAccount lacks this permission; compare with manifests/base/rbac.yaml)`;
  }
  if (status === 404) return `${base} (is the CRD installed? kubectl get crd)`;
  return base;
}
