// Hand-built snapshots and backend configurations for backend tests and benchmarks, shaped
// like the model's output (endpoint selection already made).
import type { BackendConfig } from '../../src/backend/types.js';
import {
  servicePortKey,
  type ChangeSet,
  type Endpoint,
  type IPFamily,
  type Protocol,
  type ServicePortInfo,
  type ServicePortState,
  type Snapshot,
} from '../../src/model/types.js';

export const NODE = 'node-1';

export function backendConfig(over: Partial<BackendConfig> = {}): BackendConfig {
  const v6 = over.family === 'IPv6';
  return {
    family: 'IPv4',
    masqueradeAll: false,
    masqueradeBit: 14,
    detectLocalMode: 'ClusterCIDR',
    localCIDRs: v6 ? ['fd00:10:244::/56'] : ['10.244.0.0/16'],
    bridgeInterface: '',
    interfaceNamePrefix: '',
    nodePortAddresses: [],
    nodeIPs: v6 ? ['fd00:192::11'] : ['192.168.50.11'],
    ...over,
  };
}

export function endpoint(ip: string, port: number, over: Partial<Endpoint> = {}): Endpoint {
  return {
    ip,
    port,
    ready: true,
    serving: true,
    terminating: false,
    isLocal: false,
    nodeName: 'node-2',
    zone: '',
    hintsForZones: [],
    hintsForNodes: [],
    ...over,
  };
}

export function localEndpoint(ip: string, port: number): Endpoint {
  return endpoint(ip, port, { isLocal: true, nodeName: NODE });
}

export interface PortSpec extends Partial<Omit<ServicePortInfo, 'name'>> {
  namespace: string;
  serviceName: string;
  endpoints?: Endpoint[];
}

/** A service port with the model's endpoint selection for ready endpoints. */
export function servicePort(spec: PortSpec): ServicePortState {
  const portName = spec.portName ?? '';
  const info: ServicePortInfo = {
    namespace: spec.namespace,
    serviceName: spec.serviceName,
    portName,
    name: `${spec.namespace}/${spec.serviceName}${portName ? ':' + portName : ''}`,
    protocol: spec.protocol ?? 'TCP',
    clusterIP: spec.clusterIP ?? '',
    port: spec.port ?? 80,
    nodePort: spec.nodePort ?? 0,
    externalIPs: spec.externalIPs ?? [],
    loadBalancerIPs: spec.loadBalancerIPs ?? [],
    loadBalancerSourceRanges: spec.loadBalancerSourceRanges ?? [],
    ...(spec.sourceRangesDenyAll ? { sourceRangesDenyAll: true } : {}),
    sessionAffinity: spec.sessionAffinity ?? {},
    externalPolicyLocal: spec.externalPolicyLocal ?? false,
    internalPolicyLocal: spec.internalPolicyLocal ?? false,
    healthCheckNodePort: spec.healthCheckNodePort ?? 0,
    trafficDistribution: spec.trafficDistribution ?? '',
    type: spec.type ?? (spec.loadBalancerIPs?.length ? 'LoadBalancer' : spec.nodePort ? 'NodePort' : 'ClusterIP'),
  };
  const eps = spec.endpoints ?? [];
  const ready = eps.filter((e) => e.ready);
  const localReady = ready.filter((e) => e.isLocal);
  return {
    info,
    endpoints: eps,
    clusterEndpoints: ready,
    localEndpoints: localReady,
    allReachableEndpoints: ready,
    // As the model: only endpoints a packet may be sent to count, so unready ones do not.
    hasAnyEndpoints: ready.length > 0,
    localReadyCount: localReady.length,
  };
}

export function emptyChanges(full = false): ChangeSet {
  return { full, changed: new Set(), deleted: new Set(), staleEndpoints: [], staleServiceIPs: [] };
}

export function snapshot(ports: ServicePortState[], opts: { family?: IPFamily; generation?: number; changes?: ChangeSet } = {}): Snapshot {
  const services = new Map<string, ServicePortState>();
  for (const p of ports) services.set(servicePortKey(p.info), p);
  return {
    family: opts.family ?? 'IPv4',
    generation: opts.generation ?? 1,
    node: { name: NODE, labels: {}, zone: '', podCIDRs: ['10.244.1.0/24'], addresses: ['192.168.50.11'] },
    services,
    changes: opts.changes ?? { ...emptyChanges(true), changed: new Set(services.keys()) },
  };
}

export function key(p: ServicePortState): string {
  return servicePortKey(p.info);
}

/** Service `i` of a large synthetic cluster: ClusterIP 10.96.x.y, `eps` endpoints on 10.x.y.z. */
export function syntheticService(i: number, eps: number, protocol: Protocol = 'TCP'): ServicePortState {
  const clusterIP = `10.96.${(i >> 8) & 255}.${i & 255}`;
  const endpoints: Endpoint[] = [];
  for (let j = 0; j < eps; j++) {
    const n = i * eps + j;
    endpoints.push(endpoint(`10.${100 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`, 8080));
  }
  return servicePort({ namespace: `ns${i % 50}`, serviceName: `svc${i}`, portName: 'http', protocol, clusterIP, port: 80, endpoints });
}

export function syntheticCluster(services: number, eps: number): ServicePortState[] {
  const out: ServicePortState[] = [];
  for (let i = 0; i < services; i++) out.push(syntheticService(i, eps));
  return out;
}

/** Small deterministic generator (mulberry32), so a failure can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random cluster of `services` services (some with two ports) on node-1 with pod CIDR 10.244.1.0/24. */
export function randomPorts(rand: () => number, services: number): ServicePortState[] {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const chance = (p: number): boolean => rand() < p;
  const out: ServicePortState[] = [];
  for (let i = 0; i < services; i++) {
    const eps: Endpoint[] = [];
    const n = pick([0, 1, 2, 3, 5]);
    for (let j = 0; j < n; j++) {
      const ip = `10.244.${pick([1, 2])}.${1 + Math.floor(rand() * 60)}`;
      const e = ip.startsWith('10.244.1.') ? localEndpoint(ip, 8080) : endpoint(ip, 8080);
      eps.push(chance(0.15) ? { ...e, ready: false } : e);
    }
    const lb = chance(0.4) ? [pick(['203.0.113.1', '203.0.113.2', '203.0.113.3'])] : [];
    const ranges = lb.length > 0 && chance(0.5) ? [pick(['192.168.50.0/24', '198.51.100.0/24', '10.0.0.0/8'])] : [];
    // Several ports per service (shared cluster IP), and addresses shared between services.
    for (const [portName, port] of chance(0.3) ? ([['http', 80], ['https', 443]] as const) : ([['', 80]] as const)) {
      out.push(
        servicePort({
          namespace: `ns${i % 3}`,
          serviceName: `svc${i}`,
          portName,
          port,
          protocol: pick(['TCP', 'TCP', 'UDP', 'SCTP'] as const),
          clusterIP: chance(0.9) ? `10.96.0.${i + 1}` : '',
          nodePort: chance(0.4) ? 30000 + i * 2 + (port === 443 ? 1 : 0) : 0,
          externalIPs: chance(0.3) ? [pick(['192.168.99.1', '192.168.99.2'])] : [],
          loadBalancerIPs: lb,
          loadBalancerSourceRanges: ranges,
          externalPolicyLocal: chance(0.4),
          internalPolicyLocal: chance(0.2),
          healthCheckNodePort: lb.length > 0 && chance(0.5) ? 32000 + i : 0,
          sessionAffinity: chance(0.3) ? { clientIPTimeoutSeconds: 300 } : {},
          endpoints: eps,
        }),
      );
    }
  }
  return out;
}
