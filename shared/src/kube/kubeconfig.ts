// Kubernetes credentials for the daemons and the CLI: a kubeconfig file, or the pod's
// ServiceAccount. Replaces @kubernetes/client-node's KubeConfig, whose import costs ~850 modules
// and ~77 MB of RSS (it pulls in the whole generated API); we need a server URL, TLS material and
// a bearer token, nothing more.
//
// Where credentials come from (loadKubeConfig):
//   explicit path ─────────────────────────────▶ that file
//   { inCluster: true } ───────────────────────▶ KUBERNETES_SERVICE_HOST/PORT + mounted token/ca.crt
//   nothing: $KUBECONFIG (a colon list is merged, first definition wins, as kubectl does)
//            ─ else in-cluster (env set and the token file exists) ─ else ~/.kube/config
//
// Invariants:
// - Everything is read and checked here, at load: a bad field fails with the file and the entry
//   named. Requests only copy the resolved TLS material and token into their options.
// - A token file (in-cluster, or a user's tokenFile) is re-read on every request: projected
//   ServiceAccount tokens rotate, and a re-read is one small file per list/watch, not per event.
// - `exec` and `auth-provider` users are refused with the user entry named: they run plugins or
//   talk to cloud token services, which a mesh daemon should not; give it a token instead.
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { KubeError } from './errors.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeCluster {
  /** The cluster entry's name ("in-cluster" for the ServiceAccount). */
  name: string;
  /** API server URL, without a trailing slash. */
  server: string;
  /** PEM bundle to verify the server with; undefined: the system roots. */
  ca?: string;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
}

export interface KubeUser {
  name: string;
  /** Client certificate and key (PEM). */
  cert?: string;
  key?: string;
  token?: string;
  /** Re-read per request (rotating tokens). */
  tokenFile?: string;
}

/** Resolved credentials: one cluster, one user. Immutable; the token file is read per request. */
export class KubeConfig {
  /** Where the credentials came from: a file path (or paths) or "in-cluster". */
  readonly origin: string;
  readonly contextName: string;
  /** The context's namespace (in-cluster: the pod's), if any. */
  readonly namespace: string | undefined;
  readonly cluster: KubeCluster;
  readonly user: KubeUser;
  #lastToken: string | undefined;

  constructor(init: {
    origin: string;
    contextName: string;
    namespace?: string | undefined;
    cluster: KubeCluster;
    user: KubeUser;
  }) {
    this.origin = init.origin;
    this.contextName = init.contextName;
    this.namespace = init.namespace;
    this.cluster = init.cluster;
    this.user = init.user;
  }

  /** The cluster in use (the name client-node's KubeConfig gave it; the CLI prints `.server`). */
  getCurrentCluster(): KubeCluster {
    return this.cluster;
  }

  /** The bearer token to send now: the file's current content, else the inline token. */
  async fetchToken(): Promise<string | undefined> {
    const file = this.user.tokenFile;
    if (file === undefined) return this.user.token;
    try {
      const token = (await readFile(file, 'utf8')).trim();
      if (token) this.#lastToken = token;
    } catch (err) {
      // Kubelet swaps the projected volume atomically, so a failed read is unusual; keep using
      // the token we had rather than going anonymous.
      if (this.#lastToken === undefined)
        throw new KubeError(
          'KUBECONFIG',
          `cannot read the token file ${file} of user "${this.user.name}" (${this.origin}): ${(err as Error).message}`,
        );
    }
    return this.#lastToken ?? this.user.token;
  }
}

export type KubeconfigOption =
  /** Path to a kubeconfig file. */
  | string
  | KubeConfig
  /** The pod's ServiceAccount (KUBERNETES_SERVICE_HOST/PORT and the mounted token). */
  | { inCluster: true; pathPrefix?: string };

const NO_CONFIG_HINT =
  'pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount (KUBERNETES_SERVICE_HOST and a mounted token)';

/**
 * Loads credentials: a path, `{ inCluster: true }`, an already loaded KubeConfig, or (undefined)
 * $KUBECONFIG, else in-cluster, else ~/.kube/config. Throws KubeError('KUBECONFIG') naming the
 * file and entry at fault.
 */
export function loadKubeConfig(option?: KubeconfigOption): KubeConfig {
  if (option instanceof KubeConfig) return option;
  if (typeof option === 'string') return loadKubeConfigFiles([option]);
  if (option && 'inCluster' in option) return loadInCluster(option.pathPrefix ?? '');
  const env = process.env.KUBECONFIG;
  if (env) {
    const files = env.split(delimiter).filter(Boolean);
    if (files.length > 0) return loadKubeConfigFiles(files, 'KUBECONFIG');
  }
  if (process.env.KUBERNETES_SERVICE_HOST && existsSync(`${SERVICE_ACCOUNT_DIR}/token`))
    return loadInCluster('');
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return loadKubeConfigFiles([home]);
  throw new KubeError('KUBECONFIG', `no Kubernetes cluster configured: ${NO_CONFIG_HINT}`);
}

/** The pod's ServiceAccount, as client-go's rest.InClusterConfig (pathPrefix: tests' fake root). */
function loadInCluster(pathPrefix: string): KubeConfig {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port)
    throw new KubeError(
      'KUBECONFIG',
      'in-cluster credentials need KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (set by Kubernetes in every pod); outside a pod pass --kubeconfig',
    );
  const dir = `${pathPrefix}${SERVICE_ACCOUNT_DIR}`;
  const tokenFile = `${dir}/token`;
  if (!existsSync(tokenFile))
    throw new KubeError(
      'KUBECONFIG',
      `in-cluster credentials: no ServiceAccount token at ${tokenFile} (is automountServiceAccountToken off for this pod?)`,
    );
  const ca = readOptional(`${dir}/ca.crt`);
  const namespace = readOptional(`${dir}/namespace`)?.trim();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return new KubeConfig({
    origin: 'in-cluster',
    contextName: 'in-cluster',
    namespace: namespace || undefined,
    cluster: {
      name: 'in-cluster',
      server: `https://${hostPart}:${port}`,
      ...(ca !== undefined ? { ca } : {}),
      insecureSkipTlsVerify: false,
    },
    user: { name: 'in-cluster', tokenFile },
  });
}

function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

type Obj = Record<string, unknown>;

interface NamedEntry {
  /** The file that defined the entry: relative paths in it resolve against its directory. */
  file: string;
  value: Obj;
}

/**
 * Loads one kubeconfig, or merges several (a KUBECONFIG list) as kubectl does: the first file to
 * define a cluster, user or context name wins; current-context comes from the first file that sets
 * it. Missing files in a list are skipped; a single named file must exist.
 */
function loadKubeConfigFiles(files: readonly string[], via?: string): KubeConfig {
  const origin = via ? `${via}=${files.join(delimiter)}` : (files[0] ?? '');
  const clusters = new Map<string, NamedEntry>();
  const users = new Map<string, NamedEntry>();
  const contexts = new Map<string, NamedEntry>();
  let current: string | undefined;
  let loaded = 0;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (files.length > 1 && code === 'ENOENT') continue;
      throw new KubeError(
        'KUBECONFIG',
        `could not load Kubernetes credentials from ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      );
    }
    loaded += 1;
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new KubeError('KUBECONFIG', `kubeconfig ${file} is not valid YAML: ${(err as Error).message}`);
    }
    if (doc === null || doc === undefined) continue;
    if (!isObj(doc)) throw new KubeError('KUBECONFIG', `kubeconfig ${file} is not a mapping (kind: Config)`);
    collect(doc, 'clusters', 'cluster', file, clusters);
    collect(doc, 'users', 'user', file, users);
    collect(doc, 'contexts', 'context', file, contexts);
    const cc = doc['current-context'];
    if (cc !== undefined && cc !== null && typeof cc !== 'string')
      throw new KubeError('KUBECONFIG', `kubeconfig ${file}: current-context must be a string`);
    if (!current && cc) current = cc;
  }
  if (loaded === 0)
    throw new KubeError('KUBECONFIG', `could not load Kubernetes credentials: none of ${origin} exists`);
  if (!current)
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${origin} has no current-context: set one (kubectl config use-context NAME)${contexts.size > 0 ? `; contexts: ${[...contexts.keys()].join(', ')}` : ''}`,
    );
  const context = contexts.get(current);
  if (!context)
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${origin}: current-context "${current}" is not among its contexts`,
    );
  const clusterName = optionalString(context.value, 'cluster', `context "${current}"`, context.file);
  const userName = optionalString(context.value, 'user', `context "${current}"`, context.file);
  const namespace = optionalString(context.value, 'namespace', `context "${current}"`, context.file);
  if (!clusterName)
    throw new KubeError('KUBECONFIG', `kubeconfig ${context.file}: context "${current}" names no cluster`);
  const clusterEntry = clusters.get(clusterName);
  if (!clusterEntry)
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${origin}: context "${current}" uses cluster "${clusterName}", which is not defined`,
    );
  let userEntry: NamedEntry | undefined;
  if (userName) {
    userEntry = users.get(userName);
    if (!userEntry)
      throw new KubeError(
        'KUBECONFIG',
        `kubeconfig ${origin}: context "${current}" uses user "${userName}", which is not defined`,
      );
  }
  return new KubeConfig({
    origin,
    contextName: current,
    namespace,
    cluster: readCluster(clusterName, clusterEntry),
    user: userEntry ? readUser(userName ?? '', userEntry) : { name: '' },
  });
}

function collect(doc: Obj, list: string, field: string, file: string, into: Map<string, NamedEntry>): void {
  const entries = doc[list];
  if (entries === undefined || entries === null) return;
  if (!Array.isArray(entries))
    throw new KubeError('KUBECONFIG', `kubeconfig ${file}: ${list} must be a list`);
  for (const [i, entry] of entries.entries()) {
    const name = isObj(entry) ? entry.name : undefined;
    if (typeof name !== 'string' || !name)
      throw new KubeError('KUBECONFIG', `kubeconfig ${file}: ${list}[${i}] has no name`);
    const value = entry[field] ?? {};
    if (!isObj(value))
      throw new KubeError(
        'KUBECONFIG',
        `kubeconfig ${file}: ${list}[${i}] (${name}).${field} must be a mapping`,
      );
    if (!into.has(name)) into.set(name, { file, value });
  }
}

function readCluster(name: string, { file, value }: NamedEntry): KubeCluster {
  const where = `cluster "${name}"`;
  const server = optionalString(value, 'server', where, file);
  if (!server) throw new KubeError('KUBECONFIG', `kubeconfig ${file}: ${where} has no server`);
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new KubeError('KUBECONFIG', `kubeconfig ${file}: ${where} server "${server}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} server "${server}" must be https:// (or http://)`,
    );
  for (const unsupported of ['proxy-url'])
    if (value[unsupported] !== undefined)
      throw new KubeError(
        'KUBECONFIG',
        `kubeconfig ${file}: ${where} sets ${unsupported}, which Hypha does not support; reach the API server directly`,
      );
  const insecure = value['insecure-skip-tls-verify'];
  if (insecure !== undefined && typeof insecure !== 'boolean')
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} insecure-skip-tls-verify must be true or false`,
    );
  const ca = pem(value, 'certificate-authority', where, file);
  const tlsServerName = optionalString(value, 'tls-server-name', where, file);
  return {
    name,
    server: server.replace(/\/+$/, ''),
    ...(ca !== undefined ? { ca } : {}),
    insecureSkipTlsVerify: insecure === true,
    ...(tlsServerName ? { tlsServerName } : {}),
  };
}

function readUser(name: string, { file, value }: NamedEntry): KubeUser {
  const where = `user "${name}"`;
  if (value.exec !== undefined || value['auth-provider'] !== undefined) {
    const what = value.exec !== undefined ? 'an exec credential plugin' : 'an auth-provider';
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} uses ${what}, which Hypha does not run; give it a ServiceAccount token instead (kubectl create token NAME, then set users[].user.token or tokenFile) or a client certificate`,
    );
  }
  if (value.username !== undefined || value.password !== undefined)
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} uses basic auth (username/password), which Kubernetes removed; use a token or a client certificate`,
    );
  const cert = pem(value, 'client-certificate', where, file);
  const key = pem(value, 'client-key', where, file);
  if ((cert === undefined) !== (key === undefined))
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} has a client ${cert === undefined ? 'key' : 'certificate'} without its ${cert === undefined ? 'certificate' : 'key'}`,
    );
  const token = optionalString(value, 'token', where, file);
  const tokenFile = optionalString(value, 'tokenFile', where, file);
  return {
    name,
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    ...(token ? { token } : {}),
    ...(tokenFile ? { tokenFile: resolvePath(file, tokenFile) } : {}),
  };
}

/** `<field>-data` (base64 PEM) or `<field>` (a path, relative to the kubeconfig's directory). */
function pem(value: Obj, field: string, where: string, file: string): string | undefined {
  const data = optionalString(value, `${field}-data`, where, file);
  if (data) {
    const text = Buffer.from(data, 'base64').toString('utf8');
    if (!text.includes('-----BEGIN'))
      throw new KubeError(
        'KUBECONFIG',
        `kubeconfig ${file}: ${where} ${field}-data is not base64-encoded PEM`,
      );
    return text;
  }
  const path = optionalString(value, field, where, file);
  if (!path) return undefined;
  const full = resolvePath(file, path);
  try {
    return readFileSync(full, 'utf8');
  } catch (err) {
    throw new KubeError(
      'KUBECONFIG',
      `kubeconfig ${file}: ${where} ${field} ${full} cannot be read: ${(err as Error).message}`,
    );
  }
}

function resolvePath(kubeconfigFile: string, path: string): string {
  return isAbsolute(path) ? path : resolve(dirname(kubeconfigFile), path);
}

function optionalString(value: Obj, field: string, where: string, file: string): string | undefined {
  const v = value[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string')
    throw new KubeError('KUBECONFIG', `kubeconfig ${file}: ${where} ${field} must be a string`);
  return v;
}

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
