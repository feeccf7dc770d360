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
        const externalIPs =
          p.externalIPs.length === 0
            ? p.externalIPs
            : p.externalIPs.filter((ip) => {
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
      if (s.ports[family].every((p) => p.externalIPs.length === 0)) continue;
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

function everyKeyIn(services: ReadonlyMap<string, unknown>, keys: ReadonlySet<string>): boolean {
  for (const key of services.keys()) if (!keys.has(key)) return false;
  return true;
}

/** Everything a Service may contend for: Services sharing none of these cannot affect each other. */
function claimKeys(s: ParsedService): string[] {
  const keys = new Set<string>();
  for (const family of ['IPv4', 'IPv6'] as const) {
    for (const p of s.ports[family]) {
      keys.add(`vip ${p.clusterIP}|${p.port}|${p.protocol}`);
      if (p.nodePort !== 0) keys.add(`nodeport ${p.nodePort}|${p.protocol}`);
      // One key for a ClusterIP and an external IP links a Service to the one it could hijack.
      keys.add(`ip ${p.clusterIP}`);
      for (const ip of p.externalIPs) keys.add(`ip ${ip}`);
    }
  }
  return [...keys];
}

/**
 * `resolveConflicts` kept up to date one change at a time: a change re-resolves only the
 * Services linked to the changed ones through shared claims (directly or through others), so
 * its cost follows the change, not the number of Services. The outcome equals a resolution of
 * all Services from scratch, since unlinked Services never decide each other's claims.
 */
export class ConflictResolver {
  /** `services` with conflicts resolved: what is programmed. */
  readonly effective = new Map<string, ParsedService>();
  /** Who holds each claim: one Service key, or a set of them when several contend (rare). */
  private readonly holders = new Map<string, string | Set<string>>();
  private readonly claimsOf = new Map<string, string[]>();
  private readonly conflictsOf = new Map<string, Conflict[]>();

  /**
   * Re-resolves after `changed` Services were added, updated or deleted in `services`.
   * Returns the effective form, before this update, of every Service re-resolved (the others
   * are unchanged), and the conflicts those Services have now and had before.
   */
  update(
    services: ReadonlyMap<string, ParsedService>,
    changed: Iterable<string>,
  ): { previous: Map<string, ParsedService | undefined>; conflicts: Conflict[]; before: Conflict[] } {
    const linked = new Set<string>();
    const queue: string[] = [];
    const visit = (key: string): void => {
      if (linked.has(key)) return;
      linked.add(key);
      queue.push(key);
    };
    for (const key of changed) {
      // Whoever shared the old claims may win them now.
      for (const claim of this.claimsOf.get(key) ?? []) {
        this.release(claim, key);
        for (const other of this.holdersOf(claim)) visit(other);
      }
      this.claimsOf.delete(key);
      const s = services.get(key);
      if (s !== undefined) {
        const claims = claimKeys(s);
        this.claimsOf.set(key, claims);
        for (const claim of claims) this.hold(claim, key);
      }
      visit(key);
    }
    // Every claim is held by a Service: when all of them changed (the first snapshot), all are
    // linked already and the walk over their claims would find no other.
    if (linked.size < services.size || !everyKeyIn(services, linked)) {
      while (queue.length > 0) {
        for (const claim of this.claimsOf.get(queue.pop()!) ?? []) for (const other of this.holdersOf(claim)) visit(other);
      }
    }
    const members: ParsedService[] = [];
    const before: Conflict[] = [];
    const previous = new Map<string, ParsedService | undefined>();
    for (const key of linked) {
      const s = services.get(key);
      if (s !== undefined) members.push(s);
      previous.set(key, this.effective.get(key));
      before.push(...(this.conflictsOf.get(key) ?? []));
      this.conflictsOf.delete(key);
      this.effective.delete(key);
    }
    const { effective, conflicts } = resolveConflicts(members);
    for (const [key, s] of effective) this.effective.set(key, s);
    for (const c of conflicts) {
      const list = this.conflictsOf.get(c.service);
      if (list === undefined) this.conflictsOf.set(c.service, [c]);
      else list.push(c);
    }
    return { previous, conflicts, before };
  }

  private hold(claim: string, key: string): void {
    const h = this.holders.get(claim);
    if (h === undefined || h === key) this.holders.set(claim, key);
    else if (typeof h === 'string') this.holders.set(claim, new Set([h, key]));
    else h.add(key);
  }

  private release(claim: string, key: string): void {
    const h = this.holders.get(claim);
    if (h === undefined) return;
    if (typeof h === 'string') {
      if (h === key) this.holders.delete(claim);
      return;
    }
    h.delete(key);
    if (h.size === 1) this.holders.set(claim, h.values().next().value!);
    else if (h.size === 0) this.holders.delete(claim);
  }

  private holdersOf(claim: string): Iterable<string> {
    const h = this.holders.get(claim);
    return h === undefined ? [] : typeof h === 'string' ? [h] : h;
  }

  /** Every standing conflict. */
  all(): Conflict[] {
    return [...this.conflictsOf.values()].flat();
  }
}
