// `hypha tap`: a live stream of finished requests (waypoints) and connections (node agents), read
// from one or more admin endpoints' GET /tap and merged, one readable line per event or JSON lines.
// The filters travel in the query string, so each process sends only what was asked for.
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { TapEvent, TapFilter, TapLine } from '@hypha/shared/telemetry';
import { type Command, Option } from 'commander';
import { UsageError } from '../errors.js';

interface TapFlags {
  admin: string[];
  namespace?: string;
  to?: string;
  from?: string;
  method?: string;
  path?: string;
  status?: string;
  kind?: string;
  output: 'text' | 'json';
  max?: string;
}

/** Where to connect: a TCP host:port or a unix socket path. */
export type TapTarget = { label: string; host: string; port: number } | { label: string; socketPath: string };

export function parseTapTarget(address: string): TapTarget {
  if (address.startsWith('unix:')) {
    const socketPath = address.slice('unix:'.length);
    if (socketPath === '')
      throw new UsageError('--admin unix: needs a socket path, e.g. unix:/run/hypha/admin.sock');
    return { label: address, socketPath };
  }
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : Number.NaN;
  if (m === null || port < 1 || port > 65535) {
    throw new UsageError(`--admin "${address}" must be host:port (e.g. 127.0.0.1:15000) or unix:/path`);
  }
  return { label: address, host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function register(program: Command): void {
  program
    .command('tap')
    .description('stream live requests (from waypoints) and connections (from node agents) as they finish')
    .option(
      '--admin <address>',
      'admin endpoint to tap, host:port or unix:/path; repeat for several agents and waypoints (default 127.0.0.1:15000)',
      collect,
      [],
    )
    .option('-n, --namespace <ns>', 'only traffic from or to this namespace')
    .option('--to <destination>', 'only to this workload, <ns>/<workload>, service <ns>/<service>, or IP')
    .option('--from <source>', 'only from this workload, <ns>/<workload>, or IP')
    .option('--method <method>', 'only requests with this HTTP method')
    .option('--path <path>', 'only requests whose path starts with this, or matches it with * wildcards')
    .option('--status <code>', 'only this response code (503) or class (5xx)')
    .addOption(
      new Option('--kind <kind>', 'only requests or only connections').choices(['request', 'connection']),
    )
    .addOption(
      new Option('-o, --output <format>', 'one readable line per event, or JSON lines')
        .choices(['text', 'json'])
        .default('text'),
    )
    .option('--max <n>', 'stop after this many events')
    .addHelpText(
      'after',
      `
Reads GET /tap on each admin endpoint (localhost only: run it on the node, inside the agent or
waypoint pod, or through kubectl port-forward). Events arrive when a request or connection
finishes; a reader too slow to keep up is told how many it missed. An endpoint that goes away (an
agent restart or upgrade) is reconnected every 2 s. Ctrl-C stops. Exit 1 when no endpoint can be
reached at the start, 2 on a bad flag.

Examples:
  hypha tap                                          # the node agent on this machine
  hypha tap -n shop --status 5xx                     # failures in namespace shop
  hypha tap --admin 127.0.0.1:15000 --admin unix:/tmp/waypoint-admin.sock --to shop/reviews -o json`,
    )
    .action(async (flags: TapFlags) => {
      const { parseTapFilter, TapFilterError, tapFilterQuery } = await import('@hypha/shared/telemetry');
      let filter: TapFilter;
      try {
        filter = parseTapFilter((k) => flags[k as keyof TapFlags] as string | undefined);
      } catch (err) {
        if (err instanceof TapFilterError) throw new UsageError(`--${err.message}`);
        throw err;
      }
      const max = flags.max === undefined ? undefined : Number(flags.max);
      if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
        throw new UsageError(`--max must be a positive whole number, got "${flags.max}"`);
      }
      const targets = (flags.admin.length > 0 ? flags.admin : ['127.0.0.1:15000']).map(parseTapTarget);
      const code = await runTap(targets, tapFilterQuery(filter), {
        json: flags.output === 'json',
        max,
        out: (s) => process.stdout.write(s),
        note: (s) => process.stderr.write(`tap: ${s}\n`),
      });
      process.exitCode = code;
    });
}

interface RunOptions {
  json: boolean;
  max: number | undefined;
  out(s: string): void;
  note(s: string): void;
}

/** Streams until Ctrl-C (0), `max` events (0), or no endpoint reachable at the start (1). */
async function runTap(targets: TapTarget[], query: string, o: RunOptions): Promise<number> {
  const { request } = await import('node:http');
  let seen = 0;
  let stopped = false;
  const live = new Set<ClientRequest>();
  const timers = new Set<NodeJS.Timeout>();
  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    finish = resolve;
  });
  const stop = (code: number): void => {
    if (stopped) return;
    stopped = true;
    for (const r of live) r.destroy();
    for (const t of timers) clearTimeout(t);
    finish(code);
  };
  const onSignal = (): void => stop(0);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const emit = (line: TapLine, from: TapTarget): void => {
    if (line.kind === 'dropped') {
      o.note(`${from.label}: missed ${line.count} events (reading too slowly)`);
      return;
    }
    o.out(o.json ? `${JSON.stringify(line)}\n` : `${formatTapEvent(line)}\n`);
    seen++;
    if (o.max !== undefined && seen >= o.max) stop(0);
  };

  let pending = targets.length;
  let connectedOnce = 0;
  const settleStart = (ok: boolean): void => {
    if (pending === 0) return;
    if (ok) connectedOnce++;
    pending--;
    if (pending === 0 && connectedOnce === 0) {
      o.note(
        `no admin endpoint answered (${targets.map((t) => t.label).join(', ')}): is the agent or waypoint running here? admin listens on localhost`,
      );
      stop(1);
    }
  };

  const connect = (t: TapTarget, first: boolean): void => {
    if (stopped) return;
    // True until this attempt has settled the start-up count (answered 200, or failed).
    let initial = first;
    const retry = (why: string): void => {
      if (initial) {
        initial = false;
        o.note(`${t.label}: ${why}`);
        settleStart(false);
      } else {
        o.note(`${t.label}: ${why}; reconnecting every 2 s`);
      }
      if (stopped) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        connect(t, false);
      }, 2000);
      timers.add(timer);
    };
    const req = request({
      ...('socketPath' in t ? { socketPath: t.socketPath } : { host: t.host, port: t.port }),
      path: `/tap${query}`,
      method: 'GET',
      headers: { accept: 'application/x-ndjson' },
    });
    live.add(req);
    // One retry per attempt, whichever of 'close' and 'error' comes first.
    let ended = false;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      live.delete(req);
      if (!stopped) retry(why);
    };
    req.on('response', (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => {
          const why = `answered ${res.statusCode}: ${body.trim().slice(0, 200)}`;
          if (res.statusCode === 400) {
            o.note(`${t.label} ${why}`);
            stop(2);
            return;
          }
          end(why);
        });
        return;
      }
      if (initial) {
        initial = false;
        settleStart(true);
      }
      o.note(`connected to ${t.label}`);
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const text = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          nl = buffered.indexOf('\n');
          if (text.trim() === '') continue;
          try {
            emit(JSON.parse(text) as TapLine, t);
          } catch {
            o.note(`${t.label}: skipped a line that is not JSON`);
          }
          if (stopped) return;
        }
      });
      res.on('close', () => end('the stream ended (agent or waypoint restarted or upgraded?)'));
    });
    req.on('error', (err: NodeJS.ErrnoException) => end(`cannot reach it (${err.code ?? err.message})`));
    req.end();
  };
  for (const t of targets) connect(t, true);
  const code = await done;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

function peer(p: TapEvent['source'], withPort = false): string {
  const name = p.workload !== undefined ? `${p.namespace}/${p.workload}` : (p.ip ?? '?');
  return withPort && p.port !== undefined ? `${name}:${p.port}` : name;
}

function principal(id: string | undefined): string {
  return id === undefined ? 'no identity' : id.replace(/^spiffe:\/\//, '');
}

function clock(iso: string): string {
  return iso.slice(11, 23);
}

/** One line a person can read: when, what, outcome, latency, who to whom (identities), flags. */
export function formatTapEvent(e: TapEvent): string {
  const flags = e.flags !== '-' ? `  flags=${e.flags}` : '';
  const policy = e.policy !== undefined ? `  policy=${e.policy}` : '';
  const error = e.error !== undefined && e.flags !== '-' ? `  (${e.error})` : '';
  const tls = e.mtls ? 'mTLS' : 'plaintext';
  if (e.kind === 'request') {
    const to = e.destination.service ?? peer(e.destination);
    const pod =
      e.destination.workload !== undefined ? ` (${e.destination.namespace}/${e.destination.workload})` : '';
    return `${clock(e.time)} ${e.method ?? '?'} ${e.path ?? '/'} ${e.status ?? 0} ${e.durationMs.toFixed(1)}ms  ${peer(e.source)} [${principal(e.source.identity)}] -> ${to}${pod} [${principal(e.destination.identity)}]  ${tls}  via ${e.reporter}${flags}${policy}${error}`;
  }
  return `${clock(e.time)} TCP ${e.direction ?? ''} ${peer(e.source)} [${principal(e.source.identity)}] -> ${peer(e.destination, true)} [${principal(e.destination.identity)}]  ${tls}  ${e.bytesSent}B/${e.bytesReceived}B ${e.durationMs}ms  by ${e.reporter}${flags}${policy}${error}`;
}
