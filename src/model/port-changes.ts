// Compares two states of one service port: whether it changed at all, and which conntrack
// entries the change leaves stale (the `staleEndpoints` and `staleServiceIPs` of a ChangeSet).
import { endpointString, sliceEndpointEqual } from './endpoints.js';
import { servicePortInfoEqual } from './service.js';
import type { ChangeSet, Endpoint, Protocol, ServicePortState } from './types.js';

type StaleEndpoint = ChangeSet['staleEndpoints'][number];

function serviceIPs(state: ServicePortState): string[] {
  const { clusterIP, externalIPs, loadBalancerIPs } = state.info;
  const ips = clusterIP === '' ? [] : [clusterIP];
  for (const ip of externalIPs) if (!ips.includes(ip)) ips.push(ip);
  for (const ip of loadBalancerIPs) if (!ips.includes(ip)) ips.push(ip);
  return ips;
}

/** Every (service IP, endpoint) pair that carries traffic for a UDP/SCTP port. */
function reachablePairs(state: ServicePortState | undefined): Map<string, StaleEndpoint> {
  const out = new Map<string, StaleEndpoint>();
  if (state === undefined || state.info.protocol === 'TCP') return out;
  const { protocol, port } = state.info;
  for (const serviceIP of serviceIPs(state)) {
    for (const ep of state.allReachableEndpoints) {
      out.set(`${serviceIP}|${port}|${endpointString(ep)}`, {
        serviceIP,
        protocol,
        endpointIP: ep.ip,
        port: ep.port,
        servicePort: port,
      });
    }
  }
  return out;
}

function endpointEqual(a: Endpoint, b: Endpoint): boolean {
  return a.port === b.port && a.isLocal === b.isLocal && sliceEndpointEqual(a, b);
}

function sameEndpointList(a: readonly Endpoint[], b: readonly Endpoint[], deep: boolean): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (deep ? !endpointEqual(x, y) : x.ip !== y.ip || x.port !== y.port) return false;
  }
  return true;
}

export function servicePortStateEqual(a: ServicePortState, b: ServicePortState): boolean {
  return (
    a.hasAnyEndpoints === b.hasAnyEndpoints &&
    a.localReadyCount === b.localReadyCount &&
    servicePortInfoEqual(a.info, b.info) &&
    sameEndpointList(a.endpoints, b.endpoints, true) &&
    sameEndpointList(a.clusterEndpoints, b.clusterEndpoints, false) &&
    sameEndpointList(a.localEndpoints, b.localEndpoints, false) &&
    sameEndpointList(a.allReachableEndpoints, b.allReachableEndpoints, false)
  );
}

/** Adds to `changes` the conntrack entries left stale when a port goes from `old` to `state`; `staleIPsSeen` lists each service IP once per snapshot. */
export function collectStale(
  old: ServicePortState | undefined,
  state: ServicePortState | undefined,
  changes: ChangeSet,
  staleIPsSeen: Set<string>,
): void {
  const before = reachablePairs(old);
  if (before.size > 0) {
    const after = reachablePairs(state);
    for (const [k, v] of before) if (!after.has(k)) changes.staleEndpoints.push(v);
  }
  // A UDP VIP without endpoints may have conntrack entries that black-hole new
  // flows; once endpoints appear those entries must go.
  if (state !== undefined && state.info.protocol === 'UDP' && state.allReachableEndpoints.length > 0) {
    if (old === undefined || old.allReachableEndpoints.length === 0) {
      for (const ip of serviceIPs(state)) {
        const k = `${ip}|${state.info.protocol}`;
        if (staleIPsSeen.has(k)) continue;
        staleIPsSeen.add(k);
        changes.staleServiceIPs.push({ ip, protocol: state.info.protocol as Protocol });
      }
    }
  }
}
