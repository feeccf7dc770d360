// The subset of Kubernetes API objects the proxy reads, as they arrive in JSON.
// Every field is optional: input is untrusted and validated in the model.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
}

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
  appProtocol?: string;
}

export interface Service extends KubeObject {
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: string[];
    ipFamilyPolicy?: string;
    ports?: ServicePortSpec[];
    externalIPs?: string[];
    externalName?: string;
    loadBalancerIP?: string;
    loadBalancerSourceRanges?: string[];
    sessionAffinity?: string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
    healthCheckNodePort?: number;
    trafficDistribution?: string;
    selector?: Record<string, string>;
  };
  status?: {
    loadBalancer?: {
      ingress?: Array<{ ip?: string; hostname?: string; ipMode?: string }>;
    };
  };
}

export interface EndpointSlicePort {
  name?: string | null;
  port?: number | null;
  protocol?: string | null;
  appProtocol?: string;
}

export interface EndpointSliceEndpoint {
  addresses?: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  hostname?: string;
  nodeName?: string;
  zone?: string;
  targetRef?: { kind?: string; name?: string; namespace?: string; uid?: string };
  hints?: { forZones?: Array<{ name?: string }>; forNodes?: Array<{ name?: string }> };
}

export interface EndpointSlice extends KubeObject {
  addressType?: string;
  endpoints?: EndpointSliceEndpoint[] | null;
  ports?: EndpointSlicePort[] | null;
}

export interface Node extends KubeObject {
  spec?: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean };
  status?: { addresses?: Array<{ type?: string; address?: string }> };
}

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One change from a source, as the model consumes it (defined here: the model sits below the sources). */
export interface SourceEvent {
  kind: ObjectKind;
  type: EventType;
  /** For DELETED: the last known state of the object. */
  object: KubeObject;
}
