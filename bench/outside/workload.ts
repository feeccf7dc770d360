// The clusters the outside benchmark feeds the proxy: Services with one TCP port and their
// EndpointSlices, as the API server would hold them. Endpoint IPs come from 10.128.0.0/9, a
// range the benchmark's namespace routes to lo, so every endpoint answers on one local server.
import type { EndpointSlice, Service } from '../../src/model/k8s.js';

export const NAMESPACE = 'bench';
export const NODE_NAME = 'node-1';
export const NODE_IP = '10.0.0.1';
export const SERVICE_PORT = 80;
export const ENDPOINT_PORT = 8080;
export const CLUSTER_CIDR = '10.128.0.0/9';
export const ENDPOINT_RANGE = '10.128.0.0/9';

export interface Workload {
  name: string;
  services: number;
  endpoints: number;
  /** ClusterIP only, or a mix of NodePort / LoadBalancer / Local policy / affinity. */
  mixed: boolean;
}

export const WORKLOADS: Workload[] = [
  // The small end for first-packet latency, which should not grow with the number of Services.
  { name: '100×10', services: 100, endpoints: 10, mixed: false },
  { name: '1k×10', services: 1000, endpoints: 10, mixed: false },
  { name: '10k×10', services: 10000, endpoints: 10, mixed: false },
  { name: '30k×10', services: 30000, endpoints: 10, mixed: false },
  { name: '5k×50', services: 5000, endpoints: 50, mixed: false },
  { name: '44k×2', services: 44000, endpoints: 2, mixed: false },
  { name: '10k×10 mixed', services: 10000, endpoints: 10, mixed: true },
];

function ipv4(base: number, offset: number): string {
  const n = base + offset;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

const VIP_BASE = (10 << 24) | (96 << 16);
const ENDPOINT_BASE = (10 << 24) | (128 << 16);
const LB_BASE = (198 << 24) | (18 << 16);

/** Cluster IP of service i (10.96.0.0/12 holds a million). */
export function vip(i: number): string {
  return ipv4(VIP_BASE, i + 1);
}

export function serviceName(i: number): string {
  return `svc-${i}`;
}

export function service(i: number, mixed: boolean): Service {
  const spec: NonNullable<Service['spec']> = {
    type: 'ClusterIP',
    clusterIP: vip(i),
    clusterIPs: [vip(i)],
    ipFamilies: ['IPv4'],
    ports: [{ name: 'http', protocol: 'TCP', port: SERVICE_PORT, targetPort: ENDPOINT_PORT }],
  };
  const s: Service = { metadata: { name: serviceName(i), namespace: NAMESPACE, uid: `uid-svc-${i}` }, spec };
  if (!mixed) return s;
  // NodePorts are unique: only the first services of the mix get one (30000-31999; health-check
  // node ports take 32000-32767); the LoadBalancers have none, as with allocateLoadBalancerNodePorts false.
  const nodePort = 30000 + Math.floor(i / 5);
  if (i % 5 === 1 && nodePort < 32000) {
    spec.type = 'NodePort';
    spec.ports![0]!.nodePort = nodePort;
  } else if (i % 5 === 2) {
    spec.type = 'LoadBalancer';
    // A Local LoadBalancer has a health-check node port (the API server allocates one), taken
    // above the NodePorts while the range lasts.
    const healthCheckNodePort = 32000 + Math.floor(i / 10);
    const local = i % 10 === 2 && healthCheckNodePort <= 32767;
    spec.externalTrafficPolicy = local ? 'Local' : 'Cluster';
    if (local) spec.healthCheckNodePort = healthCheckNodePort;
    s.status = { loadBalancer: { ingress: [{ ip: ipv4(LB_BASE, i + 1), ipMode: 'VIP' }] } };
  } else if (i % 5 === 3) {
    spec.sessionAffinity = 'ClientIP';
  } else if (i % 5 === 4) {
    spec.externalIPs = [ipv4(LB_BASE + (1 << 15), i + 1)];
  }
  return s;
}

/** Service i's slice; `generation` shifts its endpoint IPs (a change the proxy must program). */
export function endpointSlice(i: number, endpoints: number, generation = 0): EndpointSlice {
  const eps = [];
  for (let j = 0; j < endpoints; j++) {
    eps.push({
      addresses: [ipv4(ENDPOINT_BASE, (i * endpoints + j + generation) % (1 << 23))],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: j % 2 === 0 ? NODE_NAME : 'node-2',
    });
  }
  return {
    metadata: {
      name: `${serviceName(i)}-abcde`,
      namespace: NAMESPACE,
      labels: { 'kubernetes.io/service-name': serviceName(i), 'endpointslice.kubernetes.io/managed-by': 'bench' },
    },
    addressType: 'IPv4',
    endpoints: eps,
    ports: [{ name: 'http', protocol: 'TCP', port: ENDPOINT_PORT }],
  } as EndpointSlice;
}

export function node(): Record<string, unknown> {
  return {
    metadata: { name: NODE_NAME, labels: { 'kubernetes.io/hostname': NODE_NAME } },
    spec: { podCIDR: '10.128.0.0/24', podCIDRs: ['10.128.0.0/24'] },
    status: { addresses: [{ type: 'InternalIP', address: NODE_IP }] },
  };
}
