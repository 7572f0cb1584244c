// Validates custom resources against a CustomResourceDefinition the way the API server does:
// the structural openAPIV3Schema (with strict field validation, as kubectl requests by default:
// unknown fields are errors unless x-kubernetes-preserve-unknown-fields) and every
// x-kubernetes-validations CEL rule, evaluated on the node it is attached to.
//
// Not exported from the package root: it uses ajv and @bufbuild/cel, dev dependencies that the
// production image does not install. Import it by path from tests.
import { isCelError, run } from '@bufbuild/cel';
import { Ajv, type ErrorObject } from 'ajv';
import type { ResourceType } from './resources.js';
import type { KubeObject, ObjectValidator, StatusCause } from './store.js';

type Schema = Record<string, unknown>;

interface CrdVersion {
  name: string;
  schema?: { openAPIV3Schema?: Schema };
}

export interface CrdObject {
  kind?: string;
  spec: { group: string; names: { kind: string; plural: string }; versions: CrdVersion[] };
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** OpenAPI → JSON Schema for ajv: closed objects (strict field validation), no Kubernetes extensions. */
function toJsonSchema(schema: unknown, root = true): unknown {
  if (Array.isArray(schema)) return schema.map((s) => toJsonSchema(s, false));
  if (!isObj(schema)) return schema;
  const out: Schema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k.startsWith('x-kubernetes-') || k === 'format' || k === 'nullable') continue;
    if (k === 'properties' && isObj(v)) {
      out.properties = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, toJsonSchema(s, false)]));
    } else if (k === 'default' || k === 'enum' || k === 'example') out[k] = v;
    else out[k] = toJsonSchema(v, false);
  }
  if (
    isObj(schema.properties) &&
    schema.additionalProperties === undefined &&
    schema['x-kubernetes-preserve-unknown-fields'] !== true
  ) {
    out.additionalProperties = false;
  }
  // The API server fills apiVersion/kind/metadata; only the CR's own fields are closed.
  if (root && isObj(out.properties)) out.additionalProperties = true;
  return out;
}

function ajvPath(e: ErrorObject): string {
  const base = e.instancePath
    .replace(/^\//, '')
    .replace(/\/(\d+)(?=\/|$)/g, '[$1]')
    .replace(/\//g, '.');
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty?: string }).additionalProperty;
    return base ? `${base}.${extra}` : String(extra);
  }
  if (e.keyword === 'required') {
    const missing = (e.params as { missingProperty?: string }).missingProperty;
    return base ? `${base}.${missing}` : String(missing);
  }
  return base;
}

function ajvMessage(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return 'unknown field';
    case 'required':
      return 'Required value';
    case 'enum':
      return `Unsupported value: supported values: ${((e.params as { allowedValues?: unknown[] }).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return `Invalid value: ${e.message ?? e.keyword}`;
  }
}

/** JSON → CEL values: integers become CEL ints, objects maps. */
function toCel(value: unknown): unknown {
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  if (Array.isArray(value)) return value.map(toCel);
  if (isObj(value)) return new Map(Object.entries(value).map(([k, v]) => [k, toCel(v)]));
  return value;
}

function celRules(schema: Schema, value: unknown, path: string, causes: StatusCause[]): void {
  if (value === undefined) return;
  const rules = schema['x-kubernetes-validations'];
  if (Array.isArray(rules)) {
    for (const r of rules as Array<{ rule: string; message?: string }>) {
      const result = run(r.rule, { self: toCel(value) as never });
      if (isCelError(result)) {
        causes.push({
          field: path,
          message: `Invalid value: rule evaluation failed: ${r.rule}: ${result.message}`,
          reason: 'FieldValueInvalid',
        });
      } else if (result !== true) {
        causes.push({
          field: path,
          message: `Invalid value: ${r.message ?? `failed rule: ${r.rule}`}`,
          reason: 'FieldValueInvalid',
        });
      }
    }
  }
  if (isObj(value) && isObj(schema.properties)) {
    for (const [k, sub] of Object.entries(schema.properties)) {
      if (isObj(sub)) celRules(sub, value[k], path ? `${path}.${k}` : k, causes);
    }
  }
  if (isObj(value) && isObj(schema.additionalProperties)) {
    for (const [k, v] of Object.entries(value))
      celRules(schema.additionalProperties, v, `${path}[${k}]`, causes);
  }
  if (Array.isArray(value) && isObj(schema.items)) {
    const items = schema.items;
    value.forEach((v, i) => {
      celRules(items, v, `${path}[${i}]`, causes);
    });
  }
}

export interface CrdValidator {
  kind: string;
  group: string;
  version: string;
  validate(object: unknown): StatusCause[];
}

export function compileCrd(crd: CrdObject, versionName?: string): CrdValidator {
  const version = versionName ? crd.spec.versions.find((v) => v.name === versionName) : crd.spec.versions[0];
  const schema = version?.schema?.openAPIV3Schema;
  if (!version || !schema)
    throw new Error(
      `CRD ${crd.spec.names.plural}.${crd.spec.group} has no schema for version ${versionName ?? '(first)'}`,
    );
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false, useDefaults: false });
  const check = ajv.compile(toJsonSchema(schema) as Schema);
  return {
    kind: crd.spec.names.kind,
    group: crd.spec.group,
    version: version.name,
    validate(object) {
      const causes: StatusCause[] = [];
      if (!check(object)) {
        for (const e of check.errors ?? []) {
          causes.push({
            field: ajvPath(e),
            message: ajvMessage(e),
            reason: e.keyword === 'required' ? 'FieldValueRequired' : 'FieldValueInvalid',
          });
        }
      }
      // CEL rules run only on schema-valid objects, as in the API server.
      if (causes.length === 0) celRules(schema, object, '', causes);
      return causes;
    },
  };
}

/** A stand-in API server `validate` hook enforcing these CRDs on create and update. */
export function crdObjectValidator(crds: readonly CrdObject[]): ObjectValidator {
  const validators = crds.flatMap((crd) => crd.spec.versions.map((v) => compileCrd(crd, v.name)));
  return (resource: ResourceType, object: KubeObject) => {
    const v = validators.find(
      (x) => x.group === resource.group && x.version === resource.version && x.kind === resource.kind,
    );
    return v?.validate(object);
  };
}
