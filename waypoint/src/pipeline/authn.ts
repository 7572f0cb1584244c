// Filter 2, request authentication (RequestAuthentication, JWT): finds the token a request carries,
// verifies it with the rule for its issuer (signature, exp, nbf, iss, aud) and puts the verified token
// on the request (`rc.auth`) for authorization (requestPrincipals, request.auth.claims[...]).
//
// Invariants (Istio's):
// - A request without a token passes: whether it may go on is authorization's business
//   (an ALLOW on requestPrincipals refuses it with 403).
// - A request with a token that fails verification is refused here: 401, the reason as the body and
//   in the access log (`authn_failure`), response flag UAEX, `www-authenticate: Bearer ...`.
// - The token's header is removed before the request goes upstream unless `forwardOriginalToken`;
//   `outputClaimToHeaders` copies claims of a verified token into request headers.
// - Signature checks are jose's (`jwtVerify`); nothing here parses or checks signatures by hand.

import type { IncomingHttpHeaders } from 'node:http';
import type { RequestAuth } from '@hypha/shared/policy';
import { decodeJwt, errors, type JWTPayload, jwtVerify } from 'jose';
import { type JwksCache, JwksFetchError } from '../authn/jwks.js';
import type { AuthnSet, JwtRule, TokenLocation } from '../authn/policy.js';
import type { Filter, Outcome, RequestContext } from './context.js';

export interface AuthnDeps {
  jwks: JwksCache;
  /** Wall clock in ms for exp/nbf; default Date.now (tests drive it). */
  now?: () => number;
}

/** The response flag of a request refused for its token (Envoy's flag for an external authn/z refusal). */
export const AUTHN_FLAG = 'UAEX';

export function authnFilter(deps: AuthnDeps): Filter {
  const now = deps.now ?? Date.now;
  return {
    name: 'authn',
    run(rc, next) {
      // Most services have no RequestAuthentication: no promise for them.
      const set = rc.snap.authn.get(rc.service!.key);
      if (set === undefined) return next(rc);
      return authenticate(set, rc.headers, rc.query, deps.jwks, now()).then((r) => {
        if (r === undefined) return next(rc);
        if ('failure' in r) return refuse(rc, r.failure);
        rc.auth = r.auth;
        return next(rc);
      });
    },
  };
}

/**
 * The request's token, verified: the token (undefined without one), or why it failed. On success the
 * headers are edited for upstream (token header removed unless forwardOriginalToken, claims copied
 * by outputClaimToHeaders). Serves the pipeline and the HTTP/1.1 upgrade path alike.
 */
export async function authenticate(
  set: AuthnSet,
  requestHeaders: IncomingHttpHeaders,
  query: string,
  jwks: JwksCache,
  nowMs: number,
): Promise<{ auth: RequestAuth } | { failure: string } | undefined> {
  const found = findToken(requestHeaders, query, set);
  if (found === undefined) return undefined;
  const r = await verify(found.token, set, jwks, nowMs);
  if (typeof r === 'string') return { failure: r };
  const headers = requestHeaders as Record<string, string | string[] | undefined>;
  if (!r.rule.forwardOriginalToken && found.at.header !== undefined) delete headers[found.at.header];
  for (const o of r.rule.outputClaimToHeaders) {
    const v = r.payload[o.claim];
    if (v === undefined || v === null) continue;
    headers[o.header] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return { auth: authOf(r.payload) };
}

function refuse(rc: RequestContext, reason: string): Outcome {
  rc.authnFailure = reason;
  return { kind: 'local', status: 401, body: reason, flag: AUTHN_FLAG, headers: challenge(rc.host) };
}

/** The `www-authenticate` header of a 401 (RFC 6750). */
export function challenge(host: string): Record<string, string> {
  return { 'www-authenticate': `Bearer realm="${host}", error="invalid_token"` };
}

/** The first token in a location some rule reads (rules in order, then their locations). */
function findToken(
  headers: IncomingHttpHeaders,
  query: string,
  set: AuthnSet,
): { token: string; at: TokenLocation } | undefined {
  for (const rule of set.rules) {
    for (const at of rule.from) {
      if (at.header !== undefined) {
        const v = headers[at.header];
        const value = Array.isArray(v) ? v[0] : v;
        if (value === undefined) continue;
        const prefix = at.prefix ?? '';
        if (prefix !== '' && !value.toLowerCase().startsWith(prefix.toLowerCase())) continue;
        const token = value.slice(prefix.length).trim();
        if (token !== '') return { token, at };
      } else if (at.param !== undefined && query !== '') {
        const token = new URLSearchParams(query).get(at.param);
        if (token) return { token, at };
      }
    }
  }
  return undefined;
}

/** The verified payload and its rule, or the reason it failed (Envoy's wording). */
async function verify(
  token: string,
  set: AuthnSet,
  jwks: JwksCache,
  nowMs: number,
): Promise<{ payload: JWTPayload; rule: JwtRule } | string> {
  let issuer: string | undefined;
  try {
    issuer = decodeJwt(token).iss;
  } catch {
    return 'Jwt is not in the form of Header.Payload.Signature';
  }
  const rule = set.rules.find((r) => r.issuer === issuer);
  if (rule === undefined) return 'Jwt issuer is not configured';
  try {
    const key =
      'local' in rule.keys
        ? rule.keys.local
        : (header: Parameters<JwksCache['fetchKey']>[1], input: Parameters<JwksCache['fetchKey']>[2]) =>
            jwks.fetchKey((rule.keys as { uri: string }).uri, header, input);
    const { payload } = await jwtVerify(token, key, {
      issuer: rule.issuer,
      ...(rule.audiences !== undefined ? { audience: [...rule.audiences] } : {}),
      currentDate: new Date(nowMs),
    });
    return { payload, rule };
  } catch (err) {
    return reasonOf(err);
  }
}

function reasonOf(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'Jwt is expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'Jwt not yet valid';
    if (err.claim === 'aud') return 'Audiences in Jwt are not allowed';
    if (err.claim === 'iss') return 'Jwt issuer is not configured';
    return `Jwt verification fails: ${err.claim} claim: ${err.reason}`;
  }
  if (err instanceof errors.JWKSNoMatchingKey) return "Jwks doesn't have key to match kid or alg from Jwt";
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'Jwt verification fails';
  if (err instanceof JwksFetchError) return 'Jwks remote fetch is failed';
  if (err instanceof errors.JOSEError) return `Jwt verification fails: ${err.message}`;
  return 'Jwt verification fails';
}

function authOf(p: JWTPayload): RequestAuth {
  const aud = p.aud === undefined ? [] : Array.isArray(p.aud) ? p.aud : [p.aud];
  return {
    principal: `${p.iss ?? ''}/${p.sub ?? ''}`,
    audiences: aud,
    presenter: typeof p.azp === 'string' ? p.azp : '',
    claims: p,
  };
}
