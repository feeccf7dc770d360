// Connection to the API server: credentials from a kubeconfig (or the in-cluster service
// account, see kubeconfig.ts and credentials.ts), requests through undici.
import { createHash } from 'node:crypto';
import { Agent, request, type Dispatcher } from 'undici';
import { Credentials, type TlsOptions } from './credentials.js';
import { loadKubeConfig, type ClientConnectionOptions, type KubeConfig } from './kubeconfig.js';

export { loadKubeConfig, type ClientConnectionOptions, type KubeConfig };

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

export class KubeClient implements ApiRequester {
  private agent: Agent | undefined;
  private agentKey = '';
  private readonly userAgent: string;
  private readonly credentials: Credentials;

  constructor(
    readonly config: KubeConfig,
    opts: { userAgent?: string; execTimeoutMs?: number } = {},
  ) {
    this.userAgent = opts.userAgent ?? `kube-proxy-ts/0.1.0 (${process.platform}/${process.arch})`;
    this.credentials = new Credentials(config, { execTimeoutMs: opts.execTimeoutMs });
  }

  static load(opts: ClientConnectionOptions = {}): KubeClient {
    return new KubeClient(loadKubeConfig(opts));
  }

  /** The API server base URL. */
  get server(): string {
    return this.config.cluster.server;
  }

  async request(path: string, opts: KubeRequestOptions = {}): Promise<KubeResponse> {
    // Asked for every request: token files, exec plugins and rotated certificates refresh here.
    const auth = await this.credentials.get();
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.userAgent, ...auth.headers };

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
      dispatcher: this.dispatcherFor(auth.tls),
      headersTimeout: opts.headersTimeout,
      bodyTimeout: opts.bodyTimeout,
    });
    if (res.statusCode === 401) this.credentials.rejected();
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
    for (const v of [tls.ca, tls.cert, tls.key, tls.rejectUnauthorized, tls.servername]) {
      h.update(v === undefined ? '\0' : Buffer.isBuffer(v) ? v : JSON.stringify(v));
      h.update('|');
    }
    const key = h.digest('hex');
    if (!this.agent || key !== this.agentKey) {
      const old = this.agent;
      const connect: Record<string, unknown> = {};
      for (const k of ['ca', 'cert', 'key', 'rejectUnauthorized', 'servername'] as const) {
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
