// Endpoint selection for one service port: which endpoints serve Cluster-policy traffic
// and which serve Local-policy traffic, following upstream kube-proxy's
// CategorizeEndpoints (topology hints, terminating fallback, traffic policies).
import type { Endpoint, ServicePortInfo } from './types.js';
import { endpointString } from './endpoints.js';

export type TopologyMode = '' | 'PreferSameNode' | 'PreferSameZone';

type PolicyFields = Pick<
  ServicePortInfo,
  'nodePort' | 'externalIPs' | 'loadBalancerIPs' | 'externalPolicyLocal' | 'internalPolicyLocal'
>;

/** Reachable through something other than the cluster IP (NodePort, external or LB IP). */
export function externallyAccessible(info: PolicyFields): boolean {
  return info.nodePort !== 0 || info.externalIPs.length > 0 || info.loadBalancerIPs.length > 0;
}

/**
 * True when some traffic to this port uses Cluster policy: internal traffic with
 * internalTrafficPolicy Cluster, or any external traffic (even with eTP Local, traffic
 * from inside the cluster to an external address is short-circuited to all endpoints).
 */
export function usesClusterEndpoints(info: PolicyFields): boolean {
  return !info.internalPolicyLocal || externallyAccessible(info);
}

/** True when some traffic to this port uses Local policy. */
export function usesLocalEndpoints(info: PolicyFields): boolean {
  return info.internalPolicyLocal || (info.externalPolicyLocal && externallyAccessible(info));
}

function isServingTerminating(ep: Endpoint): boolean {
  return ep.serving && ep.terminating;
}

/**
 * Which hints to honour. Node hints win when every ready endpoint has one and at least
 * one names this node; otherwise zone hints under the same rule; otherwise none.
 */
export function topologyModeFromHints(endpoints: readonly Endpoint[], nodeName: string, zone: string): TopologyMode {
  let hasReady = false;
  let allNodeHints = true;
  let forNode = false;
  let allZoneHints = true;
  let forZone = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    hasReady = true;
    if (ep.hintsForNodes.length === 0) allNodeHints = false;
    else if (ep.hintsForNodes.includes(nodeName)) forNode = true;
    if (ep.hintsForZones.length === 0) allZoneHints = false;
    else if (ep.hintsForZones.includes(zone)) forZone = true;
  }
  if (!hasReady) return '';
  if (allNodeHints && forNode) return 'PreferSameNode';
  if (allZoneHints && forZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(ep: Endpoint, mode: TopologyMode, nodeName: string, zone: string): boolean {
  if (mode === 'PreferSameNode') return ep.hintsForNodes.includes(nodeName);
  if (mode === 'PreferSameZone') return ep.hintsForZones.includes(zone);
  return true;
}

export interface CategorizedEndpoints {
  /** Empty when the port never uses Cluster policy. */
  clusterEndpoints: Endpoint[];
  /** Empty when the port never uses Local policy. */
  localEndpoints: Endpoint[];
  /** Union of the two, sorted by `ip:port`. */
  allReachableEndpoints: Endpoint[];
  /** Usable endpoints exist somewhere in the cluster (possibly none from this node). */
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
}

/**
 * The endpoints passing `test`: the given array itself when all do (the usual case, every
 * endpoint ready), so a snapshot holds one array per service port, not one per category.
 * Snapshot arrays are never modified, so sharing one is safe.
 */
function kept(endpoints: readonly Endpoint[], test: (ep: Endpoint) => boolean): Endpoint[] {
  return endpoints.every(test) ? (endpoints as Endpoint[]) : endpoints.filter(test);
}

export function categorizeEndpoints(
  endpoints: readonly Endpoint[],
  info: PolicyFields,
  nodeName: string,
  zone: string,
): CategorizedEndpoints {
  const result: CategorizedEndpoints = {
    clusterEndpoints: [],
    localEndpoints: [],
    allReachableEndpoints: [],
    hasAnyEndpoints: false,
    topologyMode: '',
  };
  if (endpoints.length === 0) return result;
  const useCluster = usesClusterEndpoints(info);
  const useLocal = usesLocalEndpoints(info);

  if (useCluster) {
    const mode = topologyModeFromHints(endpoints, nodeName, zone);
    result.topologyMode = mode;
    let cluster = kept(endpoints, (ep) => ep.ready && availableForTopology(ep, mode, nodeName, zone));
    // No ready endpoint anywhere (topology is ignored in that case already): fall back
    // to endpoints that are still serving while terminating.
    if (cluster.length === 0) cluster = endpoints.filter(isServingTerminating);
    result.clusterEndpoints = cluster;
    if (cluster.length > 0) result.hasAnyEndpoints = true;
  }
  if (!useLocal) {
    result.allReachableEndpoints = result.clusterEndpoints;
    return result;
  }

  let localReady = false;
  let localServingTerminating = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      result.hasAnyEndpoints = true;
      if (ep.isLocal) localReady = true;
    } else if (isServingTerminating(ep)) {
      result.hasAnyEndpoints = true;
      if (ep.isLocal) localServingTerminating = true;
    }
  }
  let usedTerminating = false;
  if (localReady) {
    result.localEndpoints = kept(endpoints, (ep) => ep.isLocal && ep.ready);
  } else if (localServingTerminating) {
    usedTerminating = true;
    result.localEndpoints = endpoints.filter((ep) => ep.isLocal && isServingTerminating(ep));
  }
  if (!useCluster) {
    result.allReachableEndpoints = result.localEndpoints;
    return result;
  }
  if (result.topologyMode === '' && !usedTerminating) {
    // Cluster endpoints are then every ready endpoint: a superset of the local ones.
    result.allReachableEndpoints = result.clusterEndpoints;
    return result;
  }
  const union = new Map<string, Endpoint>();
  for (const ep of result.clusterEndpoints) union.set(endpointString(ep), ep);
  for (const ep of result.localEndpoints) union.set(endpointString(ep), ep);
  result.allReachableEndpoints = [...union.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map((e) => e[1]);
  return result;
}
