// The in-process proxy of the userspace mode: one listening socket per service port, and for
// every client a second connection to an endpoint, so every byte crosses into this process and
// out again. update() is declarative: it takes the whole desired set of service ports; change()
// touches only the service ports it is given, so a one-service change costs the same at any size.
import { readFileSync } from 'node:fs';
import type { ProxyEndpoint } from './proxy-balancer.js';
import type { ProxyContext, ProxyCounters, ServicePortHandler } from './proxy-shared.js';
import { TcpServicePort } from './proxy-tcp.js';
import { UdpServicePort } from './proxy-udp.js';

export type { ProxyEndpoint } from './proxy-balancer.js';

export interface ProxyServicePort {
  /** "ns/name:port/proto": stable across updates; the same key keeps its proxy port. */
  key: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** The endpoints new connections may go to (the caller applies the traffic policies). */
  endpoints: readonly ProxyEndpoint[];
  /** ClientIP session affinity timeout; absent or 0: no affinity. */
  affinityTimeoutSeconds?: number;
  /** Listen on exactly this port (a NodePort on localhost), outside the port range. */
  fixedPort?: number;
}

export interface UserspaceProxyOptions {
  /** Address the listeners bind ('0.0.0.0', or '::' for IPv6). */
  bindAddress: string;
  /**
   * Proxy ports come from this range when given (--proxy-port-range), else from the kernel's
   * ephemeral range (ip_local_port_range), tried in turn: letting the kernel pick (port 0) costs
   * a search of every bound port, ~0.3 ms per listener with 10,000 listening, against ~0.02 ms.
   */
  portRange?: { min: number; max: number };
  /** A UDP session ends after this long without a datagram either way (upstream: 250 ms). */
  udpIdleTimeoutMs: number;
  /** Endpoints one new connection may try; default every endpoint, at most 3. */
  connectRetries?: number;
  /** Connections to a removed endpoint (or a removed service port) are closed this much later. */
  removedEndpointGraceMs?: number;
  log: (msg: string) => void;
}

export interface UserspaceProxyStats extends ProxyCounters {
  listeners: number;
  activeConnections: number;
  udpSessions: number;
}

/**
 * Upstream's userspace proxier never closed connections to a removed endpoint. Here they are
 * closed after a grace period instead, so a proxied connection cannot outlive its pod for long.
 * 30 s is a pod's default terminationGracePeriodSeconds: a pod that drains its connections
 * while terminating is not cut off before the kubelet would have killed it anyway.
 */
export const DEFAULT_REMOVED_ENDPOINT_GRACE_MS = 30_000;

class PortPool {
  private readonly held = new Set<number>();
  private cursor: number;

  constructor(
    readonly min: number,
    readonly max: number,
    /** What the range is, for errors. */
    readonly name = 'the proxy port range',
  ) {
    this.cursor = min;
  }

  /** Free ports of the range, starting after the last one handed out (so a port just released is not reused first). */
  *candidates(): Generator<number> {
    const size = this.max - this.min + 1;
    for (let i = 0; i < size; i++) {
      const port = this.min + ((this.cursor - this.min + i) % size);
      if (!this.held.has(port)) yield port;
    }
  }

  take(port: number): void {
    this.held.add(port);
    this.cursor = port === this.max ? this.min : port + 1;
  }

  release(port: number): void {
    this.held.delete(port);
  }
}

/** The kernel's ephemeral ports of this network namespace, as a pool; none when unreadable (the kernel then picks). */
function ephemeralPool(): PortPool | undefined {
  try {
    const [min, max] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(min) && Number.isInteger(max) && min! >= 1 && max! <= 65535 && min! <= max!) return new PortPool(min!, max!, "the kernel's ephemeral port range");
  } catch {
    // Not Linux, or no /proc.
  }
  return undefined;
}

export class UserspaceProxy {
  private readonly ctx: ProxyContext;
  private readonly counters: ProxyCounters = { accepted: 0, refused: 0, connectFailures: 0, udpDropped: 0, bytesIn: 0, bytesOut: 0 };
  private readonly active = new Map<string, { protocol: 'TCP' | 'UDP'; handler: ServicePortHandler }>();
  /** Removed service ports whose connections still run out their grace period. */
  private readonly retired = new Map<ServicePortHandler, NodeJS.Timeout>();
  private readonly pool: PortPool | undefined;
  /**
   * Service ports without endpoints: their port stays theirs but nothing listens on it, so the
   * kernel refuses connections (TCP reset, ICMP port unreachable) at once, as the kernel modes do.
   */
  private readonly parked = new Map<string, { protocol: 'TCP' | 'UDP'; port: number }>();
  /** SCTP keys of the last update, so each is logged once rather than at every sync. */
  private skipped = new Set<string>();
  private lastFailures = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly opts: UserspaceProxyOptions) {
    const range = opts.portRange;
    if (range && (!Number.isInteger(range.min) || !Number.isInteger(range.max) || range.min < 1 || range.max > 65535 || range.min > range.max)) {
      throw new Error(`invalid proxy port range ${range.min}-${range.max}: want 1 <= min <= max <= 65535`);
    }
    this.pool = range ? new PortPool(range.min, range.max) : ephemeralPool();
    this.ctx = {
      log: opts.log,
      connectRetries: opts.connectRetries,
      removedEndpointGraceMs: opts.removedEndpointGraceMs ?? DEFAULT_REMOVED_ENDPOINT_GRACE_MS,
      udpIdleTimeoutMs: opts.udpIdleTimeoutMs,
      counters: this.counters,
    };
  }

  /**
   * Makes the listeners match `ports` and returns the proxy port of every key that has one.
   * A key that cannot have one (SCTP, no free port in the range, a bind error) is logged, left
   * out of the result, listed by failures(), and tried again on the next update.
   */
  update(ports: ProxyServicePort[]): Promise<Map<string, number>> {
    return this.enqueue(() => this.apply(ports, undefined));
  }

  /**
   * Like update(), for these keys only: `ports` are added or updated, `removed` keys lose their
   * listener, every other key is left as it is. Returns the proxy port of each key of `ports` that has one.
   */
  change(ports: ProxyServicePort[], removed: Iterable<string>): Promise<Map<string, number>> {
    return this.enqueue(() => this.apply(ports, new Set(removed)));
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => {});
    return run;
  }

  /** Why each key without a listener has none (SCTP skips included). */
  failures(): Map<string, string> {
    return new Map(this.lastFailures);
  }

  /** Closes every listener, connection and session. */
  close(): Promise<void> {
    const run = this.queue.then(async () => {
      this.closed = true;
      const handlers = [...[...this.active.values()].map((a) => a.handler), ...this.retired.keys()];
      for (const timer of this.retired.values()) clearTimeout(timer);
      this.active.clear();
      this.retired.clear();
      this.parked.clear();
      await Promise.all(handlers.map((h) => h.destroy()));
    });
    this.queue = run.catch(() => {});
    return run;
  }

  stats(): UserspaceProxyStats {
    let activeConnections = 0;
    let udpSessions = 0;
    let bytesIn = this.counters.bytesIn;
    let bytesOut = this.counters.bytesOut;
    const all = [...[...this.active.values()].map((a) => a.handler), ...this.retired.keys()];
    for (const h of all) {
      const live = h.live();
      if (h instanceof UdpServicePort) udpSessions += live.connections;
      else activeConnections += live.connections;
      bytesIn += live.bytesIn;
      bytesOut += live.bytesOut;
    }
    const { accepted, refused, connectFailures, udpDropped } = this.counters;
    return { listeners: this.active.size, activeConnections, udpSessions, accepted, refused, connectFailures, udpDropped, bytesIn, bytesOut };
  }

  /** `removed` undefined: `ports` is the whole desired set; else only `ports` and `removed` are touched. */
  private async apply(ports: ProxyServicePort[], removed: ReadonlySet<string> | undefined): Promise<Map<string, number>> {
    if (this.closed) throw new Error('userspace proxy is closed');
    // The keys this update decides about; the others keep their listener, failure and skip.
    const scope = removed === undefined ? undefined : new Set([...removed, ...ports.map((p) => p.key)]);
    const failures = scope ? this.lastFailures : new Map<string, string>();
    const skippedBefore = new Set(this.skipped);
    const skipped = scope ? this.skipped : new Set<string>();
    for (const key of scope ?? []) {
      failures.delete(key);
      skipped.delete(key);
    }
    const wanted = new Map<string, ProxyServicePort & { protocol: 'TCP' | 'UDP' }>();
    const duplicate = new Set<string>();
    for (const p of ports) {
      if (wanted.has(p.key) || duplicate.has(p.key)) {
        failures.set(p.key, 'duplicate key in one update; the first one is used');
        continue;
      }
      duplicate.add(p.key);
      if (p.protocol !== 'TCP' && p.protocol !== 'UDP') {
        failures.set(p.key, `protocol ${String(p.protocol)} cannot be proxied in userspace (Node.js has no SCTP sockets)`);
        if (!skippedBefore.has(p.key)) this.opts.log(`userspace proxy: skipping ${p.key}: ${failures.get(p.key)}`);
        skipped.add(p.key);
        continue;
      }
      wanted.set(p.key, { ...p, protocol: p.protocol });
    }
    this.skipped = skipped;

    for (const key of scope ?? [...this.active.keys()]) {
      const a = this.active.get(key);
      if (!a) continue;
      const w = wanted.get(key);
      if (!w || w.protocol !== a.protocol) this.retire(key);
      else if (w.endpoints.length === 0 && !a.handler.setListening) this.park(key, this.retire(key));
    }
    for (const key of scope ?? [...this.parked.keys()]) {
      const p = this.parked.get(key);
      if (!p) continue;
      const w = wanted.get(key);
      if (!w || w.protocol !== p.protocol) this.unpark(key);
    }

    const result = new Map<string, number>();
    for (const [key, w] of wanted) {
      let a = this.active.get(key);
      const parked = this.parked.get(key);
      if (!a && w.endpoints.length === 0) {
        if (parked) result.set(key, parked.port);
        else {
          try {
            this.park(key, { protocol: w.protocol, port: w.fixedPort ?? (await this.reservePort(w.protocol)) });
            result.set(key, this.parked.get(key)!.port);
          } catch (err) {
            failures.set(key, (err as Error).message);
          }
        }
        continue;
      }
      if (!a) {
        try {
          this.unpark(key);
          a = { protocol: w.protocol, handler: await this.open(key, w.protocol, w.fixedPort ?? parked?.port, w.fixedPort !== undefined) };
        } catch (err) {
          const why = (err as Error).message;
          failures.set(key, why);
          this.opts.log(`userspace proxy: no listener for ${key}: ${why}`);
          continue;
        }
        this.active.set(key, a);
      }
      a.handler.setEndpoints(w.endpoints, w.affinityTimeoutSeconds);
      try {
        await a.handler.setListening?.(w.endpoints.length > 0);
      } catch (err) {
        // Its port was taken while it had no endpoints: a new port, and the rules follow.
        this.opts.log(`userspace proxy: ${key}: could not listen again on port ${a.handler.port}: ${(err as Error).message}`);
        this.retire(key);
        try {
          a = { protocol: w.protocol, handler: await this.open(key, w.protocol, w.fixedPort, w.fixedPort !== undefined) };
        } catch (again) {
          failures.set(key, (again as Error).message);
          continue;
        }
        this.active.set(key, a);
        a.handler.setEndpoints(w.endpoints, w.affinityTimeoutSeconds);
      }
      result.set(key, a.handler.port);
    }
    this.lastFailures = failures;
    return result;
  }

  /** Stops listening for `key`; its connections run out the grace period. Returns what it listened on. */
  private retire(key: string): { protocol: 'TCP' | 'UDP'; port: number } {
    const a = this.active.get(key)!;
    this.active.delete(key);
    a.handler.retire();
    this.pool?.release(a.handler.port);
    const timer = setTimeout(() => {
      this.retired.delete(a.handler);
      void a.handler.destroy();
    }, this.ctx.removedEndpointGraceMs);
    timer.unref();
    this.retired.set(a.handler, timer);
    return { protocol: a.protocol, port: a.handler.port };
  }

  private park(key: string, p: { protocol: 'TCP' | 'UDP'; port: number }): void {
    this.pool?.take(p.port);
    this.parked.set(key, p);
  }

  private unpark(key: string): void {
    const p = this.parked.get(key);
    if (!p) return;
    this.parked.delete(key);
    this.pool?.release(p.port);
  }

  /** A port for a service port that will not listen yet: free now, held in the pool from now on. */
  private async reservePort(protocol: 'TCP' | 'UDP'): Promise<number> {
    const handler = await this.open('', protocol);
    const port = handler.port;
    await handler.destroy();
    this.pool?.release(port);
    return port;
  }

  /**
   * Listens for `key`, on `preferred` when it is still free (a parked port), else on a new one;
   * a `fixed` port is that port or a failure.
   */
  private async open(key: string, protocol: 'TCP' | 'UDP', preferred?: number, fixed = false): Promise<ServicePortHandler> {
    const openOn = (port: number): Promise<ServicePortHandler> =>
      protocol === 'TCP' ? TcpServicePort.open(key, this.opts.bindAddress, port, this.ctx) : UdpServicePort.open(key, this.opts.bindAddress, port, this.ctx);
    if (fixed && preferred !== undefined) return openOn(preferred);
    if (preferred !== undefined) {
      try {
        const handler = await openOn(preferred);
        this.pool?.take(preferred);
        return handler;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        this.opts.log(`userspace proxy: ${key}: port ${preferred} was taken meanwhile; choosing another`);
      }
    }
    if (!this.pool) return openOn(0);
    let busy = 0;
    for (const port of this.pool.candidates()) {
      try {
        const handler = await openOn(port);
        this.pool.take(port);
        return handler;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        busy++;
      }
    }
    throw new Error(
      `no free port in ${this.pool.name} ${this.pool.min}-${this.pool.max}: ` +
        `${this.pool.max - this.pool.min + 1 - busy} held by this proxy, ${busy} in use by others`,
    );
  }
}
