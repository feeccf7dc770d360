// Connection to the API server: credentials from a kubeconfig (or the in-cluster service
// account) through @kubernetes/client-node's KubeConfig, requests through undici.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type https from 'node:https';
import { delimiter, dirname, resolve } from 'node:path';
import { KubeConfig, type User } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';

/** A kubeconfig user whose bearer token is read from a file at each request. */
type TokenFileUser = User & { tokenFile?: string };

/**
 * client-go's `tokenFile` user field (kubeadm writes it for kube-proxy's service-account token)
 * is unknown to KubeConfig: it is kept on the user, relative to the kubeconfig's directory,
 * and read per request so that a rotated token is picked up.
 */
function loadWithTokenFiles(kc: KubeConfig, file: string): void {
  kc.loadFromFile(file);
  type RawConfig = { users?: Array<{ name?: unknown; user?: { tokenFile?: unknown } }> } | null;
  let raw: RawConfig;
  try {
    raw = parseYaml(readFileSync(file, 'utf8')) as RawConfig;
  } catch {
    return;
  }
  const files = new Map<string, string>();
  for (const u of raw?.users ?? []) {
    if (typeof u.name === 'string' && typeof u.user?.tokenFile === 'string') files.set(u.name, resolve(dirname(file), u.user.tokenFile));
  }
  if (files.size > 0) kc.users = kc.users.map((u): TokenFileUser => (files.has(u.name) && !u.token ? { ...u, tokenFile: files.get(u.name)! } : u));
}
import { Agent, request, type Dispatcher } from 'undici';

export interface ClientConnectionOptions {
  /** --kubeconfig / clientConnection.kubeconfig. */
  kubeconfig?: string;
  /** --master: overrides the server URL of whatever configuration was loaded. */
  master?: string;
  /** Root for the in-cluster service account files (tests only). */
  inClusterPathPrefix?: string;
}

/**
 * Loads client configuration. Order: an explicit kubeconfig path, then the files in the
 * KUBECONFIG environment variable, then (without --master) the in-cluster service account;
 * --master, when given, replaces the server URL of the result (alone it means an
 * unauthenticated connection to that URL).
 */
export function loadKubeConfig(opts: ClientConnectionOptions = {}): KubeConfig {
  let file = '';
  try {
    return loadKubeConfigFrom(opts, (f) => (file = f));
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // Every problem names the file it is in, so a user knows which one to fix.
    throw new Error(file !== '' && !msg.includes(file) ? `kubeconfig ${file}: ${msg.split('\n')[0]}` : msg);
  }
}

function loadKubeConfigFrom(opts: ClientConnectionOptions, reading: (file: string) => void): KubeConfig {
  const kc = new KubeConfig();
  const envFiles = (process.env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  if (opts.kubeconfig) {
    if (!existsSync(opts.kubeconfig)) throw new Error(`kubeconfig file ${opts.kubeconfig} does not exist`);
    reading(opts.kubeconfig);
    loadWithTokenFiles(kc, opts.kubeconfig);
  } else if (envFiles.length > 0) {
    // Like kubectl, missing files in KUBECONFIG are ignored and the first file wins on conflicts.
    const present = envFiles.filter((f) => existsSync(f));
    if (present.length === 0) throw new Error(`none of the KUBECONFIG files exist: ${envFiles.join(delimiter)}`);
    reading(present[0]!);
    loadWithTokenFiles(kc, present[0]!);
    for (const f of present.slice(1)) {
      reading(f);
      const more = new KubeConfig();
      more.loadFromFile(f);
      kc.mergeConfig(more, true);
    }
  } else if (opts.master) {
    kc.loadFromClusterAndUser({ name: 'master', server: opts.master, skipTLSVerify: false }, { name: 'anonymous' });
  } else {
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      throw new Error(
        'no kubeconfig or --master given and not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset)',
      );
    }
    kc.loadFromCluster(opts.inClusterPathPrefix);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    const context = kc.getCurrentContext();
    if (!context) throw new Error('has no current-context (set one with kubectl config use-context, or add a context)');
    if (!kc.getContextObject(context)) throw new Error(`current-context ${JSON.stringify(context)} is not among its contexts`);
    throw new Error(`has no cluster for context ${JSON.stringify(context)}`);
  }
  if (opts.master && cluster.server !== opts.master) {
    kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server: opts.master! } : c));
  }
  const server = kc.getCurrentCluster()!.server;
  if (!server) throw new Error(`cluster ${JSON.stringify(cluster.name)} has no server URL`);
  try {
    const u = new URL(server);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme must be http or https');
  } catch (err) {
    throw new Error(`invalid API server URL ${JSON.stringify(server)}: ${(err as Error).message}`);
  }
  return kc;
}

export interface KubeRequestOptions {
  method?: string;
  /** Query parameters; undefined values are left out. */
  query?: Record<string, string | undefined>;
  signal?: AbortSignal;
  body?: unknown;
  /** Content-Type of the body (default application/json; a PATCH names its patch type). */
  contentType?: string;
  /** undici timeouts in ms; 0 disables (callers that watch run their own inactivity timer). */
  headersTimeout?: number;
  bodyTimeout?: number;
}

export interface KubeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

/** What the reflector needs from a client; KubeClient is the real one. */
export interface ApiRequester {
  request(path: string, opts?: KubeRequestOptions): Promise<KubeResponse>;
  /** Stops reusing pooled connections (a stalled watch suggests they all go through a dead path). */
  resetConnections?(): void;
}

type TlsOptions = Pick<https.RequestOptions, 'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'rejectUnauthorized' | 'servername'>;

export class KubeClient implements ApiRequester {
  private agent: Agent | undefined;
  private agentKey = '';
  private readonly userAgent: string;
  /** Where credentials are asked for; see the constructor. */
  private readonly credentials: KubeConfig;

  constructor(
    readonly config: KubeConfig,
    opts: { userAgent?: string } = {},
  ) {
    this.userAgent = opts.userAgent ?? `kube-proxy-ts/0.1.0 (${process.platform}/${process.arch})`;
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    this.credentials = config;
    if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
      // KubeConfig refuses plain http unless TLS verification is switched off; there is no TLS
      // to verify on such a URL, so credentials come from a copy that says so.
      this.credentials = new KubeConfig();
      this.credentials.loadFromOptions({
        clusters: config.clusters.map((c) => (c.name === cluster.name ? { ...c, skipTLSVerify: true } : c)),
        users: config.users,
        contexts: config.contexts,
        currentContext: config.currentContext,
      });
    }
  }

  static load(opts: ClientConnectionOptions = {}): KubeClient {
    return new KubeClient(loadKubeConfig(opts));
  }

  /** The API server base URL. */
  get server(): string {
    return this.credentials.getCurrentCluster()!.server;
  }

  async request(path: string, opts: KubeRequestOptions = {}): Promise<KubeResponse> {
    // Asked for every request: token files, exec plugins and rotated certificates refresh here.
    const auth: https.RequestOptions = { headers: {} };
    await this.credentials.applyToHTTPSOptions(auth);
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.userAgent };
    for (const [k, v] of Object.entries(auth.headers ?? {})) {
      if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
    }
    if (typeof auth.auth === 'string') headers.Authorization = `Basic ${Buffer.from(auth.auth).toString('base64')}`;
    const tokenFile = (this.credentials.getCurrentUser() as TokenFileUser | null)?.tokenFile;
    if (tokenFile && headers.Authorization === undefined && headers.authorization === undefined) {
      headers.Authorization = `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`;
    }

    const url = new URL(this.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, v);
    }
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['Content-Type'] = opts.contentType ?? 'application/json';
    }
    const res = await request(url, {
      method: (opts.method ?? 'GET') as Dispatcher.HttpMethod,
      headers,
      body,
      signal: opts.signal,
      dispatcher: this.dispatcherFor(auth),
      headersTimeout: opts.headersTimeout,
      bodyTimeout: opts.bodyTimeout,
    });
    return { status: res.statusCode, headers: res.headers, body: res.body };
  }

  resetConnections(): void {
    const a = this.agent;
    this.agent = undefined;
    this.agentKey = '';
    // Requests in flight on the old pool end on their own (or by their own timers); idle ones close now.
    if (a) void a.close().catch(() => undefined);
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    const a = this.agent;
    this.agent = undefined;
    this.agentKey = '';
    if (a) await a.destroy();
  }

  // One pooled agent per distinct TLS identity; a rotated client certificate gets a new pool.
  private dispatcherFor(tls: TlsOptions): Agent {
    const h = createHash('sha256');
    for (const v of [tls.ca, tls.cert, tls.key, tls.pfx, tls.passphrase, tls.rejectUnauthorized, tls.servername]) {
      h.update(v === undefined ? '\0' : Buffer.isBuffer(v) ? v : JSON.stringify(v));
      h.update('|');
    }
    const key = h.digest('hex');
    if (!this.agent || key !== this.agentKey) {
      const old = this.agent;
      const connect: Record<string, unknown> = {};
      for (const k of ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername'] as const) {
        if (tls[k] !== undefined) connect[k] = tls[k];
      }
      this.agent = new Agent({ connect });
      this.agentKey = key;
      // Requests still running on the old pool finish; the pool closes after them.
      if (old) void old.close().catch(() => undefined);
    }
    return this.agent;
  }
}
