// zod schemas for the parts of Gateway API HTTPRoute/GRPCRoute (v1, retry shape of v1.2+) the
// waypoint implements. Unknown fields are ignored (forward compatible); wrong types are errors.
import { z } from 'zod';

const name = z.string().min(1).max(253);
const port = z.number().int().min(1).max(65535);
const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/, 'not a valid HTTP header name');

export const parentRefSchema = z.object({
  group: z.string().optional(),
  kind: z.string().optional(),
  name,
  namespace: z.string().optional(),
  port: port.optional(),
  sectionName: z.string().optional(),
});

const headerModifierSchema = z.object({
  set: z
    .array(z.object({ name: headerName, value: z.string() }))
    .max(16)
    .optional(),
  add: z
    .array(z.object({ name: headerName, value: z.string() }))
    .max(16)
    .optional(),
  remove: z.array(headerName).max(16).optional(),
});

const pathModifierSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ReplaceFullPath'), replaceFullPath: z.string().startsWith('/') }),
  z.object({ type: z.literal('ReplacePrefixMatch'), replacePrefixMatch: z.string().startsWith('/') }),
]);

const backendObjectRef = z.object({
  group: z.string().optional(),
  kind: z.string().optional(),
  name,
  namespace: z.string().optional(),
  port: port.optional(),
});

export const filterSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('RequestHeaderModifier'), requestHeaderModifier: headerModifierSchema }),
  z.object({ type: z.literal('ResponseHeaderModifier'), responseHeaderModifier: headerModifierSchema }),
  z.object({
    type: z.literal('RequestRedirect'),
    requestRedirect: z.object({
      scheme: z.enum(['http', 'https']).optional(),
      hostname: z.string().min(1).optional(),
      port: port.optional(),
      path: pathModifierSchema.optional(),
      statusCode: z
        .union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)])
        .optional(),
    }),
  }),
  z.object({
    type: z.literal('URLRewrite'),
    urlRewrite: z.object({ hostname: z.string().min(1).optional(), path: pathModifierSchema.optional() }),
  }),
  z.object({
    type: z.literal('RequestMirror'),
    requestMirror: z.object({
      backendRef: backendObjectRef,
      percent: z.number().int().min(0).max(100).optional(),
      fraction: z
        .object({ numerator: z.number().int().min(0), denominator: z.number().int().min(1).optional() })
        .optional(),
    }),
  }),
]);

const backendRefSchema = backendObjectRef.extend({
  weight: z.number().int().min(0).max(1_000_000).optional(),
  filters: z.array(filterSchema).optional(),
});

const valueMatch = z.object({
  type: z.enum(['Exact', 'RegularExpression']).optional(),
  name: headerName,
  value: z.string().max(4096),
});

export const httpMatchSchema = z.object({
  path: z
    .object({
      type: z.enum(['Exact', 'PathPrefix', 'RegularExpression']).optional(),
      value: z.string().max(1024).optional(),
    })
    .optional(),
  headers: z.array(valueMatch).max(16).optional(),
  queryParams: z.array(valueMatch).max(16).optional(),
  method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']).optional(),
});

export const grpcMatchSchema = z.object({
  method: z
    .object({
      type: z.enum(['Exact', 'RegularExpression']).optional(),
      service: z.string().min(1).optional(),
      method: z.string().min(1).optional(),
    })
    .optional(),
  headers: z.array(valueMatch).max(16).optional(),
});

const durationString = z
  .string()
  .regex(/^([0-9]{1,5}(h|m|s|ms)){1,4}$/, 'must be a Gateway API duration such as "10s" or "500ms"');

const retrySchema = z.object({
  codes: z.array(z.number().int().min(400).max(599)).optional(),
  attempts: z.number().int().min(0).max(100).optional(),
  backoff: durationString.optional(),
});

const commonRule = {
  filters: z.array(filterSchema).max(16).optional(),
  backendRefs: z.array(backendRefSchema).max(16).optional(),
  timeouts: z
    .object({ request: durationString.optional(), backendRequest: durationString.optional() })
    .optional(),
  retry: retrySchema.optional(),
};

export const httpRouteSpecSchema = z.object({
  parentRefs: z.array(parentRefSchema).min(1, 'at least one parentRef is required').max(32),
  hostnames: z.array(z.string().min(1).max(253)).max(16).optional(),
  rules: z
    .array(z.object({ matches: z.array(httpMatchSchema).max(64).optional(), ...commonRule }))
    .max(16)
    .optional(),
});

export const grpcRouteSpecSchema = z.object({
  parentRefs: z.array(parentRefSchema).min(1, 'at least one parentRef is required').max(32),
  hostnames: z.array(z.string().min(1).max(253)).max(16).optional(),
  rules: z
    .array(z.object({ matches: z.array(grpcMatchSchema).max(64).optional(), ...commonRule }))
    .max(16)
    .optional(),
});

export type HttpRouteSpec = z.infer<typeof httpRouteSpecSchema>;
export type GrpcRouteSpec = z.infer<typeof grpcRouteSpecSchema>;
export type FilterSpec = z.infer<typeof filterSchema>;
export type RetrySpec = z.infer<typeof retrySchema>;
export { durationString, retrySchema };
