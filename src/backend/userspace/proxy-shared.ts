// What the TCP and UDP halves of the userspace proxy share: settings, counters, and the
// contract the proxy drives each service port through.
import type { Balancer, ProxyEndpoint } from './proxy-balancer.js';

export interface ProxyContext {
  readonly log: (msg: string) => void;
  readonly connectRetries: number | undefined;
  readonly removedEndpointGraceMs: number;
  readonly udpIdleTimeoutMs: number;
  readonly counters: ProxyCounters;
}

/** Running totals; bytes of connections still open are added when stats are read. */
export interface ProxyCounters {
  /** Connections (TCP) and sessions (UDP) taken from clients since start. */
  accepted: number;
  /** Clients turned away: every endpoint tried failed. */
  refused: number;
  connectFailures: number;
  udpDropped: number;
  /** Bytes from clients, and bytes sent back to them. */
  bytesIn: number;
  bytesOut: number;
}

export interface ServicePortHandler {
  readonly key: string;
  readonly port: number;
  readonly balancer: Balancer;
  setEndpoints(endpoints: readonly ProxyEndpoint[], affinityTimeoutSeconds: number | undefined): void;
  /** Stops taking new clients and frees the port; the proxy destroys it after the grace period. */
  retire(): void;
  /** TCP: stops or resumes listening on the same port, connections kept (see TcpServicePort). */
  setListening?(on: boolean): Promise<void>;
  /** Closes the listener and every connection now; resolves once their sockets are closed. */
  destroy(): Promise<void>;
  /** Open connections (TCP) or sessions (UDP), and their byte counts so far. */
  live(): { connections: number; bytesIn: number; bytesOut: number };
}

/**
 * Dial timeout per attempt, doubling from 250 ms up to 2 s: the schedule upstream's userspace
 * proxier used, so a slow endpoint gets more time on later attempts.
 */
export function dialTimeoutMs(attempt: number): number {
  return Math.min(250 * 2 ** attempt, 2000);
}

/** Endpoints one new connection may try: the configured bound, else every endpoint up to 3. */
export function attemptLimit(ctx: ProxyContext, endpoints: number): number {
  return Math.max(1, Math.min(endpoints, ctx.connectRetries ?? 3));
}
