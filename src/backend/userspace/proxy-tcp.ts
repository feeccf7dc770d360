// One TCP service port of the userspace proxy: accept a client, connect to an endpoint the
// balancer picks (the next one when a connect fails), then copy bytes both ways with pipe(),
// which keeps the per-connection work constant however many connections are open.
import net from 'node:net';
import { Balancer, endpointId, type ProxyEndpoint } from './proxy-balancer.js';
import { attemptLimit, dialTimeoutMs, type ProxyContext, type ServicePortHandler } from './proxy-shared.js';

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  endpoint: string;
}

function closed(socket: net.Socket): Promise<void> {
  return socket.closed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}

/** The connections of one service port, made at its first connection. */
interface Connections {
  byEndpoint: Map<string, Set<Pair>>;
  /** Upstream sockets still connecting, with the client waiting for them. */
  dialing: Set<net.Socket>;
  removalTimers: Map<string, NodeJS.Timeout>;
}

export class TcpServicePort implements ServicePortHandler {
  readonly balancer = new Balancer();
  // Most of a node's service ports never carry a connection: three empty collections each cost
  // 10,000 service ports ~9 MiB.
  private conns: Connections | undefined;
  private listening = true;

  private constructor(
    readonly key: string,
    private readonly host: string,
    readonly port: number,
    private readonly server: net.Server,
    private readonly ctx: ProxyContext,
  ) {
    server.on('connection', (client) => this.accept(client));
    // After listen() succeeded, errors here are per-accept (e.g. EMFILE): log, keep serving.
    server.on('error', (err) => ctx.log(`userspace proxy ${key}: accept failed: ${err.message}`));
  }

  /** Listens on host:port (port 0: any free port); rejects with the bind error (EADDRINUSE...). */
  static open(key: string, host: string, port: number, ctx: ProxyContext): Promise<TcpServicePort> {
    // pauseOnConnect: the client's first bytes wait in the kernel until an endpoint answers.
    // allowHalfOpen: a client that shuts down its sending side still gets the whole reply.
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, ipv6Only: host.includes(':') }, () => {
        server.off('error', reject);
        resolve(new TcpServicePort(key, host, (server.address() as net.AddressInfo).port, server, ctx));
      });
    });
  }

  setEndpoints(endpoints: readonly ProxyEndpoint[], affinityTimeoutSeconds: number | undefined): void {
    for (const id of this.balancer.setEndpoints(endpoints, affinityTimeoutSeconds)) this.scheduleRemoval(id);
    for (const [id, timer] of this.conns?.removalTimers ?? []) {
      if (this.balancer.has(id)) {
        clearTimeout(timer);
        this.conns!.removalTimers.delete(id);
      }
    }
    this.balancer.sweep(Date.now());
  }

  retire(): void {
    this.stopListening();
  }

  /**
   * Without endpoints nothing listens, so the kernel refuses new clients at once; open
   * connections run out their grace period as usual. Rejects when the port was taken meanwhile.
   */
  async setListening(on: boolean): Promise<void> {
    if (!on) return this.stopListening();
    if (this.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.host, port: this.port, ipv6Only: this.host.includes(':') }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listening = true;
  }

  async destroy(): Promise<void> {
    this.stopListening();
    const c = this.conns;
    if (!c) return;
    for (const timer of c.removalTimers.values()) clearTimeout(timer);
    c.removalTimers.clear();
    const waits: Promise<void>[] = [];
    for (const socket of c.dialing) {
      socket.destroy();
      waits.push(closed(socket));
    }
    for (const id of [...c.byEndpoint.keys()]) waits.push(...this.closeEndpoint(id));
    await Promise.all(waits);
  }

  live(): { connections: number; bytesIn: number; bytesOut: number } {
    let connections = 0;
    let bytesIn = 0;
    let bytesOut = 0;
    for (const pairs of this.conns?.byEndpoint.values() ?? []) {
      for (const p of pairs) {
        connections++;
        bytesIn += p.client.bytesRead;
        bytesOut += p.client.bytesWritten;
      }
    }
    return { connections, bytesIn, bytesOut };
  }

  private stopListening(): void {
    if (!this.listening) return;
    this.listening = false;
    // close() stops accepting and frees the port at once; open connections are ours to end.
    this.server.close();
  }

  private connections(): Connections {
    return (this.conns ??= { byEndpoint: new Map(), dialing: new Set(), removalTimers: new Map() });
  }

  private scheduleRemoval(id: string): void {
    const c = this.conns;
    if (!c?.byEndpoint.has(id) || c.removalTimers.has(id)) return;
    const timer = setTimeout(() => {
      c.removalTimers.delete(id);
      const pairs = c.byEndpoint.get(id);
      if (pairs) this.ctx.log(`userspace proxy ${this.key}: closing ${pairs.size} connection(s) to removed endpoint ${id}`);
      void Promise.all(this.closeEndpoint(id));
    }, this.ctx.removedEndpointGraceMs);
    timer.unref();
    c.removalTimers.set(id, timer);
  }

  private closeEndpoint(id: string): Promise<void>[] {
    const waits: Promise<void>[] = [];
    // A reset, not a FIN: the client must not take a cut-off stream for a complete answer.
    for (const p of this.conns?.byEndpoint.get(id) ?? []) {
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
      waits.push(closed(p.client), closed(p.upstream));
    }
    return waits;
  }

  private accept(client: net.Socket): void {
    this.ctx.counters.accepted++;
    client.on('error', () => {}); // its 'close' does the cleanup
    if (this.balancer.size === 0) {
      // No endpoints: the client sees the connection refused (reset), not a hang.
      this.ctx.counters.refused++;
      client.resetAndDestroy();
      return;
    }
    this.dial(client, new Set(), 0);
  }

  private dial(client: net.Socket, tried: Set<string>, attempt: number): void {
    const ep = this.balancer.pick(client.remoteAddress ?? '', Date.now(), tried);
    if (!ep || client.destroyed || !this.listening) {
      this.ctx.counters.refused++;
      client.resetAndDestroy();
      return;
    }
    const id = endpointId(ep);
    const upstream = net.connect({ host: ep.ip, port: ep.port, allowHalfOpen: true });
    const { dialing } = this.connections();
    dialing.add(upstream);
    const timer = setTimeout(() => upstream.destroy(new Error(`connect timed out after ${dialTimeoutMs(attempt)} ms`)), dialTimeoutMs(attempt));
    const clientGone = (): void => {
      upstream.destroy();
    };
    client.once('close', clientGone);
    const settle = (): void => {
      clearTimeout(timer);
      dialing.delete(upstream);
      client.off('close', clientGone);
      upstream.off('close', settle);
    };
    // Destroyed while connecting (client gone, proxy closing): no 'error', only 'close'.
    upstream.once('close', settle);
    upstream.once('error', (err) => {
      settle();
      if (client.destroyed) return;
      this.ctx.counters.connectFailures++;
      tried.add(id);
      const limit = attemptLimit(this.ctx, this.balancer.size);
      this.ctx.log(`userspace proxy ${this.key}: connect to ${id} failed (${err.message}), attempt ${attempt + 1} of ${limit}`);
      if (attempt + 1 < limit) this.dial(client, tried, attempt + 1);
      else {
        this.ctx.counters.refused++;
        client.resetAndDestroy();
      }
    });
    upstream.once('connect', () => {
      settle();
      upstream.removeAllListeners('error');
      this.splice(client, upstream, id);
    });
  }

  private splice(client: net.Socket, upstream: net.Socket, endpoint: string): void {
    const pair: Pair = { client, upstream, endpoint };
    const c = this.connections();
    let pairs = c.byEndpoint.get(endpoint);
    if (!pairs) c.byEndpoint.set(endpoint, (pairs = new Set()));
    pairs.add(pair);
    // The endpoint may have been removed while this connection was being set up.
    if (!this.balancer.has(endpoint) || !this.listening) this.scheduleRemoval(endpoint);

    // A reset from one side is passed on as a reset; an orderly close as an orderly close
    // (pipe() ends the other side's writing half once one side has sent everything).
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') client.resetAndDestroy();
      else client.destroy();
    });
    client.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') upstream.resetAndDestroy();
      else upstream.destroy();
    });
    let open = 2;
    const onClose = (): void => {
      if (--open > 0) return;
      this.ctx.counters.bytesIn += client.bytesRead;
      this.ctx.counters.bytesOut += client.bytesWritten;
      pairs.delete(pair);
      if (pairs.size === 0 && c.byEndpoint.get(endpoint) === pairs) {
        c.byEndpoint.delete(endpoint);
        clearTimeout(c.removalTimers.get(endpoint));
        c.removalTimers.delete(endpoint);
      }
    };
    client.once('close', (hadError) => {
      if (hadError) upstream.destroy();
      onClose();
    });
    upstream.once('close', (hadError) => {
      if (hadError) client.destroy();
      onClose();
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }
}
