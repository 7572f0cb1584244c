// `hypha demo`: the local demo mesh. Needs root (network namespaces, nftables); touches nothing
// in the machine's own network namespace, and tears everything down on exit or Ctrl-C.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createLogger, type LogLevel } from '@hypha/shared';
import type { Command } from 'commander';
import { UsageError } from '../errors.js';

function preflight(): string[] {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    problems.push(
      'the demo builds network namespaces and nftables rules, which needs root: run it as root (e.g. sudo npx hypha demo)',
    );
  }
  for (const [tool, pkg] of [
    ['ip', 'iproute2'],
    ['nft', 'nftables'],
  ] as const) {
    const r = spawnSync(tool, ['-V'], { stdio: 'ignore' });
    if (r.error) problems.push(`"${tool}" is not installed: apt-get install -y ${pkg}`);
  }
  if (problems.length === 0) {
    const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    if (r.status !== 0)
      problems.push(
        `network namespaces are not usable here (ip netns list: ${r.stderr.trim()}); a container needs --privileged`,
      );
  }
  return problems;
}

interface DemoFlags {
  check: boolean;
  ipv6: boolean;
  ipv6Only: boolean;
  dashboardPort: string;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description(
      'run the local demo mesh: two nodes, a CA, two agents, a waypoint, sample apps; mTLS between nodes, then L7 routing, authorization and metrics, then an ingress gateway and egress to an external API',
    )
    .option(
      '--check',
      'run the scenario once, print the result, and exit non-zero if any expectation failed',
      false,
    )
    .option('--ipv6', 'dual-stack cluster: run every check over IPv4 and again over IPv6', false)
    .option('--ipv6-only', 'IPv6-only cluster: every check over IPv6, no IPv4 address on any pod', false)
    .option('--dashboard-port <port>', "port of the demo's dashboard on 127.0.0.1 (0: any free port)", '0')
    .addHelpText(
      'after',
      `
Needs root, iproute2 and nftables. Everything lives in network namespaces named hyt<id>-*;
nothing is added to the machine's own namespace, and Ctrl-C removes it all.

Examples:
  hypha demo            build the mesh, send traffic, print what happened, stay up until Ctrl-C
  hypha demo --check    the same once; exit code 1 if an expectation failed (for CI and smoke tests)
  hypha demo --ipv6     dual-stack pods and Service (unique-local IPv6 addresses): the checks over both families
  hypha demo --ipv6-only --check   the same on an IPv6-only cluster

The demo serves the dashboard (hypha dashboard) on 127.0.0.1 and prints its URL; with Debian's
prometheus installed (bash scripts/install-system-packages.sh test) it also runs a Prometheus pod
scraping the mesh, which the dashboard reads. --check verifies the dashboard answers.

On IPv4 (the default) the demo also builds an outside world beyond the cluster: an external client
reaches echo over HTTPS through the ingress gateway (hypha gateway), and a mesh app calls an
external API by name in plain HTTP (a ServiceEntry; the agent's DNS proxy answers its VIP) which
the waypoint calls over HTTPS (TLS origination). It prints curl commands for both; --check
verifies both.`,
    )
    .action(async (flags: DemoFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as { logLevel: LogLevel };
      const dashboardPort = Number(flags.dashboardPort);
      if (!/^\d{1,5}$/.test(flags.dashboardPort) || dashboardPort > 65535) {
        throw new UsageError(`--dashboard-port must be 0-65535, got "${flags.dashboardPort}"`);
      }
      // The demo mesh is the test harness's (@hypha/test): it loads here, never with the agent or
      // the waypoint, and the image does not ship it.
      const {
        DEMO_EDGE,
        DEMO_L7,
        DEMO_NODES,
        DEMO_WAYPOINT,
        exposeInNetns,
        findOnPath,
        hostPort,
        runDemoTraffic,
        runEdgeDemo,
        runL7Demo,
        runUpgradeCheck,
        startDemo,
        startPrometheus,
      } = await loadDemoHarness();
      const problems = preflight();
      if (problems.length > 0) throw new Error(`cannot run the demo:\n  - ${problems.join('\n  - ')}`);
      const out = (line: string) => process.stdout.write(`${line}\n`);
      // The demo's own log stays quiet unless asked; agents' JSON logs are parsed, not shown.
      const logger = createLogger({ level: globals.logLevel === 'info' ? 'warn' : globals.logLevel });
      const ipFamilies = flags.ipv6Only ? 'ipv6' : flags.ipv6 ? 'dual' : 'ipv4';
      const demo = await startDemo(logger, (line) => out(`• ${line}`), {
        ipFamilies,
        waypoint: true,
        outsideWorld: true,
      });
      let failed = 0;
      let edge: Awaited<ReturnType<typeof runEdgeDemo>>;
      let dashboard: { url: string; close(): Promise<void> } | undefined;
      let prometheus: { stop(): Promise<void> } | undefined;
      try {
        out('• sending traffic ...');
        await runDemoTraffic(demo);
        out("• upgrading node-a's agent under load (200 new connections/s, 20 live streams) ...");
        demo.checks.push(await runUpgradeCheck(demo));
        const wpName = `${DEMO_WAYPOINT.namespace}/${DEMO_WAYPOINT.name}`;
        out(
          `• L7: binding service demo/echo to waypoint ${wpName}, HTTPRoute ${DEMO_L7.route} (${DEMO_L7.weights.v1}/${DEMO_L7.weights.v2} over echo-v1/echo-v2), AuthorizationPolicy ${DEMO_L7.policy} (DENY ${DEMO_L7.deniedPath}) ...`,
        );
        await runL7Demo(demo);
        edge = await runEdgeDemo(demo, (line) => out(`• ${line}`));
        const { mesh, pods, vip, vip6 } = demo;
        // The dashboard reads the admin ports through these sockets (they listen on localhost in
        // each namespace), and Prometheus through one more, since it listens in its pod.
        const admins = await mesh.exposeAdmin();
        let promAddress: string | undefined;
        if (findOnPath('prometheus') !== undefined) {
          out(
            "• starting Prometheus (Debian's package) in a pod of its own, scraping every agent and the waypoint ...",
          );
          const prom = await startPrometheus(mesh);
          prometheus = prom;
          const sock = await exposeInNetns(
            mesh.cluster,
            prom.pod.netns,
            { host: prom.pod.ip, port: 9090 },
            join(mesh.dir, 'prometheus.sock'),
          );
          promAddress = sock.address;
        } else {
          out(
            '• prometheus is not installed: the dashboard estimates rates from the live tap (install it with: bash scripts/install-system-packages.sh test)',
          );
        }
        const { checkDashboard, startDemoDashboard } = await import('../../dashboard/index.js');
        const { parseTapTarget } = await import('./tap.js');
        try {
          dashboard = await startDemoDashboard({
            port: dashboardPort,
            admins: admins.map((a) => parseTapTarget(a.address)),
            prometheus: promAddress,
            config: mesh.configPath,
          });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
            throw new Error(
              `--dashboard-port ${dashboardPort} is in use on 127.0.0.1: pick another (0 for any free port)`,
            );
          }
          throw err;
        }
        demo.checks.push(await checkDashboard(dashboard.url, DEMO_NODES, promAddress !== undefined));
        const waypoint = demo.waypoint!;
        const addrs = (p: { ips: readonly string[] }) => p.ips.join(' ');
        out('');
        out('Hypha demo mesh');
        out(
          `  nodes: ${DEMO_NODES.map((n) => `${n} (${addrs(mesh.cluster.node(n))}, netns ${mesh.cluster.node(n).netns})`).join(', ')}`,
        );
        out(
          `  pods:  client ${addrs(pods.client)} (node-a), echo-v1 ${addrs(pods.echoV1)} (node-a), echo-v2 ${addrs(pods.echoV2)} (node-b), plain ${addrs(pods.plain)} (node-b, outside the mesh), waypoint ${addrs(waypoint.pod)} (${waypoint.node})`,
        );
        const vips = [vip, vip6].flatMap((v) => (v === undefined ? [] : [hostPort(v, 80)])).join(' and ');
        out(
          `  service demo/echo: ${vips} → pods :8080; bound to waypoint ${wpName} for the L7 part (label hypha.dev/use-waypoint)`,
        );
        if (edge !== undefined) {
          out(
            `  ingress: gateway ${DEMO_EDGE.gateway.namespace}/${DEMO_EDGE.gateway.name} ${edge.gateway.pod.ip}:443 (${edge.gateway.node}) serves https://${DEMO_EDGE.host}/ → echo; reached from this machine at 127.0.0.1:${edge.localPort} through the outside world`,
          );
          out(
            `  egress: ServiceEntry demo/${DEMO_EDGE.api.entry} names ${DEMO_EDGE.api.host}:${DEMO_EDGE.api.port} (plain HTTP), bound to waypoint ${wpName}, which calls it over HTTPS in the outside world ${edge.world.ip} (netns ${edge.world.netns}, its own resolver and CA)`,
          );
        }
        out(
          `  dashboard: ${dashboard.url}   (service graph, workloads, policies and denials, health, live tap${promAddress !== undefined ? '; rates from the Prometheus pod' : ''})`,
        );
        out('');
        for (const line of demo.report) out(line);
        out('');
        out('checks:');
        for (const c of demo.checks) {
          if (!c.ok) failed++;
          out(`  ${c.ok ? 'PASS' : 'FAIL'}  ${c.name}${c.ok ? '' : ` (${c.detail})`}`);
        }
        out('');
        if (flags.check) {
          out(failed === 0 ? 'demo check passed' : `demo check FAILED: ${failed} expectation(s) not met`);
          process.exitCode = failed === 0 ? 0 : 1;
          return;
        }
        const a = mesh.cluster.node('node-a').netns;
        out('Explore while it runs (another terminal, as root):');
        out(
          `  ip netns exec ${a} curl -s 127.0.0.1:15000/config_dump     # agent state: workloads, services, certificates`,
        );
        out(
          `  ip netns exec ${a} curl -s 127.0.0.1:15000/connections     # live connections with identities and bytes`,
        );
        out(`  ip netns exec ${a} curl -s 127.0.0.1:15020/metrics         # Prometheus, Istio metric names`);
        const w = waypoint.pod.netns;
        out(
          `  ip netns exec ${w} curl -s 127.0.0.1:15000/config_dump     # waypoint state: services, routes, policies, rejected objects`,
        );
        out(
          `  ip netns exec ${w} curl -s 127.0.0.1:15020/metrics | grep istio_requests_total   # waypoint request metrics`,
        );
        out(
          `  ip netns exec ${pods.client.netns} curl -s http://${hostPort(vip6 ?? vip, 80)}/   # call the service from the client pod (v1 or v2, 90/10)`,
        );
        out(
          `  ip netns exec ${pods.client.netns} curl -si http://${hostPort(vip6 ?? vip, 80)}${DEMO_L7.deniedPath}   # 403 from the waypoint`,
        );
        if (edge !== undefined) {
          const host = DEMO_EDGE.host;
          out(
            `  curl --cacert ${edge.ingressCaPath} --resolve ${host}:${edge.localPort}:127.0.0.1 https://${host}:${edge.localPort}/   # from this machine: outside → gateway (HTTPS) → waypoint → echo`,
          );
          out(
            `  ip netns exec ${edge.world.netns} curl --cacert ${edge.ingressCaPath} --resolve ${host}:443:${edge.gateway.pod.ip} https://${host}/   # the same from the outside world`,
          );
          out(
            `  ip netns exec ${pods.client.netns} curl -s http://${DEMO_EDGE.api.host}${DEMO_EDGE.api.path}   # a mesh app calls the external API by name in plain HTTP; the waypoint calls it over HTTPS`,
          );
          out(
            `  ip netns exec ${a} curl -s 127.0.0.1:15000/debug/dns     # the agent's DNS proxy: ServiceEntry VIPs, cache, last queries`,
          );
        }
        out(
          `  $EDITOR ${mesh.configPath}   # change labels, the route's weights or the policies; agents and waypoint reload live`,
        );
        out(
          `  npx hypha tap ${admins.map((x) => `--admin ${x.address}`).join(' ')}   # live requests (waypoint) and connections (agents); add -n demo, --status 4xx, -o json ...`,
        );
        out(
          `  open ${dashboard.url} in a browser on this machine   # the mesh live: graph, workloads, policies, health, tap`,
        );
        out('');
        // A little traffic while it runs, so the graph and the tap stay alive: the client calls the
        // echo Service once a second through the waypoint, and every tenth call is a denied /admin.
        const target = `http://${hostPort(vip6 ?? vip, 80)}`;
        mesh.cluster.spawn(
          pods.client.netns,
          process.execPath,
          [
            '-e',
            `let i=0;setInterval(()=>{i++;fetch(${JSON.stringify(target)}+(i%10===0?${JSON.stringify(DEMO_L7.deniedPath)}:'/from-the-demo')).then(r=>r.text()).catch(()=>{})},1000)`,
          ],
          { stdio: 'ignore' },
        );
        if (edge !== undefined) {
          // And an outside client calls echo through the gateway every two seconds.
          mesh.cluster.spawn(
            edge.world.netns,
            process.execPath,
            [
              '-e',
              `const https=require('https'),ca=require('fs').readFileSync(${JSON.stringify(edge.ingressCaPath)});setInterval(()=>{https.get({host:${JSON.stringify(edge.gateway.pod.ip)},servername:${JSON.stringify(DEMO_EDGE.host)},headers:{host:${JSON.stringify(DEMO_EDGE.host)}},path:'/from-outside',ca},r=>r.resume()).on('error',()=>{})},2000)`,
            ],
            { stdio: 'ignore' },
          );
        }
        out(
          `Background traffic: demo/client calls demo/echo once a second (every tenth call is a denied /admin)${edge !== undefined ? `; the outside world calls https://${DEMO_EDGE.host}/ through the gateway every 2 s` : ''}.`,
        );
        out('Press Ctrl-C to stop and remove everything.');
        // Say when a mesh process ends on its own (a crash, or an agent handed off by hand).
        mesh.onProcessExit((e) => {
          const how = e.signal ? `signal ${e.signal}` : `code ${e.code}`;
          const agent = e.name.startsWith('agent ');
          out(
            `! ${e.name} (pid ${e.pid}) exited with ${how}${agent && e.code !== 0 ? `: its node's pods cannot connect until an agent runs there again (capture stays: fail closed)` : ''}`,
          );
        });
        await new Promise<void>((resolve) => {
          process.once('SIGINT', () => resolve());
          process.once('SIGTERM', () => resolve());
        });
        out('\nstopping ...');
      } finally {
        await edge?.close();
        await dashboard?.close();
        await prometheus?.stop();
        await demo.mesh.stop();
      }
    });
}

/** The test harness, or a clear error where it is not installed (the container image). */
async function loadDemoHarness(): Promise<typeof import('@hypha/test')> {
  try {
    return await import('@hypha/test');
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new Error(
      'hypha demo needs the test-cluster harness (@hypha/test), which this installation does not include (the container image ships only what the agent, the waypoint and the CA run). Run the demo from a checkout: bash scripts/install-system-packages.sh demo && npm ci && npx hypha demo',
    );
  }
}
