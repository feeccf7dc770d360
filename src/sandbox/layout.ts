// The addressing plan of topology.ts as plain data: names and addresses of nodes, clients and pods,
// the checks a pod spec must pass, and the sysctls and `ip -batch` lines that set each namespace up.
// Kept free of side effects so the plan can be read (and checked) apart from the commands that apply it.
import net from 'node:net';
import type { Proc } from './processes.js';

export const DEFAULT_TCP_PORTS = [80, 8080];
export const DEFAULT_UDP_PORTS = [53, 5353];

export interface PodSpec {
  name: string;
  /** Node index (1-based). */
  node: number;
  /** Inside 10.244.<node>.0/24, host part 2..254. */
  ip: string;
  /** Inside fd00:244:<node>::/64. */
  ip6?: string;
  /** TCP ports of the pod server; default DEFAULT_TCP_PORTS. Empty tcp and udp: no server. */
  tcp?: number[];
  udp?: number[];
}

export interface NodeInfo {
  /** Kubernetes node name: node1, node2, ... */
  name: string;
  index: number;
  ns: string;
  ip: string;
  ip6: string;
  podCidr: string;
  podCidr6: string;
  gateway: string;
  gateway6: string;
}

export interface ClientInfo {
  name: 'ext' | 'ext2';
  ns: string;
  ip: string;
  ip6: string;
}

export interface PodInfo {
  name: string;
  node: number;
  ns: string;
  ip: string;
  ip6?: string;
  tcp: number[];
  udp: number[];
  /** Name of the pod's veth in its node namespace (a port of cbr0). */
  hostVeth: string;
  server?: Proc;
}

export function nodeInfo(id: string, n: number): NodeInfo {
  return {
    name: `node${n}`,
    index: n,
    ns: `${id}-node${n}`,
    ip: `10.0.0.${n}`,
    ip6: `fd00:10::${n}`,
    podCidr: `10.244.${n}.0/24`,
    podCidr6: `fd00:244:${n}::/64`,
    gateway: `10.244.${n}.1`,
    gateway6: `fd00:244:${n}::1`,
  };
}

export function clientInfos(id: string): [ClientInfo, ClientInfo] {
  return [
    { name: 'ext', ns: `${id}-ext`, ip: '10.0.0.100', ip6: 'fd00:10::100' },
    { name: 'ext2', ns: `${id}-ext2`, ip: '10.0.0.101', ip6: 'fd00:10::101' },
  ];
}

function inSubnet(ip: string, prefix: string, bits: number, family: 'ipv4' | 'ipv6'): boolean {
  const bl = new net.BlockList();
  bl.addSubnet(prefix, bits, family);
  return bl.check(ip, family);
}

/**
 * Checks a pod spec against the topology's id and nodes and the names and addresses already
 * taken (both sets gain the pod's), and returns the pod's info. nextVeth names the pod's host
 * veth; it is called only once the spec has passed every check.
 */
export function validatePod(id: string, nodes: readonly NodeInfo[], spec: PodSpec, taken: Set<string>, ips: Set<string>, nextVeth: () => string): PodInfo {
  const what = `pod ${JSON.stringify(spec.name)}`;
  if (typeof spec.name !== 'string' || !/^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$/.test(spec.name)) {
    throw new Error(`${what}: name must be a lower-case DNS label of at most 42 characters`);
  }
  if (/^(node\d+|net|ext|ext2)$/.test(spec.name)) throw new Error(`${what}: name is reserved for a topology namespace`);
  if (taken.has(spec.name)) throw new Error(`${what}: duplicate pod name`);
  const node = nodes[spec.node - 1];
  if (!node) throw new Error(`${what}: node ${spec.node} does not exist (topology has ${nodes.length})`);
  if (!net.isIPv4(spec.ip) || !inSubnet(spec.ip, `10.244.${spec.node}.0`, 24, 'ipv4')) {
    throw new Error(`${what}: ip ${JSON.stringify(spec.ip)} is not an address in ${node.podCidr}`);
  }
  const host = Number(spec.ip.split('.')[3]);
  if (host < 2 || host > 254) throw new Error(`${what}: ip ${spec.ip} collides with the network, gateway or broadcast address`);
  if (spec.ip6 !== undefined) {
    if (!net.isIPv6(spec.ip6) || !inSubnet(spec.ip6, `fd00:244:${spec.node}::`, 64, 'ipv6')) {
      throw new Error(`${what}: ip6 ${JSON.stringify(spec.ip6)} is not an address in ${node.podCidr6}`);
    }
    if (inSubnet(spec.ip6, node.gateway6, 128, 'ipv6') || inSubnet(spec.ip6, `fd00:244:${spec.node}::`, 128, 'ipv6')) {
      throw new Error(`${what}: ip6 ${spec.ip6} collides with the subnet-router or gateway address`);
    }
  }
  for (const a of [spec.ip, spec.ip6]) {
    if (a === undefined) continue;
    if (ips.has(a)) throw new Error(`${what}: address ${a} is already used`);
  }
  const ports = (list: number[] | undefined, dflt: number[], proto: string): number[] => {
    const p = list ?? dflt;
    for (const x of p) if (!Number.isInteger(x) || x < 1 || x > 65535) throw new Error(`${what}: bad ${proto} port ${x}`);
    return [...p];
  };
  const info: PodInfo = {
    name: spec.name,
    node: spec.node,
    ns: `${id}-pod-${spec.name}`,
    ip: spec.ip,
    tcp: ports(spec.tcp, DEFAULT_TCP_PORTS, 'tcp'),
    udp: ports(spec.udp, DEFAULT_UDP_PORTS, 'udp'),
    hostVeth: nextVeth(),
  };
  if (spec.ip6 !== undefined) info.ip6 = spec.ip6;
  taken.add(spec.name);
  ips.add(spec.ip);
  if (spec.ip6 !== undefined) ips.add(spec.ip6);
  return info;
}

export function nodeSysctls(brNetfilter: boolean): Record<string, number> {
  const s: Record<string, number> = {
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
    'net.ipv4.ip_forward': 1,
    'net.ipv6.conf.all.forwarding': 1,
  };
  if (brNetfilter) {
    s['net.bridge.bridge-nf-call-iptables'] = 1;
    s['net.bridge.bridge-nf-call-ip6tables'] = 1;
  }
  return s;
}

export const LEAF_SYSCTLS = { 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0 };

/** For the root namespace's ip: the veths that join each node and client to the nodes network. */
export function uplinkVethLines(nodes: readonly NodeInfo[], clients: readonly ClientInfo[], netNs: string): string[] {
  return [
    ...nodes.map((n) => `link add eth0 netns ${n.ns} type veth peer name n${n.index} netns ${netNs}`),
    ...clients.map((c) => `link add eth0 netns ${c.ns} type veth peer name ${c.name} netns ${netNs}`),
  ];
}

/** The nodes network: br0 with a port for each node and client. */
export function netLines(nodes: readonly NodeInfo[], clients: readonly ClientInfo[]): string[] {
  const lines = ['link set lo up', 'link add br0 type bridge mcast_snooping 0', 'link set br0 up'];
  for (const port of [...nodes.map((n) => `n${n.index}`), ...clients.map((c) => c.name)]) {
    lines.push(`link set ${port} master br0`, `link set ${port} up`);
  }
  return lines;
}

/** A node: its uplink, cbr0 with the ports of its pods, and routes to the other nodes' pods. */
export function nodeLines(n: NodeInfo, nodes: readonly NodeInfo[], pods: readonly PodInfo[]): string[] {
  const lines = [
    'link set lo up',
    `addr add ${n.ip}/24 dev eth0`,
    `addr add ${n.ip6}/64 dev eth0 nodad`,
    'link set eth0 up',
    'link add cbr0 type bridge mcast_snooping 0',
    `addr add ${n.gateway}/24 dev cbr0`,
    `addr add ${n.gateway6}/64 dev cbr0 nodad`,
    'link set cbr0 up',
  ];
  for (const p of pods) if (p.node === n.index) lines.push(...nodePortLines(p));
  for (const m of nodes) {
    if (m === n) continue;
    lines.push(`route add ${m.podCidr} via ${m.ip}`, `route add ${m.podCidr6} via ${m.ip6}`);
  }
  return lines;
}

/** A client: its address on the nodes network, routed through the given node. */
export function clientLines(c: ClientInfo, via: NodeInfo): string[] {
  return [
    'link set lo up',
    `addr add ${c.ip}/24 dev eth0`,
    `addr add ${c.ip6}/64 dev eth0 nodad`,
    'link set eth0 up',
    `route add default via ${via.ip}`,
    `route add ::/0 via ${via.ip6}`,
  ];
}

/** For the root namespace's ip: the pod's veth, one end in the pod, the other in its node. */
export function podVethLine(p: PodInfo, node: NodeInfo): string {
  return `link add eth0 netns ${p.ns} type veth peer name ${p.hostVeth} netns ${node.ns}`;
}

/** In the pod's node: its veth as a cbr0 port, hairpin on so the pod can reach itself through a Service. */
export function nodePortLines(p: PodInfo): string[] {
  return [`link set ${p.hostVeth} master cbr0`, `link set ${p.hostVeth} type bridge_slave hairpin on`, `link set ${p.hostVeth} up`];
}

/** In the pod: its addresses and default routes through its node's cbr0. */
export function podLines(p: PodInfo, node: NodeInfo): string[] {
  const lines = ['link set lo up', `addr add ${p.ip}/24 dev eth0`];
  if (p.ip6) lines.push(`addr add ${p.ip6}/64 dev eth0 nodad`);
  lines.push('link set eth0 up', `route add default via ${node.gateway}`);
  if (p.ip6) lines.push(`route add ::/0 via ${node.gateway6}`);
  return lines;
}
