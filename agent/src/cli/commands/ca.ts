// `hypha ca ...`: create a CA, issue certificates by hand, run the CA server, revoke.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createLogger, isLogLevel, parseSpiffeId, SpiffeIdError } from '@hypha/shared';
import { type Command, Option } from 'commander';
import { formatDurationSeconds } from '../../ca/duration.js';
import { durationFlagSeconds, UsageError } from '../errors.js';

// Kept equal to CA_PORT in ../../ca/server.ts; the heavy modules (X.509, YAML, HTTPS server) load
// only inside the actions, so `hypha --help` and other verbs start fast.
const CA_PORT = 15012;
const identity = () => import('@hypha/shared/identity');

export function register(program: Command): void {
  const ca = program
    .command('ca')
    .description('certificate authority: create it, issue certificates, serve the CA API, revoke')
    .addHelpText(
      'after',
      `
Files in a CA directory (Istio's "cacerts" layout, so an existing Istio CA can be plugged in):
  ca-cert.pem     signing certificate (the root itself, or an intermediate)
  ca-key.pem      its private key (mode 0600)
  root-cert.pem   trust bundle: one or more roots
  cert-chain.pem  ca-cert.pem, its intermediates, then the root
  hypha-ca.json   trust domain
  revocations.json  revoked serials and identities (written by "hypha ca revoke")

Examples:
  hypha ca init --dir ./ca
  hypha ca issue --dir ./ca --id spiffe://cluster.local/ns/shop/sa/web --out ./web --ttl 24h
  hypha ca serve --dir ./ca --tokens tokens.yaml --pods pods.yaml --listen 127.0.0.1:15012
  hypha ca revoke --dir ./ca --serial 3f9a...
  hypha ca revoke --kubernetes --id spiffe://cluster.local/ns/shop/sa/web`,
    );

  ca.command('init')
    .description('create a new self-signed root CA (ECDSA P-256) in a directory')
    .requiredOption('--dir <dir>', 'directory to write the CA files into (created if missing)')
    .option('--trust-domain <domain>', 'SPIFFE trust domain the CA signs for', 'cluster.local')
    .option('--ttl-days <days>', 'validity of the root certificate in days', '3650')
    .option('--force', 'replace an existing CA in the directory (its key is lost)', false)
    .addHelpText('after', '\nExample:\n  hypha ca init --dir ./ca --trust-domain example.org')
    .action(async (opts: { dir: string; trustDomain: string; ttlDays: string; force: boolean }) => {
      const ttlDays = Number(opts.ttlDays);
      if (!/^\d+$/.test(opts.ttlDays) || ttlDays < 1) {
        throw new UsageError(`--ttl-days must be a whole number of days >= 1, got "${opts.ttlDays}"`);
      }
      const { CertificateAuthority } = await identity();
      const authority = await CertificateAuthority.init({
        trustDomain: checkTrustDomain(opts.trustDomain),
        ttlDays,
      });
      await authority.save(opts.dir, { overwrite: opts.force });
      const dir = resolve(opts.dir);
      const root = authority.caCertificate;
      process.stdout.write(
        [
          `Created a root CA for trust domain "${authority.trustDomain}" in ${dir}`,
          `  root certificate  ${join(dir, 'root-cert.pem')}  (the trust bundle: give it to agents)`,
          `  CA key            ${join(dir, 'ca-key.pem')}  (mode 0600: keep it secret)`,
          `  valid until       ${root.validToDate.toISOString()}`,
          `Next: hypha ca issue --dir ${opts.dir} --id spiffe://${authority.trustDomain}/ns/default/sa/default --out ./cert`,
          '',
        ].join('\n'),
      );
    });

  ca.command('issue')
    .description('issue a workload certificate and key directly from the CA files (no server needed)')
    .requiredOption('--dir <dir>', 'CA directory (from "hypha ca init" or an Istio cacerts directory)')
    .requiredOption('--id <spiffe-id>', 'identity, e.g. spiffe://cluster.local/ns/shop/sa/web')
    .requiredOption('--out <dir>', 'directory to write cert-chain.pem, key.pem and root-cert.pem into')
    .option('--ttl <duration>', 'validity, e.g. 90s, 30m, 24h, 7d', '24h')
    .addHelpText(
      'after',
      `
Writes:
  <out>/cert-chain.pem  leaf certificate, then intermediates
  <out>/key.pem         PKCS#8 private key (mode 0600)
  <out>/root-cert.pem   trust bundle to verify peers with
Check the result: openssl verify -CAfile <out>/root-cert.pem -untrusted <out>/cert-chain.pem <out>/cert-chain.pem

Example:
  hypha ca issue --dir ./ca --id spiffe://cluster.local/ns/shop/sa/web --out ./web --ttl 12h`,
    )
    .action(async (opts: { dir: string; id: string; out: string; ttl: string }) => {
      const id = parseIdFlag(opts.id);
      const ttlSeconds = durationFlagSeconds('--ttl', opts.ttl);
      const { CertificateAuthority } = await identity();
      const authority = await CertificateAuthority.load(opts.dir);
      if (id.trustDomain !== authority.trustDomain) {
        throw new UsageError(
          `--id ${id} is in trust domain "${id.trustDomain}", but the CA in ${opts.dir} signs "${authority.trustDomain}"`,
        );
      }
      const cert = await authority.issue(id, { ttlSeconds });
      await mkdir(opts.out, { recursive: true });
      const out = resolve(opts.out);
      await writeFile(join(out, 'cert-chain.pem'), cert.certChainPem);
      await writeFile(join(out, 'key.pem'), cert.keyPem, { mode: 0o600 });
      await chmod(join(out, 'key.pem'), 0o600);
      await writeFile(join(out, 'root-cert.pem'), cert.trustBundlePem);
      process.stdout.write(
        [
          `Issued a certificate for ${id}`,
          `  serial       ${cert.serial}`,
          `  valid until  ${cert.notAfter.toISOString()} (${formatDurationSeconds(ttlSeconds)})`,
          `  certificate  ${join(out, 'cert-chain.pem')}`,
          `  key          ${join(out, 'key.pem')}`,
          `  root         ${join(out, 'root-cert.pem')}`,
          '',
        ].join('\n'),
      );
    });

  ca.command('serve')
    .description(`run the CA API over HTTPS (default port ${CA_PORT}) until SIGTERM/SIGINT`)
    .addOption(
      new Option('--config <source>', 'who may ask for what: file (--tokens, --pods) or kubernetes')
        .choices(['file', 'kubernetes'])
        .default('file'),
    )
    .option('--dir <dir>', 'CA directory (file mode: required; kubernetes: an optional plug-in cacerts dir)')
    .option(
      '--tokens <file>',
      'file mode: YAML file of bootstrap tokens: tokens: [{token: <secret>, node: <node name>}]',
    )
    .option('--pods <path>', 'file mode: YAML file (or directory of YAML files) of Pods with spec.nodeName')
    .option(
      '--kubeconfig <path>',
      'kubernetes mode: kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config)',
    )
    .addOption(
      new Option(
        '--namespace <ns>',
        "kubernetes mode: the CA's namespace (root Secret, trust bundle ConfigMap)",
      )
        .env('POD_NAMESPACE')
        .default('hypha-system'),
    )
    .addOption(
      new Option('--trust-domain <domain>', 'kubernetes mode: trust domain of a generated root')
        .env('HYPHA_TRUST_DOMAIN')
        .default('cluster.local'),
    )
    .addOption(
      new Option('--audience <aud>', "kubernetes mode: audience agents' tokens must carry")
        .env('HYPHA_CA_TOKEN_AUDIENCE')
        .default('hypha-ca'),
    )
    .addOption(
      new Option(
        '--agent-service-account <ns/name>',
        'kubernetes mode: ServiceAccount of node agents (repeatable; default <namespace>/hypha-agent)',
      )
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
        .default(undefined),
    )
    .addOption(
      new Option(
        '--publish-namespace <ns>',
        'kubernetes mode: also publish the trust bundle there (repeatable)',
      )
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
        .default(undefined),
    )
    .option('--listen <host:port>', 'address to listen on', `0.0.0.0:${CA_PORT}`)
    .option(
      '--metrics-address <host:port>',
      'Prometheus /metrics (plain HTTP: heap, RSS, certificates issued and refused); "off" for none',
      '0.0.0.0:15014',
    )
    .option(
      '--max-ttl <duration>',
      'longest certificate the CA hands out; longer requests are clamped',
      '24h',
    )
    .addOption(
      new Option('--san <name>', 'extra DNS name or IP for the server certificate (repeatable)')
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
        .default(undefined),
    )
    .addHelpText(
      'after',
      `
API (JSON over HTTPS; the server's certificate carries spiffe://<td>/ns/hypha-system/sa/hypha-ca):
  POST /v1/certificates  Authorization: Bearer <token>  {"csr": "<PEM>", "ttlSeconds": 86400}
                         → {"certChain": ["<PEM>"...], "trustBundle": ["<PEM>"...], "serial", "notAfter"}
  GET  /v1/revocations   → {"version": n, "serials": [...], "ids": [...]}
File mode: an agent may obtain only identities of pods that the pods file places on its node.
Kubernetes mode: tokens are checked by TokenReview (audience hypha-ca); a node agent may obtain
identities of pods on its node, any other pod only its own identity. The root comes from --dir
(mounted cacerts), the Secret cacerts, or the Secret hypha-ca-root (created once); the trust
bundle is published to ConfigMap hypha-ca-root-cert (key root-cert.pem). Revocations come from
ConfigMap hypha-ca-revocations (key revocations.json; "hypha ca revoke --kubernetes" writes it),
watched, so a change is served within a second; a revocations.json in --dir counts too.

Examples:
  hypha ca serve --dir ./ca --tokens tokens.yaml --pods pods.yaml --listen 127.0.0.1:15012 --max-ttl 12h
  hypha ca serve --config kubernetes --dir /etc/cacerts`,
    )
    .action(
      async (
        opts: {
          config: 'file' | 'kubernetes';
          dir?: string;
          tokens?: string;
          pods?: string;
          kubeconfig?: string;
          namespace: string;
          trustDomain: string;
          audience: string;
          agentServiceAccount?: string[];
          publishNamespace?: string[];
          listen: string;
          metricsAddress: string;
          maxTtl: string;
          san?: string[];
        },
        cmd: Command,
      ) => {
        const { host, port } = parseListen(opts.listen);
        const maxTtlSeconds = durationFlagSeconds('--max-ttl', opts.maxTtl);
        if (opts.config === 'file') {
          const missing = (['dir', 'tokens', 'pods'] as const).filter((k) => opts[k] === undefined);
          if (missing.length > 0) {
            throw new UsageError(
              `file mode needs ${missing.map((m) => `--${m}`).join(', ')} (or use --config kubernetes)`,
            );
          }
        } else {
          checkTrustDomain(opts.trustDomain);
        }
        const level = String(cmd.optsWithGlobals().logLevel ?? 'info');
        const logger = createLogger({
          level: isLogLevel(level) ? level : 'info',
          base: { pid: process.pid, role: 'ca' },
        });
        const sans = opts.san ?? [];
        const isIp = (s: string) => /^[\d.]+$/.test(s) || s.includes(':');
        const serverDnsNames = [
          'localhost',
          'hypha-ca',
          `hypha-ca.${opts.config === 'kubernetes' ? opts.namespace : 'hypha-system'}`,
          `hypha-ca.${opts.config === 'kubernetes' ? opts.namespace : 'hypha-system'}.svc`,
          ...sans.filter((s) => !isIp(s)),
        ];
        const serverIpAddresses = ['127.0.0.1', '::1', ...sans.filter(isIp)];
        let server: import('../../ca/server.js').CaServer;
        let closeExtra = async (): Promise<void> => {};
        let ready: Record<string, unknown>;
        if (opts.config === 'kubernetes') {
          const { createKubeCa } = await import('../../ca/kube.js');
          const kube = await createKubeCa({
            ...(opts.kubeconfig !== undefined ? { kubeconfig: opts.kubeconfig } : {}),
            namespace: opts.namespace,
            trustDomain: opts.trustDomain,
            maxTtlSeconds,
            audience: opts.audience,
            ...(opts.agentServiceAccount ? { agentServiceAccounts: opts.agentServiceAccount } : {}),
            ...(opts.publishNamespace ? { publishNamespaces: opts.publishNamespace } : {}),
            ...(opts.dir !== undefined ? { pluginDir: opts.dir } : {}),
            host,
            port,
            serverDnsNames,
            serverIpAddresses,
            logger,
          });
          server = kube.server;
          closeExtra = () => kube.close(5000);
          ready = { trustDomain: kube.ca.trustDomain, root: kube.rootSource, mode: 'kubernetes' };
        } else {
          const { CertificateAuthority } = await identity();
          const { PodFileNodeAuthorizer, StaticTokenAuthenticator } = await import('../../ca/auth.js');
          const { RevocationList } = await import('../../ca/revocations.js');
          const { CaServer } = await import('../../ca/server.js');
          const dir = opts.dir as string;
          const authority = await CertificateAuthority.load(dir, { maxTtlSeconds });
          const authenticator = await StaticTokenAuthenticator.fromFile(opts.tokens as string);
          const authorizer = await PodFileNodeAuthorizer.fromPath(opts.pods as string);
          server = await CaServer.create({
            ca: authority,
            authenticator,
            authorizer,
            revocations: new RevocationList(dir),
            host,
            port,
            serverDnsNames,
            serverIpAddresses,
            logger,
          });
          ready = {
            trustDomain: authority.trustDomain,
            tokens: authenticator.size,
            pods: authorizer.podCount,
            mode: 'file',
          };
        }
        const addr = await server.start();
        let metrics: { address: { port: number }; close(): Promise<void> } | undefined;
        if (opts.metricsAddress !== 'off') {
          const { startCaMetrics } = await import('../../ca/metrics.js');
          try {
            metrics = await startCaMetrics(server.stats, opts.metricsAddress);
          } catch (err) {
            await server.close(1000);
            throw new UsageError(
              `--metrics-address ${opts.metricsAddress}: cannot listen (${(err as Error).message}); pick another host:port or "off"`,
            );
          }
        }
        logger.info(
          {
            url: `https://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
            ...(metrics ? { metrics: opts.metricsAddress.replace(/:\d+$/, `:${metrics.address.port}`) } : {}),
            ...ready,
            maxTtl: formatDurationSeconds(maxTtlSeconds),
          },
          'hypha CA ready',
        );
        await new Promise<void>((done) => {
          const stop = (signal: string) => {
            logger.info({ signal }, 'shutting down');
            process.off('SIGTERM', onTerm);
            process.off('SIGINT', onInt);
            void server
              .close(5000)
              .then(closeExtra)
              .then(() => metrics?.close())
              .then(done);
          };
          const onTerm = () => stop('SIGTERM');
          const onInt = () => stop('SIGINT');
          process.on('SIGTERM', onTerm);
          process.on('SIGINT', onInt);
        });
        logger.info({ issued: server.stats.issued }, 'CA server stopped');
      },
    );

  ca.command('revoke')
    .description(
      'revoke a certificate serial or a whole identity (in <dir>/revocations.json, or with --kubernetes in ConfigMap hypha-ca-revocations)',
    )
    .option('--dir <dir>', 'file mode: CA directory')
    .option('--kubernetes', 'record it in ConfigMap hypha-ca-revocations through the Kubernetes API', false)
    .option(
      '--kubeconfig <path>',
      'kubernetes mode: kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)',
    )
    .option('--namespace <ns>', "kubernetes mode: the CA's namespace", 'hypha-system')
    .option(
      '--serial <hex>',
      'serial number of the certificate to revoke (as printed by "hypha cert inspect")',
    )
    .option('--id <spiffe-id>', 'identity to revoke: every certificate for it, and no new ones')
    .option('--reason <text>', 'free text kept with the entry')
    .addHelpText(
      'after',
      `
The list is {"version": n, "entries": [{serial|id, revokedAt, reason?}]}; the version grows by one per
change and revoking something already revoked changes nothing.
File mode: a running "hypha ca serve --dir" picks the change up within a second.
Kubernetes mode: the ConfigMap (key revocations.json) is created if absent, else updated with a
resourceVersion precondition (retried on conflict). Every CA replica watches it and serves it on
GET /v1/revocations within a second, no restart; agents apply it at their next poll. Your
kubeconfig's user needs get, create and update on configmaps/hypha-ca-revocations in the namespace.

Examples:
  hypha ca revoke --dir ./ca --serial 5c1f0e9a7b3d4c2e8f10a2b4c6d8e0f1
  hypha ca revoke --dir ./ca --id spiffe://cluster.local/ns/shop/sa/web --reason "key leaked"
  hypha ca revoke --kubernetes --id spiffe://cluster.local/ns/shop/sa/web --reason "key leaked"
  hypha ca revoke --kubernetes --kubeconfig ~/.kube/prod --namespace hypha-system --serial 5c1f0e9a`,
    )
    .action(
      async (
        opts: {
          dir?: string;
          kubernetes: boolean;
          kubeconfig?: string;
          namespace: string;
          serial?: string;
          id?: string;
          reason?: string;
        },
        cmd: Command,
      ) => {
        if ((opts.dir === undefined) === !opts.kubernetes) {
          throw new UsageError(
            'give exactly one of --dir <dir> (file mode) or --kubernetes (ConfigMap hypha-ca-revocations)',
          );
        }
        if (!opts.kubernetes) {
          for (const flag of ['kubeconfig', 'namespace'] as const) {
            if (cmd.getOptionValueSource(flag) === 'cli')
              throw new UsageError(`--${flag} applies only with --kubernetes`);
          }
        }
        if ((opts.serial === undefined) === (opts.id === undefined)) {
          throw new UsageError('give exactly one of --serial <hex> or --id <spiffe-id>');
        }
        if (opts.serial !== undefined && !/^(0x)?[0-9a-fA-F:]+$/.test(opts.serial)) {
          throw new UsageError(`--serial must be hexadecimal, got "${opts.serial}"`);
        }
        const what: { serial?: string; id?: string; reason?: string } = {};
        if (opts.serial !== undefined) what.serial = opts.serial;
        if (opts.id !== undefined) what.id = parseIdFlag(opts.id).toString();
        if (opts.reason !== undefined) what.reason = opts.reason;
        const { normalizeSerial } = await identity();
        const subject =
          what.serial !== undefined ? `serial ${normalizeSerial(what.serial)}` : `identity ${what.id}`;
        if (opts.kubernetes) {
          if (opts.namespace === '' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(opts.namespace)) {
            throw new UsageError(`--namespace must be a Kubernetes namespace name, got "${opts.namespace}"`);
          }
          const { recordKubeRevocation, REVOCATIONS_CONFIGMAP } = await import(
            '../../ca/kube-revocations.js'
          );
          const where = `ConfigMap ${opts.namespace}/${REVOCATIONS_CONFIGMAP}`;
          const r = await recordKubeRevocation(opts.kubeconfig, what, { namespace: opts.namespace });
          process.stdout.write(
            r.changed
              ? `Revoked ${subject} in ${where} (revocation list version ${r.snapshot.version}${r.created ? '; created the ConfigMap' : ''})\n`
              : `${subject} was already revoked in ${where} (revocation list version ${r.snapshot.version})\n`,
          );
          return;
        }
        const dir = opts.dir as string;
        // Fail early on a directory that is not a CA.
        const { CertificateAuthority } = await identity();
        const { recordRevocation } = await import('../../ca/revocations.js');
        await CertificateAuthority.load(dir);
        const { snapshot, changed } = await recordRevocation(dir, what);
        process.stdout.write(
          changed
            ? `Revoked ${subject} (revocation list version ${snapshot.version})\n`
            : `${subject} was already revoked (revocation list version ${snapshot.version})\n`,
        );
      },
    );
}

function checkTrustDomain(td: string): string {
  try {
    return parseSpiffeId(`spiffe://${td}/ns/x/sa/x`).trustDomain;
  } catch {
    throw new UsageError(
      `--trust-domain "${td}" may contain only lowercase letters, digits, ".", "-" and "_"`,
    );
  }
}

function parseIdFlag(text: string) {
  try {
    return parseSpiffeId(text);
  } catch (err) {
    if (err instanceof SpiffeIdError) throw new UsageError(`--id: ${err.message}`);
    throw err;
  }
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new UsageError(
      `--listen must be host:port (IPv6 in brackets), e.g. 0.0.0.0:${CA_PORT} or [::1]:${CA_PORT}; got "${text}"`,
    );
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}
