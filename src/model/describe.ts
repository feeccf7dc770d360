// Human-readable rendering of a snapshot: what the proxy would program, per service port.
import type { Endpoint, ServicePortState, Snapshot } from './types.js';

function endpointText(e: Endpoint): string {
  const host = e.ip.includes(':') ? `[${e.ip}]` : e.ip;
  const flags: string[] = [];
  if (!e.ready) flags.push(e.terminating ? 'terminating' : 'not-ready');
  if (e.isLocal) flags.push('local');
  return `${host}:${e.port}${flags.length ? `(${flags.join(',')})` : ''}`;
}

function list(eps: Endpoint[]): string {
  return eps.length ? eps.map(endpointText).join(' ') : '(none)';
}

export function describeServicePort(s: ServicePortState): string {
  const i = s.info;
  const vip = i.clusterIP.includes(':') ? `[${i.clusterIP}]` : i.clusterIP;
  const parts = [`${i.name} ${i.protocol} ${vip}:${i.port}`];
  if (i.nodePort) parts.push(`nodePort=${i.nodePort}`);
  if (i.externalIPs.length) parts.push(`externalIPs=${i.externalIPs.join(',')}`);
  if (i.loadBalancerIPs.length) parts.push(`loadBalancerIPs=${i.loadBalancerIPs.join(',')}`);
  if (i.loadBalancerSourceRanges.length) parts.push(`sourceRanges=${i.loadBalancerSourceRanges.join(',')}`);
  if (i.sessionAffinity.clientIPTimeoutSeconds !== undefined) {
    parts.push(`affinity=ClientIP/${i.sessionAffinity.clientIPTimeoutSeconds}s`);
  }
  if (i.externalPolicyLocal) parts.push('externalTrafficPolicy=Local');
  if (i.internalPolicyLocal) parts.push('internalTrafficPolicy=Local');
  const lines = [parts.join(' ')];
  lines.push(`    cluster endpoints: ${list(s.clusterEndpoints)}`);
  if (i.externalPolicyLocal || i.internalPolicyLocal) lines.push(`    local endpoints:   ${list(s.localEndpoints)}`);
  return lines.join('\n');
}

function head(snap: Snapshot): string {
  return `snapshot ${snap.family} generation ${snap.generation}: ${snap.services.size} service ports` +
    (snap.changes.full ? ' (full)' : `, ${snap.changes.changed.size} changed, ${snap.changes.deleted.size} deleted`);
}

/** Every service port of the snapshot. */
export function describeSnapshot(snap: Snapshot): string {
  const keys = [...snap.services.keys()].sort();
  return [head(snap), ...keys.map((k) => '  ' + describeServicePort(snap.services.get(k)!))].join('\n');
}

/** Service port keys changed or deleted by snapshots that were never described (a failed sync). */
export interface UndescribedChanges {
  changed: ReadonlySet<string>;
  deleted: ReadonlySet<string>;
}

/**
 * What this snapshot changed (with `carried`, also what earlier undescribed snapshots changed):
 * every service port when it is full, otherwise the changed ones and a `deleted <name> <protocol>`
 * line per deleted one, so its cost follows the change, not the cluster.
 */
export function describeChanges(snap: Snapshot, carried?: UndescribedChanges): string {
  if (snap.changes.full) return describeSnapshot(snap);
  const changed = new Set([...(carried?.changed ?? []), ...snap.changes.changed]);
  const deleted = new Set([...(carried?.deleted ?? []), ...snap.changes.deleted]);
  const lines = [head(snap)];
  for (const k of [...changed].sort()) {
    const s = snap.services.get(k);
    if (s !== undefined) lines.push('  ' + describeServicePort(s));
  }
  for (const k of [...deleted].sort()) {
    if (snap.services.has(k)) continue;
    const slash = k.lastIndexOf('/');
    lines.push(`  deleted ${k.slice(0, slash)} ${k.slice(slash + 1)}`);
  }
  return lines.join('\n');
}
