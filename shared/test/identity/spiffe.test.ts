import { describe, expect, it } from 'vitest';
import { parseSpiffeId, SpiffeId, SpiffeIdError, tryParseSpiffeId } from '../../src/identity/index.js';

describe('parseSpiffeId', () => {
  it.each([
    ['spiffe://cluster.local/ns/default/sa/default', 'cluster.local', 'default', 'default'],
    ['spiffe://example.org/ns/shop/sa/web', 'example.org', 'shop', 'web'],
    ['spiffe://td_1-x/ns/a1/sa/svc.account-2', 'td_1-x', 'a1', 'svc.account-2'],
  ])('accepts %s', (uri, td, ns, sa) => {
    const id = parseSpiffeId(uri);
    expect(id.trustDomain).toBe(td);
    expect(id.namespace).toBe(ns);
    expect(id.serviceAccount).toBe(sa);
    expect(id.toString()).toBe(uri);
    expect(id.principal).toBe(uri.slice('spiffe://'.length));
    expect(id.equals(parseSpiffeId(uri))).toBe(true);
  });

  it('builds from parts and compares by value', () => {
    expect(SpiffeId.of('cluster.local', 'shop', 'web').toString()).toBe(
      'spiffe://cluster.local/ns/shop/sa/web',
    );
    expect(
      parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web').equals(
        parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api'),
      ),
    ).toBe(false);
    expect(JSON.stringify({ id: parseSpiffeId('spiffe://a/ns/b/sa/c') })).toBe(
      '{"id":"spiffe://a/ns/b/sa/c"}',
    );
  });

  it.each([
    ['', /empty/],
    ['https://cluster.local/ns/a/sa/b', /scheme must be "spiffe"/],
    ['SPIFFE://cluster.local/ns/a/sa/b', /scheme must be "spiffe"/],
    ['cluster.local/ns/a/sa/b', /missing "spiffe:\/\/" scheme/],
    ['spiffe:///ns/a/sa/b', /trust domain is empty/],
    ['spiffe://cluster.local', /path is missing/],
    ['spiffe://cluster.local/ns/a', /path must be \/ns\/<namespace>\/sa\/<service-account>/],
    ['spiffe://cluster.local/ns/a/sa', /path must be/],
    ['spiffe://cluster.local/ns/a/sa/b/extra', /path must be/],
    ['spiffe://cluster.local/ns/a/sa/b/', /empty segment/],
    ['spiffe://cluster.local/ns//sa/b', /empty segment/],
    ['spiffe://cluster.local/namespace/a/sa/b', /path must be/],
    ['spiffe://cluster.local/ns/a/sa/b?x=1', /query and fragment/],
    ['spiffe://cluster.local/ns/a/sa/b#frag', /query and fragment/],
    ['spiffe://user@cluster.local/ns/a/sa/b', /user info/],
    ['spiffe://cluster.local:8080/ns/a/sa/b', /port is not allowed/],
    ['spiffe://Cluster.Local/ns/a/sa/b', /trust domain .* may contain only lowercase/],
    ['spiffe://cluster.local/ns/a b/sa/b', /character outside/],
    ['spiffe://cluster.local/ns/a%20b/sa/b', /character outside/],
    ['spiffe://cluster.local/ns/../sa/b', /"\." and "\.\." are not allowed/],
    ['spiffe://cluster.local/ns/Shop/sa/b', /not a valid Kubernetes namespace/],
    ['spiffe://cluster.local/ns/-shop/sa/b', /not a valid Kubernetes namespace/],
    ['spiffe://cluster.local/ns/a/sa/Web', /service account .* not a valid Kubernetes name/],
    [`spiffe://cluster.local/ns/${'a'.repeat(64)}/sa/b`, /not a valid Kubernetes namespace/],
    [`spiffe://${'a'.repeat(256)}/ns/a/sa/b`, /trust domain longer than 255/],
    [`spiffe://cluster.local/ns/a/sa/${'b'.repeat(2100)}`, /longer than 2048 characters/],
  ])('rejects %j with a precise reason', (input, reason) => {
    let caught: unknown;
    try {
      parseSpiffeId(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SpiffeIdError);
    expect((caught as SpiffeIdError).code).toBe('INVALID_SPIFFE_ID');
    expect((caught as Error).message).toMatch(reason);
    expect(tryParseSpiffeId(input)).toBeUndefined();
  });
});
