import {
  type ConfigObject,
  type ConfigState,
  createConfigState,
  demoConfigObjects,
  translateObject,
} from '@hypha/shared/config';
import { ExplainError, explainConnection } from '@hypha/shared/policy';
import { beforeEach, describe, expect, it } from 'vitest';

function typed(raws: unknown[]): ConfigObject[] {
  return raws.map((raw) => {
    const r = translateObject(raw, { source: 'test' });
    if (r.status !== 'ok') throw new Error(JSON.stringify(r));
    return r.object;
  });
}

const policy = (namespace: string, name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { namespace, name },
  spec,
});

let state: ConfigState;
beforeEach(() => {
  state = createConfigState();
  state.applySnapshot(
    typed([
      ...demoConfigObjects(),
      policy('demo', 'echo-v2-from-client-only', {
        selector: { matchLabels: { app: 'echo', version: 'v2' } },
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }] }],
      }),
    ]),
  );
});

describe('explainConnection', () => {
  it('fans a Service out to its endpoints with resolved target ports', () => {
    const e = explainConnection(state, { from: 'demo/client', to: 'demo/echo:80' });
    expect(e.decision).toBe('allow');
    expect(e.targets.map((t) => [t.workload.name, t.port, t.decision])).toEqual([
      ['echo-v1', 8080, 'allow'],
      ['echo-v2', 8080, 'allow'],
    ]);
    const text = e.lines.join('\n');
    expect(text).toContain(
      'source pod demo/client (10.244.1.10) as spiffe://cluster.local/ns/demo/sa/client',
    );
    expect(text).toContain('destination Service demo/echo:80 → 2 endpoint(s)');
    expect(text).toContain('ALLOW demo/echo-v2-from-client-only: rules[0] matches');
  });

  it('reports mixed decisions when endpoints disagree, naming the policy', () => {
    const e = explainConnection(state, { from: 'demo/other-sa', to: 'demo/echo:80' });
    expect(e.decision).toBe('mixed');
    expect(e.targets.map((t) => t.decision)).toEqual(['allow', 'deny']);
    expect(e.lines.join('\n')).toContain('source service account spiffe://cluster.local/ns/demo/sa/other-sa');
    expect(e.lines.join('\n')).toMatch(
      /ALLOW policies apply to demo\/echo-v2 \(demo\/echo-v2-from-client-only\) but none matched/,
    );
  });

  it('treats a pod outside the mesh as a plaintext source, and STRICT refuses it', () => {
    expect(explainConnection(state, { from: 'outside/plain', to: 'demo/echo-v2:8080' }).decision).toBe(
      'deny',
    );
    state.upsert(
      typed([
        {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: {
            name: 'demo',
            labels: { 'hypha.dev/dataplane-mode': 'ambient', 'hypha.dev/mtls-mode': 'strict' },
          },
        },
      ])[0]!,
    );
    const e = explainConnection(state, { from: '10.244.2.11', to: 'demo/echo-v1:8080' });
    expect(e.decision).toBe('deny');
    expect(e.targets[0]!.note).toMatch(/STRICT: plaintext .* refused/);
    expect(e.lines[0]).toBe('source 10.244.2.11 (outside/plain): plaintext, no peer identity');
  });

  it('says when the destination is not in the mesh (no enforcement)', () => {
    const e = explainConnection(state, { from: 'demo/client', to: 'outside/plain:8080' });
    expect(e.decision).toBe('allow');
    expect(e.targets[0]!.note).toContain('outside/plain is not in the mesh');
  });

  it('rejects malformed or unknown arguments with actionable messages', () => {
    const err = (from: string, to: string) => {
      try {
        explainConnection(state, { from, to });
      } catch (e) {
        expect(e).toBeInstanceOf(ExplainError);
        return `${(e as ExplainError).code}: ${(e as Error).message}`;
      }
      throw new Error('expected an error');
    };
    expect(err('client', 'demo/echo:80')).toMatch(/^BAD_SOURCE: --from "client": expected <namespace>\//);
    expect(err('demo/client', 'demo/echo')).toMatch(/^BAD_DESTINATION: /);
    expect(err('demo/client', 'demo/nope:80')).toBe(
      'UNKNOWN_DESTINATION: --to: no Service or pod named demo/nope',
    );
    expect(err('demo/client', 'demo/echo:81')).toBe(
      'UNKNOWN_PORT: --to: Service demo/echo has no port 81 (ports: 80)',
    );
  });
});
