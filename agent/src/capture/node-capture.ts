// Node-mode capture: nftables rules in the node's network namespace, keyed on the set of local
// mesh pod IPs (see ruleset.ts for the rules and why they look the way they do).
//
// Invariants:
// - The desired state (started?, members) lives here; nft is brought to it. start() installs the
//   whole table in one transaction from the desired members, so it is idempotent and repairs
//   anything a crashed agent left. Membership changes touch only the sets.
// - If the table vanished under us (someone flushed the ruleset), a failed membership update
//   reinstalls the whole table instead of failing the pod event.
// - All nft/ip invocations are serialized: two updates never race on the same table.
// - Policy routing for source-IP preservation (fwmark rule + local route table) is reconciled the
//   same way: exactly one rule, the route replaced, both removed on stop().
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { createSilentLogger, type Logger } from '@hypha/shared';
import { CaptureError } from './errors.js';
import {
  type CapturePorts,
  expectedRuleCount,
  MANGLE_CHAIN,
  NAT_CHAIN,
  renderMembership,
  renderRuleset,
  SET_V4,
  SET_V6,
} from './ruleset.js';

const APT_HINT = 'install it with: apt-get update && apt-get install -y nftables iproute2';
const TABLE_RE = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;

export interface NodeCaptureOptions {
  /** Run nft/ip inside this named network namespace (`ip netns exec`): tests and the demo. */
  netns?: string;
  /** `inbound` is accepted as another name for `inboundPlaintext`. */
  ports?: Partial<CapturePorts> & { inbound?: number };
  /** nftables table name (family inet). Default `hypha`. */
  tableName?: string;
  /** Mark for packets of transparent sockets. Default 0x111. */
  mark?: number;
  /** Routing table that delivers marked packets locally. Default 111. */
  routeTable?: number;
  logger?: Logger;
  /** Paths of the tools (defaults: `nft`, `ip` from PATH). */
  nftPath?: string;
  ipPath?: string;
}

export interface CaptureDesiredState {
  started: boolean;
  table: string;
  ports: CapturePorts;
  meshPods: string[];
}

export interface CaptureStatus {
  /** The table exists. */
  installed: boolean;
  /** Table, chains and rule count are exactly what this version installs, and routing is in place. */
  healthy: boolean;
  chains: string[];
  ruleCount: number;
  expectedRuleCount: number;
  /** Members of both sets as nft reports them. */
  meshPods: string[];
  policyRouting: { rules: number; route: boolean };
}

export interface NodeCapture {
  start(): Promise<void>;
  setMeshPods(ips: readonly string[]): Promise<void>;
  addPod(ip: string): Promise<void>;
  removePod(ip: string): Promise<void>;
  /** The desired state held here (no system calls). */
  findState(): CaptureDesiredState;
  /** What is actually installed. */
  fetchState(): Promise<CaptureStatus>;
  stop(): Promise<void>;
}

export function createNodeCapture(options: NodeCaptureOptions = {}): NodeCapture {
  const table = options.tableName ?? 'hypha';
  if (!TABLE_RE.test(table)) {
    throw new CaptureError(
      'INVALID_ARGUMENT',
      `tableName "${table}" must be a letter followed by up to 31 letters, digits or _`,
    );
  }
  const ports: CapturePorts = {
    outbound: options.ports?.outbound ?? 15001,
    inboundPlaintext: options.ports?.inboundPlaintext ?? options.ports?.inbound ?? 15006,
    hbone: options.ports?.hbone ?? 15008,
    ...(options.ports?.dns !== undefined ? { dns: options.ports.dns } : {}),
  };
  for (const [name, port] of Object.entries(ports)) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new CaptureError('INVALID_ARGUMENT', `ports.${name} must be 1..65535, got ${port}`);
    }
  }
  const mark = options.mark ?? 0x111;
  const routeTable = options.routeTable ?? 111;
  if (!Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff) {
    throw new CaptureError('INVALID_ARGUMENT', `mark must be 1..0xffffffff, got ${mark}`);
  }
  if (!Number.isInteger(routeTable) || routeTable <= 0 || routeTable >= 253) {
    throw new CaptureError('INVALID_ARGUMENT', `routeTable must be 1..252, got ${routeTable}`);
  }
  const log = (options.logger ?? createSilentLogger()).child({ component: 'capture', table });
  const nft = options.nftPath ?? 'nft';
  const ip = options.ipPath ?? 'ip';
  const markHex = `0x${mark.toString(16)}`;
  const members = new Set<string>();
  let started = false;
  let queue: Promise<unknown> = Promise.resolve();

  // Every operation runs after the previous one settled, whatever its outcome.
  function serialize<T>(op: () => Promise<T>): Promise<T> {
    const next = queue.then(op, op);
    queue = next.catch(() => {});
    return next;
  }

  function run(tool: string, args: readonly string[], input?: string): Promise<string> {
    const [cmd, argv] = options.netns
      ? ['ip', ['netns', 'exec', options.netns, tool, ...args]]
      : [tool, [...args]];
    return new Promise((resolve, reject) => {
      const child = execFile(cmd, argv, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve(String(stdout));
        const text = String(stderr).trim() || err.message;
        const missing =
          (err as NodeJS.ErrnoException).code === 'ENOENT' || /exec of ".*" failed: No such file/.test(text);
        reject(toolError(tool, args, text, missing, err));
      });
      if (input !== undefined) child.stdin?.end(input);
    });
  }

  function toolError(
    tool: string,
    args: readonly string[],
    text: string,
    missing: boolean,
    cause: unknown,
  ): CaptureError {
    const isNft = tool === nft;
    if (missing) {
      return new CaptureError(
        isNft ? 'NFT_MISSING' : 'IP_MISSING',
        `\`${tool}\` was not found; ${APT_HINT}`,
        { cause },
      );
    }
    if (/Operation not permitted/i.test(text)) {
      return new CaptureError(
        'PERMISSION_DENIED',
        `\`${tool} ${args.join(' ')}\` was refused: capture needs root or CAP_NET_ADMIN in the node's network namespace (${text})`,
        { cause },
      );
    }
    return new CaptureError(
      isNft ? 'NFT_FAILED' : 'ROUTING_FAILED',
      `\`${tool} ${args.join(' ')}\` failed: ${text}`,
      {
        cause,
      },
    );
  }

  function split(): { v4: string[]; v6: string[] } {
    const v4: string[] = [];
    const v6: string[] = [];
    for (const addr of [...members].sort()) (isIP(addr) === 6 ? v6 : v4).push(addr);
    return { v4, v6 };
  }

  async function install(): Promise<void> {
    const { v4, v6 } = split();
    await run(nft, ['-f', '-'], renderRuleset({ table, ports, mark, meshPods4: v4, meshPods6: v6 }));
  }

  async function reconcileRouting(): Promise<void> {
    for (const family of ['-4', '-6'] as const) {
      try {
        const rules = await fetchFwmarkRules(family);
        if (rules === 0)
          await run(ip, [family, 'rule', 'add', 'fwmark', markHex, 'lookup', String(routeTable)]);
        for (let extra = rules; extra > 1; extra--) {
          await run(ip, [family, 'rule', 'del', 'fwmark', markHex, 'lookup', String(routeTable)]);
        }
        const all = family === '-4' ? '0.0.0.0/0' : '::/0';
        await run(ip, [family, 'route', 'replace', 'local', all, 'dev', 'lo', 'table', String(routeTable)]);
      } catch (err) {
        // IPv6 may be disabled on the node; IPv4 source-IP preservation still works.
        if (family === '-6') log.warn({ err }, 'IPv6 policy routing for transparent sockets not installed');
        else throw err;
      }
    }
  }

  async function fetchFwmarkRules(family: '-4' | '-6'): Promise<number> {
    const rules = JSON.parse(await run(ip, ['-j', family, 'rule', 'show'])) as Array<{
      fwmark?: string;
      table?: string;
    }>;
    return rules.filter(
      (r) => r.fwmark !== undefined && Number(r.fwmark) === mark && r.table === String(routeTable),
    ).length;
  }

  async function removeRouting(): Promise<void> {
    for (const family of ['-4', '-6'] as const) {
      try {
        for (let n = await fetchFwmarkRules(family); n > 0; n--) {
          await run(ip, [family, 'rule', 'del', 'fwmark', markHex, 'lookup', String(routeTable)]);
        }
        const all = family === '-4' ? '0.0.0.0/0' : '::/0';
        await run(ip, [family, 'route', 'del', 'local', all, 'dev', 'lo', 'table', String(routeTable)]).catch(
          () => {},
        );
      } catch (err) {
        if (family === '-4') throw err;
      }
    }
  }

  /** Applies a membership change; reinstalls everything if the table is gone. */
  async function applyMembership(script: string): Promise<void> {
    if (!started) return;
    try {
      await run(nft, ['-f', '-'], script);
    } catch (err) {
      if (err instanceof CaptureError && err.code === 'NFT_FAILED') {
        log.warn({ err: err.message }, 'membership update failed; reinstalling the capture table');
        await install();
        return;
      }
      throw err;
    }
  }

  function validate(addr: string): string {
    if (typeof addr !== 'string' || isIP(addr) === 0) {
      throw new CaptureError(
        'INVALID_ARGUMENT',
        `mesh pod address "${String(addr)}" is not an IPv4 or IPv6 address`,
      );
    }
    return addr.toLowerCase();
  }

  async function fetchTable(): Promise<Array<Record<string, unknown>> | undefined> {
    try {
      const out = JSON.parse(await run(nft, ['-j', 'list', 'table', 'inet', table])) as {
        nftables?: Array<Record<string, unknown>>;
      };
      return out.nftables ?? [];
    } catch (err) {
      if (
        err instanceof CaptureError &&
        err.code === 'NFT_FAILED' &&
        /No such file or directory/.test(err.message)
      ) {
        return undefined;
      }
      throw err;
    }
  }

  return {
    start: () =>
      serialize(async () => {
        try {
          await run(nft, ['--version']);
        } catch (err) {
          if (err instanceof CaptureError && err.code === 'NFT_FAILED') {
            throw new CaptureError('NFT_MISSING', `\`${nft}\` does not run (${err.message}); ${APT_HINT}`, {
              cause: err,
            });
          }
          throw err;
        }
        await install();
        await reconcileRouting();
        started = true;
        log.info({ ports, meshPods: members.size, netns: options.netns }, 'capture rules installed');
      }),

    setMeshPods: (ips) => {
      let next: string[];
      try {
        next = ips.map(validate);
      } catch (err) {
        return Promise.reject(err);
      }
      return serialize(async () => {
        members.clear();
        for (const addr of next) members.add(addr);
        const { v4, v6 } = split();
        await applyMembership(renderMembership(table, v4, v6));
        log.debug({ meshPods: members.size }, 'mesh pod set replaced');
      });
    },

    addPod: (addr) => {
      let value: string;
      try {
        value = validate(addr);
      } catch (err) {
        return Promise.reject(err);
      }
      return serialize(async () => {
        if (members.has(value)) return;
        members.add(value);
        const set = isIP(value) === 6 ? SET_V6 : SET_V4;
        await applyMembership(`add element inet ${table} ${set} { ${value} }\n`);
        log.debug({ ip: value }, 'pod added to capture');
      });
    },

    removePod: (addr) => {
      let value: string;
      try {
        value = validate(addr);
      } catch (err) {
        return Promise.reject(err);
      }
      return serialize(async () => {
        if (!members.delete(value)) return;
        const set = isIP(value) === 6 ? SET_V6 : SET_V4;
        await applyMembership(`delete element inet ${table} ${set} { ${value} }\n`);
        log.debug({ ip: value }, 'pod removed from capture');
      });
    },

    findState: () => ({ started, table, ports: { ...ports }, meshPods: [...members].sort() }),

    fetchState: () =>
      serialize(async (): Promise<CaptureStatus> => {
        const objects = await fetchTable();
        const chains: string[] = [];
        const meshPods: string[] = [];
        let ruleCount = 0;
        for (const obj of objects ?? []) {
          const chain = obj.chain as { name?: string } | undefined;
          if (chain?.name) chains.push(chain.name);
          if (obj.rule) ruleCount++;
          const set = obj.set as { name?: string; elem?: unknown[] } | undefined;
          if (set && (set.name === SET_V4 || set.name === SET_V6)) {
            for (const e of set.elem ?? []) {
              if (typeof e === 'string') meshPods.push(e);
              else if (e && typeof e === 'object' && 'elem' in e) {
                const val = (e as { elem: { val?: unknown } }).elem.val;
                if (typeof val === 'string') meshPods.push(val);
              }
            }
          }
        }
        const rules = await fetchFwmarkRules('-4');
        const routes = await run(ip, ['-4', 'route', 'show', 'table', String(routeTable)]).catch(() => '');
        const route = /^local default dev lo/m.test(routes) || /^local 0\.0\.0\.0\/0 dev lo/m.test(routes);
        const installed = objects !== undefined;
        const healthy =
          installed &&
          chains.includes(NAT_CHAIN) &&
          chains.includes(MANGLE_CHAIN) &&
          chains.length === 2 &&
          ruleCount === expectedRuleCount(ports) &&
          rules === 1 &&
          route;
        return {
          installed,
          healthy,
          chains: chains.sort(),
          ruleCount,
          expectedRuleCount: expectedRuleCount(ports),
          meshPods: meshPods.sort(),
          policyRouting: { rules, route },
        };
      }),

    stop: () =>
      serialize(async () => {
        started = false;
        // Idempotent: a missing table is already "stopped".
        await run(nft, ['-f', '-'], `table inet ${table} {}\ndelete table inet ${table}\n`);
        await removeRouting();
        log.info('capture rules removed');
      }),
  };
}
