// An ingress Gateway's listeners (class `hypha`), compiled from the config state: which ports to
// open, with which protocol, which certificate each HTTPS hostname presents, and the verdict for
// each listener's status (Gateway API conditions). Pure: the state in, plain data out.
//
// Invariants:
// - One bad listener (unknown protocol, missing or unreadable Secret, conflict) is not served and
//   says why in its conditions; every other listener keeps serving.
// - Listeners on one port share one socket, so they must share its kind: HTTP alone, or HTTPS
//   listeners told apart by SNI (hostname), or TLS passthrough by SNI, or one TCP listener. A
//   listener that does not fit the port's first listener is Conflicted and not served.
// - Certificates come only from Secrets of type kubernetes.io/tls in the Gateway's namespace
//   (no ReferenceGrant support: other namespaces are RefNotPermitted). Key material never leaves
//   this module except inside the compiled listener (no log line or status message carries it).
import { createSecureContext, type SecureContext } from 'node:tls';
import type { ConfigState, GatewayListener, GatewayObject } from '@hypha/shared/config';

export type ListenerProtocol = 'HTTP' | 'HTTPS' | 'TLS' | 'TCP';
export type ListenerRouteKind = 'HTTPRoute' | 'GRPCRoute' | 'TLSRoute' | 'TCPRoute';

export type ListenerConditionType = 'Accepted' | 'ResolvedRefs' | 'Programmed' | 'Conflicted';

export interface ListenerCondition {
  type: ListenerConditionType;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

/** The certificate an HTTPS listener presents (from its first usable certificateRef). */
export interface ListenerCertificate {
  /** `namespace/name` of the Secret. */
  secret: string;
  /** PEM chain and key, as read from the Secret: pass to TLS, never log. */
  certificate: string;
  privateKey: string;
  context: SecureContext;
}

export interface CompiledListener {
  name: string;
  port: number;
  protocol: string;
  /** Lowercase; undefined = any host. */
  hostname: string | undefined;
  /** Served: accepted, refs resolved, no conflict. */
  serving: boolean;
  /** HTTPS only, when resolved. */
  certificate: ListenerCertificate | undefined;
  /** Route namespaces it admits (Gateway API allowedRoutes.namespaces.from; Selector unsupported). */
  allowedFrom: 'Same' | 'All';
  supportedKinds: readonly ListenerRouteKind[];
  /** Accepted, ResolvedRefs, Conflicted (Programmed is added by whoever opens the socket). */
  conditions: ListenerCondition[];
}

/** What one socket serves: the listeners on a port that are served, all of one kind. */
export interface PortPlan {
  port: number;
  kind: ListenerProtocol;
  listeners: CompiledListener[];
}

export interface CompiledGateway {
  listeners: CompiledListener[];
  ports: Map<number, PortPlan>;
}

const KINDS: Readonly<Record<ListenerProtocol, readonly ListenerRouteKind[]>> = {
  HTTP: ['HTTPRoute', 'GRPCRoute'],
  HTTPS: ['HTTPRoute', 'GRPCRoute'],
  TLS: ['TLSRoute'],
  TCP: ['TCPRoute'],
};

const cond = (
  type: ListenerConditionType,
  ok: boolean,
  reason: string,
  message: string,
): ListenerCondition => ({ type, status: ok ? 'True' : 'False', reason, message });

/**
 * Secure contexts are built once per Secret content (a Secret that did not change keeps its context;
 * a changed one gets a new context, picked up by the next handshake).
 */
const contexts = new WeakMap<object, { context: SecureContext } | { error: string }>();

function contextFor(secret: {
  certificate: string;
  privateKey: string;
}): { context: SecureContext } | { error: string } {
  let c = contexts.get(secret);
  if (c === undefined) {
    try {
      c = { context: createSecureContext({ cert: secret.certificate, key: secret.privateKey }) };
    } catch (err) {
      // OpenSSL's reason (e.g. "key values mismatch") names no key material.
      c = { error: (err as Error).message };
    }
    contexts.set(secret, c);
  }
  return c;
}

function resolveCertificate(
  state: ConfigState,
  gw: GatewayObject,
  l: GatewayListener,
): { certificate: ListenerCertificate } | { reason: string; message: string } {
  const refs = l.tls?.certificateRefs ?? [];
  if (refs.length === 0)
    return {
      reason: 'InvalidCertificateRef',
      message: 'an HTTPS listener needs tls.certificateRefs naming a Secret of type kubernetes.io/tls',
    };
  const problems: string[] = [];
  let reason = 'InvalidCertificateRef';
  for (const [i, ref] of refs.entries()) {
    const field = `tls.certificateRefs[${i}]`;
    const group = ref.group ?? '';
    const kind = ref.kind ?? 'Secret';
    if ((group !== '' && group !== 'core') || kind !== 'Secret') {
      problems.push(
        `${field}: ${group === '' ? '' : `${group}/`}${kind} is not supported (use a core Secret)`,
      );
      continue;
    }
    const ns = ref.namespace ?? gw.namespace;
    if (ns !== gw.namespace) {
      reason = 'RefNotPermitted';
      problems.push(
        `${field}: Secret ${ns}/${ref.name} is in another namespace (ReferenceGrants are not supported; put the Secret in ${gw.namespace})`,
      );
      continue;
    }
    const secret = state.findTlsSecret(ns, ref.name);
    if (secret === undefined) {
      problems.push(`${field}: Secret ${ns}/${ref.name} not found (or not of type kubernetes.io/tls)`);
      continue;
    }
    const ctx = contextFor(secret);
    if ('error' in ctx) {
      problems.push(`${field}: Secret ${ns}/${ref.name}: certificate and key do not load: ${ctx.error}`);
      continue;
    }
    return {
      certificate: {
        secret: `${ns}/${ref.name}`,
        certificate: secret.certificate,
        privateKey: secret.privateKey,
        context: ctx.context,
      },
    };
  }
  return { reason, message: problems.join('; ') };
}

/** Compiles the Gateway's listeners against the current state (Secrets). */
export function compileGateway(state: ConfigState, gw: GatewayObject): CompiledGateway {
  const listeners: CompiledListener[] = [];
  const ports = new Map<number, PortPlan>();
  const seenNames = new Set<string>();
  for (const l of gw.listeners) {
    const protocol = l.protocol.toUpperCase();
    const hostname = l.hostname?.toLowerCase();
    const from = l.allowedRoutes?.namespaces?.from ?? 'Same';
    const c: CompiledListener = {
      name: l.name,
      port: l.port,
      protocol: l.protocol,
      hostname,
      serving: false,
      certificate: undefined,
      allowedFrom: from === 'All' ? 'All' : 'Same',
      supportedKinds: (KINDS as Record<string, readonly ListenerRouteKind[]>)[protocol] ?? [],
      conditions: [],
    };
    listeners.push(c);
    const reject = (reason: string, message: string) =>
      c.conditions.push(
        cond('Accepted', false, reason, message),
        cond('ResolvedRefs', true, 'ResolvedRefs', 'no references to resolve'),
      );
    if (seenNames.has(l.name)) {
      reject('Invalid', `listener name "${l.name}" is used twice`);
      continue;
    }
    seenNames.add(l.name);
    if (!(protocol in KINDS)) {
      reject('UnsupportedProtocol', `protocol ${l.protocol} is not supported (use HTTP, HTTPS, TLS or TCP)`);
      continue;
    }
    const kind = protocol as ListenerProtocol;
    const mode = l.tls?.mode ?? 'Terminate';
    if (kind === 'HTTPS' && mode !== 'Terminate') {
      reject(
        'UnsupportedValue',
        `HTTPS listeners terminate TLS (tls.mode Terminate); for ${mode} use protocol TLS`,
      );
      continue;
    }
    if (kind === 'TLS' && mode !== 'Passthrough') {
      reject(
        'UnsupportedValue',
        'TLS listeners pass TLS through (set tls.mode: Passthrough); to terminate TLS use protocol HTTPS',
      );
      continue;
    }
    if (from !== 'Same' && from !== 'All') {
      reject('UnsupportedValue', `allowedRoutes.namespaces.from ${from} is not supported (use Same or All)`);
      continue;
    }
    // Port sharing: the first listener on a port decides its kind; hostnames must differ.
    const plan = ports.get(l.port);
    let conflict: string | undefined;
    if (plan !== undefined) {
      const same = plan.listeners.find((o) => o.hostname === hostname);
      if (plan.kind !== kind)
        conflict = `port ${l.port} already serves ${plan.kind} (listener ${plan.listeners[0]?.name})`;
      else if (kind === 'TCP')
        conflict = `port ${l.port} already serves TCP listener ${plan.listeners[0]?.name}`;
      else if (same !== undefined)
        conflict = `listener ${same.name} on port ${l.port} has the same hostname (${hostname ?? 'none'})`;
    }
    if (conflict !== undefined) {
      const reason = conflict.includes('hostname') ? 'HostnameConflict' : 'ProtocolConflict';
      c.conditions.push(
        cond('Accepted', false, reason, conflict),
        cond('ResolvedRefs', true, 'ResolvedRefs', 'no references to resolve'),
        cond('Conflicted', true, reason, conflict),
      );
      continue;
    }
    if (kind === 'HTTPS') {
      const r = resolveCertificate(state, gw, l);
      if ('reason' in r) {
        c.conditions.push(
          cond('Accepted', true, 'Accepted', 'listener accepted'),
          cond('ResolvedRefs', false, r.reason, r.message),
          cond('Conflicted', false, 'NoConflicts', 'no conflicts'),
        );
        continue;
      }
      c.certificate = r.certificate;
    }
    c.conditions.push(
      cond('Accepted', true, 'Accepted', 'listener accepted'),
      cond(
        'ResolvedRefs',
        true,
        'ResolvedRefs',
        c.certificate ? `certificate from Secret ${c.certificate.secret}` : 'no references to resolve',
      ),
      cond('Conflicted', false, 'NoConflicts', 'no conflicts'),
    );
    c.serving = true;
    if (plan === undefined) ports.set(l.port, { port: l.port, kind, listeners: [c] });
    else plan.listeners.push(c);
  }
  return { listeners, ports };
}

/** Gateway API hostnames: exact, or a leading "*." matching one or more labels. */
export function hostnameMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return pattern === host;
}

/**
 * The listener of a port that takes a TLS client hello for `serverName` (SNI): an exact hostname
 * first, then the longest wildcard, then a listener without hostname. Undefined: none.
 */
export function findListenerForSni(
  plan: PortPlan,
  serverName: string | undefined,
): CompiledListener | undefined {
  const host = serverName?.toLowerCase();
  let best: CompiledListener | undefined;
  let bestRank = -1;
  for (const l of plan.listeners) {
    let rank: number;
    if (l.hostname === undefined) rank = 0;
    else if (host === undefined) continue;
    else if (l.hostname === host) rank = 1_000_000;
    else if (l.hostname.startsWith('*.') && hostnameMatches(l.hostname, host)) rank = l.hostname.length;
    else continue;
    if (rank > bestRank) {
      best = l;
      bestRank = rank;
    }
  }
  return best;
}
