// Pure: what the userspace mode needs from a snapshot. Each service port gets one listener per
// traffic policy it uses (a proxy that sees the client can honour Local policies by picking only
// local endpoints), and the portals (addresses and ports) whose traffic is redirected to them.
import type { IPFamily, ServicePortState, Snapshot } from '../../model/types.js';
import { usableAs, validated } from '../iptables/render.js';

export type ListenerProtocol = 'TCP' | 'UDP' | 'SCTP';

/** One socket of the in-process proxy and the endpoints it balances over. */
export interface ListenerSpec {
  /** `ns/name:port/PROTO`, with `/local` for the listener of a Local traffic policy. */
  key: string;
  /** The snapshot's key of the service port it answers for. */
  service: string;
  protocol: ListenerProtocol;
  endpoints: ReadonlyArray<{ ip: string; port: number }>;
  /** ClientIP affinity timeout in seconds; absent without affinity. */
  affinityTimeoutSeconds?: number;
}

/** Traffic to these addresses (or to any local address, for NodePorts) goes to `listener`. */
export interface Portal {
  /** The service port's name, for rule comments. */
  name: string;
  listener: string;
  /** Lower-case protocol, as iptables writes it. */
  proto: string;
  /** Destination addresses and their port; absent `ips` means the node's NodePort addresses. */
  ips?: string[];
  port: number;
  /** Only these source CIDRs are redirected (loadBalancerSourceRanges); absent: any source. */
  sources?: string[];
  kind: 'service' | 'nodePort';
  /**
   * externalTrafficPolicy Local: the node itself and its pods are not outside clients; as in the
   * kernel modes their traffic goes to this (cluster-policy) listener instead.
   */
  insideListener?: string;
}

export interface UserspacePlan {
  family: IPFamily;
  listeners: ListenerSpec[];
  portals: Portal[];
}

function listenerFor(s: ServicePortState, service: string, local: boolean, family: IPFamily, suffix = local ? '/local' : ''): ListenerSpec {
  // The model's own endpoint objects where their address is already canonical: the listener's
  // balancer keeps this array, and copies of 100,000 endpoints cost ~5 MiB.
  const endpoints = usableAs(local ? s.localEndpoints : s.clusterEndpoints, family, (e, ip) => (ip === e.ip ? e : { ip, port: e.port }));
  const spec: ListenerSpec = { key: service + suffix, service, protocol: s.info.protocol, endpoints };
  const timeout = s.info.sessionAffinity.clientIPTimeoutSeconds;
  if (timeout !== undefined) spec.affinityTimeoutSeconds = timeout;
  return spec;
}

/** What one service port needs: its listeners and the portals redirected to them. */
export interface ServicePortPlan {
  listeners: ListenerSpec[];
  portals: Portal[];
}

/**
 * Listeners and portals of one service port; undefined when it cannot be rendered safely (as in
 * the iptables mode, a port with invalid data is skipped, never half-programmed).
 */
export function planServicePort(s: ServicePortState, key: string, family: IPFamily): ServicePortPlan | undefined {
  const c = validated(s, { family });
  if (!c) return undefined;
  const listeners = new Map<string, ListenerSpec>();
  const portals: Portal[] = [];
  const { info, proto, clusterIP, externalIPs, lbIPs } = c;
  const use = (local: boolean): string => {
    const spec = listenerFor(s, key, local, family);
    listeners.set(spec.key, spec);
    return spec.key;
  };
  const base = { name: info.name, proto, port: info.port };
  if (clusterIP) portals.push({ ...base, listener: use(info.internalPolicyLocal), ips: [clusterIP], kind: 'service' });
  const externallyAccessible = info.nodePort > 0 || externalIPs.length > 0 || lbIPs.length > 0;
  if (externallyAccessible) {
    const external = use(info.externalPolicyLocal);
    const inside = info.externalPolicyLocal ? { insideListener: use(false) } : {};
    if (externalIPs.length > 0) portals.push({ ...base, listener: external, ips: externalIPs, kind: 'service', ...inside });
    // Source ranges: only the listed clients are redirected; with none usable, nobody is.
    if (lbIPs.length > 0 && !(c.firewalled && c.ranges.length === 0)) {
      portals.push({ ...base, listener: external, ips: lbIPs, kind: 'service', ...(c.firewalled ? { sources: c.ranges } : {}), ...inside });
    }
    if (info.nodePort > 0) portals.push({ ...base, listener: external, port: info.nodePort, kind: 'nodePort', ...inside });
  }
  // Kept until the next change: copied to its exact size (pushing left ~128 bytes spare).
  return { listeners: [...listeners.values()], portals: portals.slice() };
}

/** Listeners and portals for every service port that can be rendered safely. */
export function planUserspace(snapshot: Snapshot): UserspacePlan {
  const family = snapshot.family;
  const listeners: ListenerSpec[] = [];
  const portals: Portal[] = [];
  for (const key of [...snapshot.services.keys()].sort()) {
    const p = planServicePort(snapshot.services.get(key)!, key, family);
    if (!p) continue;
    listeners.push(...p.listeners);
    portals.push(...p.portals);
  }
  return { family, listeners, portals };
}

/**
 * nftables mode with `localhost` in nodePortAddresses: a listener on each NodePort of the
 * loopback address, balancing over the cluster endpoints, as the node's own traffic to a NodePort
 * is treated in the kernel modes (whatever the external traffic policy).
 */
export function planLocalhostNodePorts(snapshot: Snapshot): Array<ListenerSpec & { fixedPort: number }> {
  const family = snapshot.family;
  const out: Array<ListenerSpec & { fixedPort: number }> = [];
  for (const key of [...snapshot.services.keys()].sort()) {
    const s = snapshot.services.get(key)!;
    const c = validated(s, { family });
    if (!c || c.info.nodePort === 0) continue;
    out.push({ ...listenerFor(s, key, false, family, '/localhost'), fixedPort: c.info.nodePort });
  }
  return out;
}
