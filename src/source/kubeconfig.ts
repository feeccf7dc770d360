// Client configuration as kubectl and client-go read it: kubeconfig files (an explicit path, or
// the KUBECONFIG list merged), a --master override, or the in-cluster service account. The
// result is plain data, resolved to the one cluster and user in use; credentials.ts turns it
// into request headers and TLS options.
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';

export interface ClusterConfig {
  name: string;
  server: string;
  /** PEM bytes, from certificate-authority-data. */
  caData?: Buffer;
  /** Absolute path, read at each request so that a replaced CA bundle is picked up. */
  caFile?: string;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
}

export interface ExecConfig {
  apiVersion: string;
  command: string;
  args: string[];
  env: Array<{ name: string; value: string }>;
  installHint?: string;
  provideClusterInfo: boolean;
}

export interface UserConfig {
  name: string;
  token?: string;
  /** Absolute path; re-read when the file changes (a rotated service-account token). */
  tokenFile?: string;
  username?: string;
  password?: string;
  clientCertData?: Buffer;
  clientCertFile?: string;
  clientKeyData?: Buffer;
  clientKeyFile?: string;
  exec?: ExecConfig;
}

export interface KubeConfig {
  /** Where the configuration came from (file names, "in-cluster" or "--master"), for messages. */
  source: string;
  cluster: ClusterConfig;
  user: UserConfig;
  namespace?: string;
}

export interface ClientConnectionOptions {
  /** --kubeconfig / clientConnection.kubeconfig. */
  kubeconfig?: string;
  /** --master: overrides the server URL of whatever configuration was loaded. */
  master?: string;
  /** Root for the in-cluster service account files (tests only). */
  inClusterPathPrefix?: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** A named entry of one file, kept with that file so relative paths and messages refer to it. */
interface Entry {
  file: string;
  name: string;
  body: Record<string, unknown>;
}

interface ParsedFile {
  clusters: Map<string, Entry>;
  users: Map<string, Entry>;
  contexts: Map<string, Entry>;
  currentContext: string;
}

class FileError extends Error {
  constructor(file: string, message: string) {
    super(`kubeconfig ${file}: ${message}`);
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseFile(file: string): ParsedFile {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FileError(file, (err instanceof Error ? err.message : String(err)).split('\n')[0]!);
  }
  if (doc === null || doc === undefined) doc = {};
  if (!isRecord(doc)) throw new FileError(file, 'is not a mapping');
  const list = (key: 'clusters' | 'users' | 'contexts', inner: string): Map<string, Entry> => {
    const out = new Map<string, Entry>();
    const items = doc[key] ?? [];
    if (!Array.isArray(items)) throw new FileError(file, `${key} must be a list`);
    items.forEach((item: unknown, i) => {
      if (!isRecord(item) || typeof item.name !== 'string' || item.name === '') throw new FileError(file, `${key}[${i}].name must be a non-empty string`);
      const body = item[inner] ?? {};
      if (!isRecord(body)) throw new FileError(file, `${key}[${i}].${inner} must be a mapping`);
      // Within one file, as in client-go, a later entry of the same name replaces an earlier one.
      out.set(item.name, { file, name: item.name, body });
    });
    return out;
  };
  const current = doc['current-context'] ?? '';
  if (typeof current !== 'string') throw new FileError(file, 'current-context must be a string');
  return { clusters: list('clusters', 'cluster'), users: list('users', 'user'), contexts: list('contexts', 'context'), currentContext: current };
}

/** kubectl's KUBECONFIG merge: the first file that names an entry wins, and so does the first current-context. */
function mergeFiles(files: ParsedFile[]): ParsedFile {
  const out: ParsedFile = { clusters: new Map(), users: new Map(), contexts: new Map(), currentContext: '' };
  for (const f of files) {
    for (const key of ['clusters', 'users', 'contexts'] as const) {
      for (const [name, e] of f[key]) if (!out[key].has(name)) out[key].set(name, e);
    }
    if (out.currentContext === '') out.currentContext = f.currentContext;
  }
  return out;
}

function str(e: Entry, key: string): string | undefined {
  const v = e.body[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new FileError(e.file, `${e.name}: ${key} must be a string`);
  return v;
}

function bool(e: Entry, key: string): boolean {
  const v = e.body[key] ?? false;
  if (typeof v !== 'boolean') throw new FileError(e.file, `${e.name}: ${key} must be true or false`);
  return v;
}

const pathIn = (e: Entry, key: string): string | undefined => {
  const p = str(e, key);
  return p === undefined ? undefined : resolve(dirname(e.file), p);
};

function data(e: Entry, key: string): Buffer | undefined {
  const v = str(e, key);
  if (v === undefined) return undefined;
  if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(v)) throw new FileError(e.file, `${e.name}: ${key} is not base64`);
  return Buffer.from(v, 'base64');
}

/** A file and inline data for the same thing contradict each other; client-go refuses it too. */
function oneOf(e: Entry, fileKey: string, dataKey: string): void {
  if (e.body[fileKey] && e.body[dataKey]) throw new FileError(e.file, `${e.name}: ${fileKey} and ${dataKey} are both set; keep one`);
}

function clusterFrom(e: Entry): ClusterConfig {
  oneOf(e, 'certificate-authority', 'certificate-authority-data');
  const c: ClusterConfig = {
    name: e.name,
    server: str(e, 'server') ?? '',
    caData: data(e, 'certificate-authority-data'),
    caFile: pathIn(e, 'certificate-authority'),
    insecureSkipTlsVerify: bool(e, 'insecure-skip-tls-verify'),
    tlsServerName: str(e, 'tls-server-name'),
  };
  if (c.insecureSkipTlsVerify && (c.caData || c.caFile)) {
    throw new FileError(e.file, `cluster ${JSON.stringify(e.name)}: insecure-skip-tls-verify and a certificate authority are both set; keep one`);
  }
  return c;
}

function execFrom(e: Entry, raw: unknown): ExecConfig {
  const where = `user ${JSON.stringify(e.name)}: exec`;
  if (!isRecord(raw)) throw new FileError(e.file, `${where} must be a mapping`);
  const { apiVersion, command, env, installHint, provideClusterInfo } = raw;
  const args = raw.args ?? [];
  if (apiVersion !== 'client.authentication.k8s.io/v1' && apiVersion !== 'client.authentication.k8s.io/v1beta1') {
    throw new FileError(e.file, `${where}.apiVersion ${JSON.stringify(apiVersion)} is not client.authentication.k8s.io/v1 or v1beta1`);
  }
  if (typeof command !== 'string' || command === '') throw new FileError(e.file, `${where}.command is missing`);
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new FileError(e.file, `${where}.args must be a list of strings`);
  const envList = env ?? [];
  if (!Array.isArray(envList) || !envList.every((v) => isRecord(v) && typeof v.name === 'string' && typeof v.value === 'string')) {
    throw new FileError(e.file, `${where}.env must be a list of {name, value} strings`);
  }
  return {
    apiVersion,
    // As in client-go, a command with a path separator is relative to the kubeconfig's directory.
    command: command.includes('/') && !isAbsolute(command) ? join(dirname(e.file), command) : command,
    args: args as string[],
    env: envList as Array<{ name: string; value: string }>,
    installHint: typeof installHint === 'string' ? installHint : undefined,
    provideClusterInfo: provideClusterInfo === true,
  };
}

function userFrom(e: Entry): UserConfig {
  const provider = e.body['auth-provider'];
  if (provider !== undefined && provider !== null) {
    const name = isRecord(provider) && typeof provider.name === 'string' ? provider.name : '?';
    throw new FileError(
      e.file,
      `user ${JSON.stringify(e.name)} uses auth-provider ${JSON.stringify(name)}, which kubectl and client-go no longer support; use an exec credential plugin (user.exec) instead`,
    );
  }
  oneOf(e, 'client-certificate', 'client-certificate-data');
  oneOf(e, 'client-key', 'client-key-data');
  const u: UserConfig = {
    name: e.name,
    token: str(e, 'token'),
    tokenFile: pathIn(e, 'tokenFile'),
    username: str(e, 'username'),
    password: str(e, 'password'),
    clientCertData: data(e, 'client-certificate-data'),
    clientCertFile: pathIn(e, 'client-certificate'),
    clientKeyData: data(e, 'client-key-data'),
    clientKeyFile: pathIn(e, 'client-key'),
  };
  if (e.body.exec !== undefined && e.body.exec !== null) u.exec = execFrom(e, e.body.exec);
  if ((u.token || u.tokenFile) && (u.username || u.password)) {
    throw new FileError(e.file, `user ${JSON.stringify(e.name)}: a bearer token and username/password are both set; keep one`);
  }
  if (!!(u.clientCertData || u.clientCertFile) !== !!(u.clientKeyData || u.clientKeyFile)) {
    throw new FileError(e.file, `user ${JSON.stringify(e.name)}: a client certificate needs both the certificate and its key`);
  }
  return u;
}

function resolveCurrent(files: string[], merged: ParsedFile): KubeConfig {
  const first = files[0]!;
  if (merged.currentContext === '') throw new FileError(first, 'has no current-context (set one with kubectl config use-context, or add a context)');
  const ctx = merged.contexts.get(merged.currentContext);
  if (!ctx) throw new FileError(first, `current-context ${JSON.stringify(merged.currentContext)} is not among its contexts`);
  const clusterName = str(ctx, 'cluster');
  const cluster = clusterName === undefined ? undefined : merged.clusters.get(clusterName);
  if (!cluster) throw new FileError(ctx.file, `has no cluster for context ${JSON.stringify(ctx.name)}`);
  const userName = str(ctx, 'user');
  const user = userName === undefined ? undefined : merged.users.get(userName);
  if (userName !== undefined && !user) throw new FileError(ctx.file, `context ${JSON.stringify(ctx.name)} names user ${JSON.stringify(userName)}, which is not among its users`);
  return {
    source: files.join(delimiter),
    cluster: clusterFrom(cluster),
    user: user ? userFrom(user) : { name: 'anonymous' },
    namespace: str(ctx, 'namespace'),
  };
}

function inCluster(prefix = ''): KubeConfig {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new Error('no kubeconfig or --master given and not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset)');
  const dir = join(prefix, SERVICE_ACCOUNT_DIR);
  const tokenFile = join(dir, 'token');
  if (!existsSync(tokenFile)) throw new Error(`in-cluster configuration: the service account token ${tokenFile} does not exist`);
  const caFile = join(dir, 'ca.crt');
  const nsFile = join(dir, 'namespace');
  return {
    source: 'in-cluster',
    cluster: {
      name: 'in-cluster',
      server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
      caFile: existsSync(caFile) ? caFile : undefined,
      insecureSkipTlsVerify: false,
    },
    user: { name: 'service-account', tokenFile },
    namespace: existsSync(nsFile) ? readFileSync(nsFile, 'utf8').trim() : undefined,
  };
}

/**
 * Loads client configuration. Order: an explicit kubeconfig path, then the files in the
 * KUBECONFIG environment variable, then (without --master) the in-cluster service account;
 * --master, when given, replaces the server URL of the result (alone it means an
 * unauthenticated connection to that URL).
 */
export function loadKubeConfig(opts: ClientConnectionOptions = {}): KubeConfig {
  const envFiles = (process.env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  let kc: KubeConfig;
  if (opts.kubeconfig) {
    if (!existsSync(opts.kubeconfig)) throw new Error(`kubeconfig file ${opts.kubeconfig} does not exist`);
    kc = resolveCurrent([opts.kubeconfig], parseFile(opts.kubeconfig));
  } else if (envFiles.length > 0) {
    // Like kubectl, missing files in KUBECONFIG are ignored.
    const present = envFiles.filter((f) => existsSync(f));
    if (present.length === 0) throw new Error(`none of the KUBECONFIG files exist: ${envFiles.join(delimiter)}`);
    kc = resolveCurrent(present, mergeFiles(present.map(parseFile)));
  } else if (opts.master) {
    kc = { source: '--master', cluster: { name: 'master', server: opts.master, insecureSkipTlsVerify: false }, user: { name: 'anonymous' } };
  } else {
    kc = inCluster(opts.inClusterPathPrefix);
  }
  if (opts.master) kc.cluster.server = opts.master;
  const where = kc.source.includes('/') ? `kubeconfig ${kc.source}: ` : '';
  if (!kc.cluster.server) throw new Error(`${where}cluster ${JSON.stringify(kc.cluster.name)} has no server URL`);
  try {
    const u = new URL(kc.cluster.server);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme must be http or https');
  } catch (err) {
    throw new Error(`${where}invalid API server URL ${JSON.stringify(kc.cluster.server)}: ${(err as Error).message}`);
  }
  return kc;
}
