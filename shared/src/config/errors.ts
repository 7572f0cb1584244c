// Errors of the configuration model and its sources. Every problem names where it came from
// (the source: a file path, or `kubernetes`), the object (kind, namespace/name) and the field path,
// so an operator can go straight to the line to fix.

export type ConfigErrorCode =
  /** An object failed validation; it was skipped (or its previous version kept, see message). */
  | 'INVALID_OBJECT'
  /** A document is not a Kubernetes-shaped object (no kind/apiVersion, not a mapping). */
  | 'NOT_AN_OBJECT'
  /** The kind is not one Hypha reads and not a well-known Kubernetes kind it ignores. */
  | 'UNKNOWN_KIND'
  /** The apiVersion does not match the kind (e.g. an Istio AuthorizationPolicy). */
  | 'WRONG_API_VERSION'
  /** Two objects of the same kind, namespace and name; the first one seen wins. */
  | 'DUPLICATE_OBJECT'
  /** Two Services claim the same VIP; the first one seen keeps it. */
  | 'DUPLICATE_VIP'
  /** A file could not be parsed as YAML/JSON; its last good objects stay in force. */
  | 'PARSE_ERROR'
  /** A file or directory could not be read. */
  | 'READ_ERROR'
  /** The configured path does not exist. */
  | 'PATH_NOT_FOUND';

export interface ConfigObjectLocation {
  /** Where the object came from: a file path, or a source name such as `kubernetes`. */
  source: string;
  kind?: string | undefined;
  namespace?: string | undefined;
  name?: string | undefined;
  /** 1-based document number inside a multi-document file, when there is more than one. */
  document?: number | undefined;
}

export class ConfigError extends Error {
  readonly code: ConfigErrorCode;
  readonly source: string;
  readonly kind: string | undefined;
  readonly namespace: string | undefined;
  readonly objectName: string | undefined;
  /** Dotted field path inside the object, e.g. `spec.ports[0].targetPort`; empty for whole-object problems. */
  readonly field: string;
  readonly detail: string;

  constructor(code: ConfigErrorCode, where: ConfigObjectLocation, field: string, detail: string) {
    super(formatConfigError(where, field, detail));
    this.name = 'ConfigError';
    this.code = code;
    this.source = where.source;
    this.kind = where.kind;
    this.namespace = where.namespace;
    this.objectName = where.name;
    this.field = field;
    this.detail = detail;
  }

  /** Structured fields for a JSON log line. */
  toLogFields(): Record<string, string> {
    const out: Record<string, string> = { code: this.code, source: this.source };
    if (this.kind !== undefined) out.kind = this.kind;
    if (this.namespace !== undefined) out.namespace = this.namespace;
    if (this.objectName !== undefined) out.objectName = this.objectName;
    if (this.field !== '') out.field = this.field;
    return out;
  }
}

function formatConfigError(where: ConfigObjectLocation, field: string, detail: string): string {
  let object = where.kind ?? 'object';
  if (where.name !== undefined) {
    object += ` ${where.namespace !== undefined ? `${where.namespace}/` : ''}${where.name}`;
  } else if (where.document !== undefined) {
    object += ` (document ${where.document})`;
  }
  const doc = where.name !== undefined && where.document !== undefined ? ` (document ${where.document})` : '';
  const at = field === '' ? '' : ` field ${field}:`;
  return `${where.source}: ${object}${doc}:${at} ${detail}`;
}
