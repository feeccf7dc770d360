// Connection to the API server: credentials from a kubeconfig (or the in-cluster service
// account, see kubeconfig.ts and credentials.ts), requests through Node's own HTTP client (an
// HTTP library cost every start ~0.1 s of module loading).
import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Credentials, type TlsOptions } from './credentials.js';
import { loadKubeConfig, type ClientConnectionOptions, type KubeConfig } from './kubeconfig.js';

export { loadKubeConfig, type ClientConnectionOptions, type KubeConfig };

/** Without a word from the server for this long, a request fails (unless its caller says otherwise). */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export interface KubeRequestOptions {
  method?: string;
  /** Query parameters; undefined values are left out. */
  query?: Record<string, string | undefined>;
  signal?: AbortSignal;
  body?: unknown;
  /** Content-Type of the body (default application/json; a PATCH names its patch type). */
  contentType?: string;
  /**
   * Ms without data on the connection (waiting for the headers or within the body) before the
   * request fails; 0: none (callers that watch run their own inactivity timer).
   */
  idleTimeoutMs?: number;
}

/** A response body: its chunks as they arrive, or all of it. */
export interface ResponseBody extends AsyncIterable<Buffer> {
  text(): Promise<string>;
  json(): Promise<unknown>;
}

export interface KubeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: ResponseBody;
}

/** What the reflector needs from a client; KubeClient is the real one. */
export interface ApiRequester {
  request(path: string, opts?: KubeRequestOptions): Promise<KubeResponse>;
  /** Stops reusing pooled connections (a stalled watch suggests they all go through a dead path). */
  resetConnections?(): void;
}

export class KubeClient implements ApiRequester {
  private agent: HttpAgent | undefined;
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
    const tls = url.protocol === 'https:';
    const agent = this.agentFor(tls, auth.tls);
    const idle = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = (tls ? httpsRequest : httpRequest)(url, { method: opts.method ?? 'GET', headers, agent, signal: opts.signal }, resolve);
      req.on('error', reject);
      // The socket's inactivity, through the headers and the body alike.
      if (idle > 0) req.setTimeout(idle, () => req.destroy(new Error(`no data from ${url.host} for ${idle} ms`)));
      req.end(body);
    });
    if (res.statusCode === 401) this.credentials.rejected();
    return { status: res.statusCode ?? 0, headers: res.headers, body: responseBody(res) };
  }

  resetConnections(): void {
    const a = this.agent;
    this.agent = undefined;
    this.agentKey = '';
    if (a) retire(a);
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    const a = this.agent;
    this.agent = undefined;
    this.agentKey = '';
    a?.destroy();
  }

  // One pool of kept-alive connections per distinct TLS identity; a rotated client certificate
  // gets a new pool.
  private agentFor(tls: boolean, identity: TlsOptions): HttpAgent {
    const h = createHash('sha256');
    h.update(tls ? 'https|' : 'http|');
    for (const v of [identity.ca, identity.cert, identity.key, identity.rejectUnauthorized, identity.servername]) {
      h.update(v === undefined ? '\0' : Buffer.isBuffer(v) ? v : JSON.stringify(v));
      h.update('|');
    }
    const key = h.digest('hex');
    if (!this.agent || key !== this.agentKey) {
      const old = this.agent;
      const connect: Record<string, unknown> = {};
      for (const k of ['ca', 'cert', 'key', 'rejectUnauthorized', 'servername'] as const) {
        if (identity[k] !== undefined) connect[k] = identity[k];
      }
      // `timeout` closes connections left idle in the pool, not ones in use.
      const options = { keepAlive: true, timeout: DEFAULT_IDLE_TIMEOUT_MS, ...connect };
      this.agent = tls ? new HttpsAgent(options) : new HttpAgent(options);
      this.agentKey = key;
      if (old) retire(old);
    }
    return this.agent;
  }
}

/** Requests still running on an old pool finish; its connections close as they come free. */
function retire(agent: HttpAgent): void {
  agent.keepSocketAlive = () => false;
  for (const sockets of Object.values(agent.freeSockets)) for (const s of sockets ?? []) s.destroy();
}

function responseBody(res: IncomingMessage): ResponseBody {
  const text = async (): Promise<string> => {
    const parts: Buffer[] = [];
    for await (const chunk of res) parts.push(chunk as Buffer);
    return Buffer.concat(parts).toString('utf8');
  };
  return {
    [Symbol.asyncIterator]: () => res[Symbol.asyncIterator](),
    text,
    json: async () => JSON.parse(await text()) as unknown,
  };
}
