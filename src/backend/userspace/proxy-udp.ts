// One UDP service port of the userspace proxy. Each client address:port gets a session: a
// socket of its own towards the endpoint chosen for its first datagram, so replies can be told
// apart per client and sent back from the service's listening socket (the address the client
// wrote to). A session ends after udpIdleTimeout without traffic either way.
import dgram from 'node:dgram';
import net from 'node:net';
import { Balancer, endpointId, type ProxyEndpoint } from './proxy-balancer.js';
import type { ProxyContext, ServicePortHandler } from './proxy-shared.js';

interface Session {
  client: string;
  upstream: dgram.Socket;
  endpoint: string;
  idle: NodeJS.Timeout;
  bytesIn: number;
  bytesOut: number;
  closed: Promise<void>;
  /** Datagrams that arrived before the session's socket was connected; undefined once it is. */
  pending: Buffer[] | undefined;
}

/** A client that floods a session still being set up cannot make it hold more than this. */
const MAX_PENDING = 64;

function family(ip: string): 'udp4' | 'udp6' {
  return net.isIPv6(ip) ? 'udp6' : 'udp4';
}

export class UdpServicePort implements ServicePortHandler {
  readonly balancer = new Balancer();
  private readonly sessions = new Map<string, Session>();
  private readonly socketClosed: Promise<void>;
  private open = true;

  private constructor(
    readonly key: string,
    readonly port: number,
    private readonly socket: dgram.Socket,
    private readonly ctx: ProxyContext,
  ) {
    this.socketClosed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('message', (msg, rinfo) => this.receive(msg, rinfo));
    socket.on('error', (err) => ctx.log(`userspace proxy ${key}: receive failed: ${err.message}`));
  }

  static open(key: string, host: string, port: number, ctx: ProxyContext): Promise<UdpServicePort> {
    const socket = dgram.createSocket({ type: family(host), ipv6Only: host.includes(':') });
    return new Promise((resolve, reject) => {
      const fail = (err: Error): void => {
        socket.close();
        reject(err);
      };
      socket.once('error', fail);
      socket.bind({ address: host, port }, () => {
        socket.off('error', fail);
        resolve(new UdpServicePort(key, socket.address().port, socket, ctx));
      });
    });
  }

  setEndpoints(endpoints: readonly ProxyEndpoint[], affinityTimeoutSeconds: number | undefined): void {
    const gone = new Set(this.balancer.setEndpoints(endpoints, affinityTimeoutSeconds));
    // A session to a removed endpoint ends at once, as the kernel modes delete its conntrack
    // entries: the client's next datagram goes to an endpoint that exists (DNS retries work).
    if (gone.size > 0) for (const s of this.sessions.values()) if (gone.has(s.endpoint)) this.end(s);
    this.balancer.sweep(Date.now());
  }

  /** Without its listening socket no reply can reach a client, so sessions end now too. */
  retire(): void {
    void this.destroy();
  }

  async destroy(): Promise<void> {
    if (this.open) {
      this.open = false;
      this.socket.close();
    }
    const waits = [...this.sessions.values()].map((s) => {
      this.end(s);
      return s.closed;
    });
    await Promise.all([this.socketClosed, ...waits]);
  }

  live(): { connections: number; bytesIn: number; bytesOut: number } {
    let bytesIn = 0;
    let bytesOut = 0;
    for (const s of this.sessions.values()) {
      bytesIn += s.bytesIn;
      bytesOut += s.bytesOut;
    }
    return { connections: this.sessions.size, bytesIn, bytesOut };
  }

  private end(s: Session): void {
    if (this.sessions.get(s.client) !== s) return;
    this.sessions.delete(s.client);
    clearTimeout(s.idle);
    this.ctx.counters.bytesIn += s.bytesIn;
    this.ctx.counters.bytesOut += s.bytesOut;
    s.upstream.close();
  }

  private receive(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const client = rinfo.family === 'IPv6' ? `[${rinfo.address}]:${rinfo.port}` : `${rinfo.address}:${rinfo.port}`;
    const s = this.sessions.get(client) ?? this.startSession(client, rinfo);
    if (!s) {
      this.ctx.counters.udpDropped++;
      return;
    }
    s.idle.refresh();
    s.bytesIn += msg.length;
    if (!s.pending) s.upstream.send(msg);
    else if (s.pending.length < MAX_PENDING) s.pending.push(msg);
    else this.ctx.counters.udpDropped++;
  }

  private startSession(client: string, rinfo: dgram.RemoteInfo): Session | undefined {
    const ep = this.balancer.pick(rinfo.address, Date.now());
    if (!ep) return undefined;
    this.ctx.counters.accepted++;
    const upstream = dgram.createSocket(family(ep.ip));
    const s: Session = {
      client,
      upstream,
      endpoint: endpointId(ep),
      idle: setTimeout(() => this.end(s), this.ctx.udpIdleTimeoutMs),
      bytesIn: 0,
      bytesOut: 0,
      closed: new Promise((resolve) => upstream.once('close', () => resolve())),
      pending: [],
    };
    s.idle.unref();
    // connect(): the kernel then only passes up datagrams from the endpoint, and reports
    // ICMP errors for it. send() is only allowed once connected, so datagrams wait till then.
    upstream.connect(ep.port, ep.ip, (err?: Error) => {
      if (err) {
        this.ctx.log(`userspace proxy ${this.key}: session ${client} -> ${s.endpoint}: ${err.message}`);
        this.end(s);
        return;
      }
      const pending = s.pending ?? [];
      s.pending = undefined;
      if (this.sessions.get(client) === s) for (const msg of pending) upstream.send(msg);
    });
    upstream.on('message', (reply) => {
      if (!this.open) return;
      s.idle.refresh();
      s.bytesOut += reply.length;
      this.socket.send(reply, rinfo.port, rinfo.address);
    });
    // ICMP port unreachable and the like: this session is useless, the next datagram starts over.
    upstream.on('error', (err) => {
      this.ctx.log(`userspace proxy ${this.key}: session ${client} -> ${s.endpoint}: ${err.message}`);
      this.end(s);
    });
    this.sessions.set(client, s);
    return s;
  }
}
