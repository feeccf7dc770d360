// Endpoint choice for one service port of the userspace proxy: round robin, with ClientIP
// session affinity when the Service asks for it. Time is passed in so the choice is testable.

export interface ProxyEndpoint {
  ip: string;
  port: number;
}

/** "ip:port", with brackets around an IPv6 address. */
export function endpointId(ep: ProxyEndpoint): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

interface Sticky {
  id: string;
  lastUsed: number;
}

export class Balancer {
  /** As given (de-duplicated): a listener keeps the array its plan made, not a copy. */
  private endpoints: readonly ProxyEndpoint[] = [];
  /**
   * Endpoints by id, made when an id is first looked up (a connection, an affinity): 10,000
   * idle service ports held 10,000 Maps and 100,000 id strings, ~10 MiB, for nothing.
   */
  private byId: Map<string, ProxyEndpoint> | undefined;
  private next = 0;
  private affinityMs = 0;
  /** Made when affinity is first used: most service ports never use it. */
  private sticky: Map<string, Sticky> | undefined;

  /** Replaces the endpoint set; returns the ids that were present before and are gone now. */
  setEndpoints(endpoints: readonly ProxyEndpoint[], affinityTimeoutSeconds: number | undefined): string[] {
    const wanted = new Map<string, ProxyEndpoint>();
    for (const ep of endpoints) {
      const id = endpointId(ep);
      if (!wanted.has(id)) wanted.set(id, ep);
    }
    const gone = this.endpoints.map(endpointId).filter((id) => !wanted.has(id));
    this.endpoints = wanted.size === endpoints.length ? endpoints : [...wanted.values()];
    this.byId = this.byId && wanted;
    if (this.next >= this.endpoints.length) this.next = 0;
    const affinityMs = affinityTimeoutSeconds && affinityTimeoutSeconds > 0 ? affinityTimeoutSeconds * 1000 : 0;
    if (affinityMs !== this.affinityMs) this.sticky?.clear();
    this.affinityMs = affinityMs;
    for (const [client, s] of this.sticky ?? []) if (!wanted.has(s.id)) this.sticky!.delete(client);
    return gone;
  }

  get size(): number {
    return this.endpoints.length;
  }

  has(id: string): boolean {
    return this.index().has(id);
  }

  private index(): Map<string, ProxyEndpoint> {
    return (this.byId ??= new Map(this.endpoints.map((ep) => [endpointId(ep), ep])));
  }

  /**
   * The endpoint for a new connection from clientIp. `exclude` holds endpoints that already
   * failed for this connection: they are skipped, and the client's affinity (if it pointed at
   * one of them) moves to the endpoint chosen now.
   */
  pick(clientIp: string, now: number, exclude?: ReadonlySet<string>): ProxyEndpoint | undefined {
    const n = this.endpoints.length;
    if (n === 0) return undefined;
    if (this.affinityMs > 0) {
      const s = this.sticky?.get(clientIp);
      if (s && now - s.lastUsed <= this.affinityMs && !exclude?.has(s.id)) {
        const ep = this.index().get(s.id);
        if (ep) {
          s.lastUsed = now;
          return ep;
        }
      }
    }
    for (let i = 0; i < n; i++) {
      const ep = this.endpoints[this.next]!;
      this.next = (this.next + 1) % n;
      const id = endpointId(ep);
      if (exclude?.has(id)) continue;
      if (this.affinityMs > 0) (this.sticky ??= new Map()).set(clientIp, { id, lastUsed: now });
      return ep;
    }
    return undefined;
  }

  /** Forgets affinities idle past their timeout, so clients that went away cost no memory. */
  sweep(now: number): void {
    for (const [client, s] of this.sticky ?? []) if (now - s.lastUsed > this.affinityMs) this.sticky!.delete(client);
  }
}
