// Small HTTP plumbing shared by the health and metrics servers: bind-address parsing,
// listening with upstream's bindAddressHardFail semantics, and orderly close.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { splitHostPort } from '../config/defaults.js';
import { log } from '../log.js';

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Upstream retries a failed metrics or healthz bind every 5 s unless bindAddressHardFail is set. */
export const BIND_RETRY_MS = 5000;

/** `host:port` or `[v6]:port` → what net.Server.listen takes; throws on anything else. */
export function parseBindAddress(address: string): { host: string | undefined; port: number } {
  const hp = splitHostPort(address);
  const port = hp === null ? NaN : Number(hp.port);
  if (hp === null || hp.port === '' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid bind address ${JSON.stringify(address)}: want host:port`);
  }
  // An empty host means every address, as in Go (Node picks :: or 0.0.0.0 for undefined).
  return { host: hp.host === '' ? undefined : hp.host, port };
}

/** Listens once; resolves with the bound port, rejects with the listen error. */
export function listen(server: Server, host: string | undefined, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Closes a server and drops its idle keep-alive connections so close() does not hang. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

export interface RunningServer {
  /** The configured address. */
  readonly address: string;
  /** The bound port; null while the server is not (yet) listening. */
  readonly port: number | null;
  close(): Promise<void>;
}

export interface ServeOptions {
  /** Used in logs and errors ("healthz server", "metrics server"). */
  name: string;
  /** Upstream's bindAddressHardFail: a bind failure rejects instead of being retried. */
  hardFail: boolean;
  retryMs?: number;
}

/**
 * Serves `handler` on `address`. A bind failure is an error when hardFail is set; otherwise
 * it is logged and retried every retryMs until it works or the server is closed.
 */
export async function serve(address: string, handler: Handler, opts: ServeOptions): Promise<RunningServer> {
  const { host, port } = parseBindAddress(address);
  const retryMs = opts.retryMs ?? BIND_RETRY_MS;
  let server: Server | null = null;
  let bound: number | null = null;
  let closed = false;
  let timer: NodeJS.Timeout | null = null;

  const attempt = async (): Promise<void> => {
    const s = createServer(handler);
    try {
      bound = await listen(s, host, port);
      if (closed) {
        await closeServer(s);
        return;
      }
      server = s;
      log.info(`started ${opts.name}`, { address, port: bound });
    } catch (err) {
      const message = `failed to start ${opts.name} on ${address}: ${err instanceof Error ? err.message : String(err)}`;
      if (opts.hardFail) throw new Error(message);
      log.error(`${message}; retrying`, { retryInMs: retryMs });
      if (!closed) {
        timer = setTimeout(() => void attempt(), retryMs);
        // A pending retry alone must not keep the process alive.
        timer.unref();
      }
    }
  };
  await attempt();

  return {
    address,
    get port() {
      return bound;
    },
    async close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      if (server !== null) await closeServer(server);
      bound = null;
    },
  };
}

/** Writes a JSON body with upstream's headers. */
export function sendJSON(res: ServerResponse, code: number, body: string): void {
  res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
  res.end(body);
}

export function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.end('404 page not found\n');
}
