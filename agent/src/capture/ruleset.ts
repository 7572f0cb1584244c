// The node-mode nftables ruleset, rendered as one `nft -f` transaction.
//
//   prerouting (nat, priority dstnat - 10), first match wins:
//     UDP/TCP dport 53 from a mesh pod    -> :dns      (15053)   only with the DNS proxy on; any
//                                                               resolver address the pod asks
//     TCP from a mesh pod                 -> :outbound (15001)   also mesh pod -> mesh pod on this node
//     TCP to a mesh pod, dport hbone      -> :hbone    (15008)   HBONE from other nodes' agents
//     TCP to a mesh pod, anything else    -> :inbound  (15006)   plaintext from non-mesh clients
//   prerouting (filter, priority mangle):
//     TCP to a transparent socket         -> mark 0x111          replies to connections the agent
//                                                               opened with a pod client's source IP;
//                                                               `ip rule fwmark 0x111 lookup 111` +
//                                                               `local 0.0.0.0/0 dev lo table 111`
//                                                               deliver them to the agent
//
// Only prerouting is hooked: the agent's own connections leave through OUTPUT and are never
// recaptured (so the DNS proxy's own queries to its upstream resolver cannot loop back to it).
// For UDP, `redirect` is undone on the replies by conntrack: the pod sees its answer come from the
// resolver address it asked. Only NEW connections see nat chains, so replies are never redirected.
//
// The transaction starts with `table ...` + `delete table ...`, so installing is atomic and
// idempotent: whatever a crashed agent (or an older version) left is replaced, never duplicated.

export interface CapturePorts {
  outbound: number;
  inboundPlaintext: number;
  hbone: number;
  /** The DNS proxy; unset: mesh pods' DNS is not captured. */
  dns?: number;
}

export interface RulesetInput {
  table: string;
  ports: CapturePorts;
  mark: number;
  meshPods4: readonly string[];
  meshPods6: readonly string[];
}

export const SET_V4 = 'mesh_pods';
export const SET_V6 = 'mesh_pods6';
export const NAT_CHAIN = 'prerouting_nat';
export const MANGLE_CHAIN = 'prerouting_mangle';
/** Rules the ruleset installs without DNS capture; fetchState compares against it to spot drift. */
export const EXPECTED_RULES = 7;
/** Rules DNS capture adds (UDP and TCP in one rule per family). */
export const DNS_RULES = 2;

export function expectedRuleCount(ports: CapturePorts): number {
  return EXPECTED_RULES + (ports.dns === undefined ? 0 : DNS_RULES);
}

function dnsRules(ports: CapturePorts): string {
  if (ports.dns === undefined) return '';
  return `    ip saddr @${SET_V4} meta l4proto { tcp, udp } th dport 53 redirect to :${ports.dns}
    ip6 saddr @${SET_V6} meta l4proto { tcp, udp } th dport 53 redirect to :${ports.dns}
`;
}

function elements(ips: readonly string[]): string {
  return ips.length === 0 ? '' : ` elements = { ${ips.join(', ')} };`;
}

export function renderRuleset(input: RulesetInput): string {
  const { table, ports, mark } = input;
  const hex = `0x${mark.toString(16)}`;
  return `table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  set ${SET_V4} { type ipv4_addr;${elements(input.meshPods4)} }
  set ${SET_V6} { type ipv6_addr;${elements(input.meshPods6)} }
  chain ${NAT_CHAIN} {
    type nat hook prerouting priority dstnat - 10; policy accept;
${dnsRules(ports)}    ip saddr @${SET_V4} meta l4proto tcp redirect to :${ports.outbound}
    ip6 saddr @${SET_V6} meta l4proto tcp redirect to :${ports.outbound}
    ip daddr @${SET_V4} tcp dport ${ports.hbone} redirect to :${ports.hbone}
    ip6 daddr @${SET_V6} tcp dport ${ports.hbone} redirect to :${ports.hbone}
    ip daddr @${SET_V4} meta l4proto tcp redirect to :${ports.inboundPlaintext}
    ip6 daddr @${SET_V6} meta l4proto tcp redirect to :${ports.inboundPlaintext}
  }
  chain ${MANGLE_CHAIN} {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set ${hex}
  }
}
`;
}

/** Replaces the set members in one transaction, without touching any rule. */
export function renderMembership(
  table: string,
  meshPods4: readonly string[],
  meshPods6: readonly string[],
): string {
  const lines = [`flush set inet ${table} ${SET_V4}`, `flush set inet ${table} ${SET_V6}`];
  if (meshPods4.length > 0) lines.push(`add element inet ${table} ${SET_V4} { ${meshPods4.join(', ')} }`);
  if (meshPods6.length > 0) lines.push(`add element inet ${table} ${SET_V6} { ${meshPods6.join(', ')} }`);
  return `${lines.join('\n')}\n`;
}
