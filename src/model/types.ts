// The model's output: what a backend programs. Produced by src/model, consumed by
// backends, explain, health checks and metrics. All Kubernetes semantics are resolved
// here; a backend never looks at raw API objects.

import type { IPFamily } from '../net/ip.js';

export type { IPFamily };
export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface SessionAffinity {
  /** ClientIP affinity timeout in seconds; absent means no affinity. */
  clientIPTimeoutSeconds?: number;
}

/** One port of one Service, restricted to one IP family. */
export interface ServicePortInfo {
  /** Upstream's ServicePortName string: `ns/name:port` (`:port` omitted when the port is unnamed). */
  name: string;
  namespace: string;
  serviceName: string;
  /** The Service port's name, '' when unnamed. */
  portName: string;
  protocol: Protocol;
  /** The ClusterIP of this family ('' when the service has none in this family). */
  clusterIP: string;
  port: number;
  /** 0 when the port has no NodePort. */
  nodePort: number;
  externalIPs: string[];
  /** LoadBalancer ingress IPs of this family, ipMode Proxy excluded. */
  loadBalancerIPs: string[];
  /** CIDRs of this family; empty means no restriction (unless sourceRangesDenyAll). */
  loadBalancerSourceRanges: string[];
  /**
   * Source ranges were given but none is usable in this family (invalid, or only the other
   * family): external traffic to the load-balancer IPs is dropped (fails closed).
   */
  sourceRangesDenyAll?: boolean;
  sessionAffinity: SessionAffinity;
  /** externalTrafficPolicy Local (only meaningful with NodePort / external IPs / LB IPs). */
  externalPolicyLocal: boolean;
  /** internalTrafficPolicy Local. */
  internalPolicyLocal: boolean;
  /** 0 when none. */
  healthCheckNodePort: number;
  trafficDistribution: string;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
}

export interface Endpoint {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** On this node (nodeName equals the proxy's node name). */
  isLocal: boolean;
  nodeName: string;
  zone: string;
  hintsForZones: string[];
  hintsForNodes: string[];
}

/** A service port with its endpoints and the endpoint selection already made. */
export interface ServicePortState {
  info: ServicePortInfo;
  /** Every endpoint of this family matching the port (before selection). */
  endpoints: Endpoint[];
  /** Endpoints used for traffic subject to Cluster policy (topology and terminating fallback applied). */
  clusterEndpoints: Endpoint[];
  /** Endpoints used for traffic subject to Local policy. */
  localEndpoints: Endpoint[];
  /** Union of cluster and local endpoints that can receive traffic (for conntrack cleanup). */
  allReachableEndpoints: Endpoint[];
  /** True when there are any endpoints at all (even unusable), as upstream's hasAnyEndpoints. */
  hasAnyEndpoints: boolean;
  /** Ready local endpoints, for the health-check node port. */
  localReadyCount: number;
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  /** topology.kubernetes.io/zone label, '' when absent. */
  zone: string;
  podCIDRs: string[];
  /** InternalIP / ExternalIP addresses from the Node status. */
  addresses: string[];
}

/** What changed since the previous snapshot handed to the same consumer. */
export interface ChangeSet {
  /** True when the consumer must treat everything as changed (first sync, resync). */
  full: boolean;
  /** ServicePortInfo.name + '/' + protocol keys of service ports that were added or changed. */
  changed: Set<string>;
  /** Keys of service ports that no longer exist. */
  deleted: Set<string>;
  /** UDP/SCTP endpoints no longer reachable through a service IP: conntrack entries to flush. */
  staleEndpoints: Array<{
    serviceIP: string;
    protocol: Protocol;
    endpointIP: string;
    /** The endpoint's port. */
    port: number;
    /** The service port clients used (set by the model; optional for hand-built change sets). */
    servicePort?: number;
  }>;
  /** UDP service IPs that went from no endpoints to some: conntrack entries to flush. */
  staleServiceIPs: Array<{ ip: string; protocol: Protocol }>;
}

export interface Snapshot {
  family: IPFamily;
  /** Increases by one on each snapshot. */
  generation: number;
  node: NodeInfo;
  /** Keyed by servicePortKey(info). */
  services: ReadonlyMap<string, ServicePortState>;
  changes: ChangeSet;
}

/** The key used in Snapshot.services and ChangeSet: `ns/name:port/PROTOCOL`. */
export function servicePortKey(info: Pick<ServicePortInfo, 'name' | 'protocol'>): string {
  return `${info.name}/${info.protocol}`;
}
