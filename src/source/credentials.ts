// Per-request credentials from a loaded kubeconfig: the Authorization header and the TLS
// options. Files (token, certificates, CA) are re-read when they change, so rotation needs no
// restart; exec credential plugins run when there is no valid cached credential.
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import type { ExecConfig, KubeConfig } from './kubeconfig.js';

export interface TlsOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface RequestCredentials {
  headers: Record<string, string>;
  tls: TlsOptions;
}

interface ExecResult {
  token?: string;
  cert?: Buffer;
  key?: Buffer;
  /** ms since the epoch; undefined: valid until the server says otherwise (a 401). */
  expires?: number;
}

/** Longest an exec plugin may run before the request fails. */
const EXEC_TIMEOUT_MS = 30_000;

export class Credentials {
  private readonly files = new Map<string, { stamp: string; bytes: Buffer }>();
  private exec: ExecResult | undefined;
  private execRunning: Promise<ExecResult> | undefined;

  constructor(
    readonly config: KubeConfig,
    private readonly opts: { execTimeoutMs?: number } = {},
  ) {}

  async get(): Promise<RequestCredentials> {
    const { cluster, user } = this.config;
    const headers: Record<string, string> = {};
    const tls: TlsOptions = {};
    if (cluster.server.startsWith('https:')) {
      tls.rejectUnauthorized = !cluster.insecureSkipTlsVerify;
      const ca = cluster.caData ?? (cluster.caFile ? this.read(cluster.caFile) : undefined);
      if (ca) tls.ca = ca;
      if (cluster.tlsServerName) tls.servername = cluster.tlsServerName;
    }
    const token = user.token ?? (user.tokenFile ? this.read(user.tokenFile).toString('utf8').trim() : undefined);
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (user.username !== undefined || user.password !== undefined) {
      headers.Authorization = `Basic ${Buffer.from(`${user.username ?? ''}:${user.password ?? ''}`).toString('base64')}`;
    }
    const cert = user.clientCertData ?? (user.clientCertFile ? this.read(user.clientCertFile) : undefined);
    const key = user.clientKeyData ?? (user.clientKeyFile ? this.read(user.clientKeyFile) : undefined);
    if (cert && key) Object.assign(tls, { cert, key });
    // Static credentials win over the plugin, as in client-go.
    if (user.exec && headers.Authorization === undefined && !tls.cert) {
      const got = await this.runExec(user.exec);
      if (got.token) headers.Authorization = `Bearer ${got.token}`;
      if (got.cert && got.key) Object.assign(tls, { cert: got.cert, key: got.key });
    }
    return { headers, tls };
  }

  /** The server refused the credentials (401): the next request asks the exec plugin again. */
  rejected(): void {
    this.exec = undefined;
  }

  /** A file's bytes, read again only when its identity, size or modification time changed. */
  private read(path: string): Buffer {
    let st;
    try {
      st = statSync(path);
    } catch (err) {
      throw new Error(`cannot read ${path} named in ${this.config.source}: ${(err as Error).message}`);
    }
    const stamp = `${st.ino}/${st.size}/${st.mtimeMs}`;
    const had = this.files.get(path);
    if (had?.stamp === stamp) return had.bytes;
    const bytes = readFileSync(path);
    this.files.set(path, { stamp, bytes });
    return bytes;
  }

  private async runExec(exec: ExecConfig): Promise<ExecResult> {
    if (this.exec && (this.exec.expires === undefined || this.exec.expires > Date.now())) return this.exec;
    // Concurrent requests share one run of the plugin.
    this.execRunning ??= runPlugin(exec, this.config, this.opts.execTimeoutMs ?? EXEC_TIMEOUT_MS).finally(() => (this.execRunning = undefined));
    this.exec = await this.execRunning;
    return this.exec;
  }
}

function runPlugin(exec: ExecConfig, config: KubeConfig, timeout: number): Promise<ExecResult> {
  const spec: Record<string, unknown> = { interactive: false };
  if (exec.provideClusterInfo) {
    const c = config.cluster;
    spec.cluster = {
      server: c.server,
      'tls-server-name': c.tlsServerName,
      'insecure-skip-tls-verify': c.insecureSkipTlsVerify,
      'certificate-authority-data': (c.caData ?? (c.caFile ? readFileSync(c.caFile) : undefined))?.toString('base64'),
    };
  }
  const env: NodeJS.ProcessEnv = { ...process.env, KUBERNETES_EXEC_INFO: JSON.stringify({ apiVersion: exec.apiVersion, kind: 'ExecCredential', spec }) };
  for (const { name, value } of exec.env) env[name] = value;
  const what = `exec credential plugin ${exec.command} (user ${JSON.stringify(config.user.name)})`;
  return new Promise((resolve, reject) => {
    execFile(exec.command, exec.args, { env, timeout, killSignal: 'SIGKILL', maxBuffer: 1 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why =
          e.code === 'ENOENT'
            ? `not found${exec.installHint ? `; ${exec.installHint.trim()}` : ''}`
            : e.killed
              ? `did not finish within ${timeout} ms`
              : `failed (exit status ${String(e.code)})${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`;
        reject(new Error(`${what} ${why}`));
        return;
      }
      try {
        resolve(parseExecCredential(stdout, exec.apiVersion));
      } catch (parseErr) {
        reject(new Error(`${what} gave an unusable answer: ${(parseErr as Error).message}`));
      }
    });
  });
}

function parseExecCredential(text: string, apiVersion: string): ExecResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('not JSON');
  }
  const d = doc as { apiVersion?: unknown; kind?: unknown; status?: Record<string, unknown> } | null;
  if (d?.kind !== 'ExecCredential') throw new Error(`kind ${JSON.stringify(d?.kind)} is not ExecCredential`);
  if (d.apiVersion !== apiVersion) throw new Error(`apiVersion ${JSON.stringify(d.apiVersion)} is not the ${apiVersion} asked for`);
  const s = d.status;
  if (typeof s !== 'object' || s === null) throw new Error('no status');
  const out: ExecResult = {};
  if (typeof s.token === 'string' && s.token !== '') out.token = s.token;
  const cert = s.clientCertificateData;
  const key = s.clientKeyData;
  if ((typeof cert === 'string' && cert !== '') !== (typeof key === 'string' && key !== '')) {
    throw new Error('clientCertificateData and clientKeyData must come together');
  }
  if (typeof cert === 'string' && cert !== '') Object.assign(out, { cert: Buffer.from(cert), key: Buffer.from(key as string) });
  if (!out.token && !out.cert) throw new Error('status has neither a token nor a client certificate');
  if (s.expirationTimestamp !== undefined && s.expirationTimestamp !== null) {
    const t = typeof s.expirationTimestamp === 'string' ? Date.parse(s.expirationTimestamp) : NaN;
    if (Number.isNaN(t)) throw new Error(`expirationTimestamp ${JSON.stringify(s.expirationTimestamp)} is not a time`);
    out.expires = t;
  }
  return out;
}
