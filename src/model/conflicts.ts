// Claims that only make sense across Services: two Services on the same ClusterIP:port or
// NodePort would fight over one kernel entry, and an external IP equal to another Service's
// ClusterIP would hijack that Service. The API server prevents both; manifests, restores
// and buggy controllers do not. The oldest claim wins (creationTimestamp, then
// namespace/name), so the outcome never depends on the order objects arrived in.
import type { ParsedService } from './service.js';
import type { IPFamily, ServicePortInfo } from './types.js';

export interface Conflict {
  /** The Service that loses, `namespace/name`. */
  service: string;
  reason: 'duplicate-cluster-ip-port' | 'duplicate-node-port' | 'external-ip-is-cluster-ip';
  detail: string;
}

function olderFirst(a: ParsedService, b: ParsedService): number {
  if (a.createdMs !== b.createdMs) return a.createdMs < b.createdMs ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/**
 * The Services as they can be programmed: losing ports removed, external IPs that are
 * another Service's ClusterIP removed. A Service with nothing removed is returned as is.
 */
export function resolveConflicts(services: Iterable<ParsedService>): { effective: Map<string, ParsedService>; conflicts: Conflict[] } {
  const ordered = [...services].sort(olderFirst);
  const clusterIPOwner = new Map<string, string>();
  for (const s of ordered) {
    for (const family of ['IPv4', 'IPv6'] as const) {
      for (const p of s.ports[family]) if (!clusterIPOwner.has(p.clusterIP)) clusterIPOwner.set(p.clusterIP, s.key);
    }
  }
  const effective = new Map<string, ParsedService>();
  const conflicts: Conflict[] = [];
  const claims: Record<IPFamily, Map<string, string>> = { IPv4: new Map(), IPv6: new Map() };
  for (const s of ordered) {
    let changed = false;
    const ports: Record<IPFamily, ServicePortInfo[]> = { IPv4: [], IPv6: [] };
    for (const family of ['IPv4', 'IPv6'] as const) {
      const taken = claims[family];
      for (const p of s.ports[family]) {
        const mine = `${s.key} port ${p.portName || p.port}`;
        const vipKey = `vip ${p.clusterIP}|${p.port}|${p.protocol}`;
        const nodePortKey = `nodeport ${p.nodePort}|${p.protocol}`;
        const vipOwner = taken.get(vipKey);
        const nodePortOwner = p.nodePort !== 0 ? taken.get(nodePortKey) : undefined;
        if (vipOwner !== undefined || nodePortOwner !== undefined) {
          changed = true;
          // Families share the node port and usually the outcome: report each once.
          if (family === 'IPv4' || s.ports.IPv4.length === 0 || vipOwner !== undefined) {
            conflicts.push(
              vipOwner !== undefined
                ? { service: s.key, reason: 'duplicate-cluster-ip-port', detail: `${p.clusterIP}:${p.port}/${p.protocol} already belongs to ${vipOwner}` }
                : { service: s.key, reason: 'duplicate-node-port', detail: `node port ${p.nodePort}/${p.protocol} already belongs to ${nodePortOwner}` },
            );
          }
          continue;
        }
        taken.set(vipKey, mine);
        if (p.nodePort !== 0) taken.set(nodePortKey, mine);
        const externalIPs = p.externalIPs.filter((ip) => {
          const owner = clusterIPOwner.get(ip);
          return owner === undefined || owner === s.key;
        });
        if (externalIPs.length !== p.externalIPs.length) {
          changed = true;
          ports[family].push({ ...p, externalIPs });
        } else ports[family].push(p);
      }
    }
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ips = new Set(s.ports[family].flatMap((p) => p.externalIPs));
      for (const ip of ips) {
        const owner = clusterIPOwner.get(ip);
        if (owner !== undefined && owner !== s.key) {
          conflicts.push({ service: s.key, reason: 'external-ip-is-cluster-ip', detail: `external IP ${ip} is the ClusterIP of ${owner}; ignored` });
        }
      }
    }
    effective.set(s.key, changed ? { ...s, ports } : s);
  }
  return { effective, conflicts };
}
