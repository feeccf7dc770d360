// What the sandbox builds and checks, derived from the manifests (no kernel access).
//
// Pods come from the EndpointSlices: one pod per endpoint address, named after its targetRef,
// serving every port its slices list. Checks come from the proxy model's snapshot of the same
// manifests: which address to try, from where, and which pods must answer.
import net from 'node:net';
import type { EndpointSlice, KubeObject, Node, Service } from '../model/k8s.js';
import { ProxyModel } from '../model/tracker.js';
import type { Endpoint, Snapshot } from '../model/types.js';
import { ManifestsSource } from '../source/manifests.js';
import type { Proto } from './probe.js';
import type { PodSpec } from './layout.js';

export interface ManifestObjects {
  nodes: Node[];
  services: Service[];
  slices: EndpointSlice[];
}

/** A Kubernetes node placed on a topology node: index N has address 10.0.0.N and pods in 10.244.N.0/24. */
export interface SandboxNode {
  name: string;
  index: number;
}

export interface PodPlan {
  /** Number of topology nodes to create. */
  nodeCount: number;
  /** The Kubernetes nodes of the manifests, by topology index. */
  nodes: SandboxNode[];
  proxyNode: SandboxNode;
  /** Endpoint pods, then the client pod. */
  pods: PodSpec[];
  /** The pod the ClusterIP checks run from: on the proxy's node, serving nothing. */
  client: PodSpec;
  podByIp: Map<string, string>;
  /** Topology node index of every endpoint pod. */
  nodeOfPod: Map<string, number>;
  /** Endpoints left out, and why. */
  notes: string[];
}

export type CheckKind = 'clusterIP' | 'nodePort' | 'externalIP' | 'loadBalancer';

export interface Check {
  /** `namespace/name`, with `:port` when the service has several ports. */
  service: string;
  kind: CheckKind;
  proto: Proto;
  ip: string;
  port: number;
  /** Logical namespace the requests leave from: the client pod's name, or `ext`. */
  from: string;
  fromIp: string;
  /** Pods that must answer, sorted; empty with noAnswer set. */
  expected: string[];
  /** ClientIP session affinity: every answer must come from one pod. */
  sticky: boolean;
  /** Why no request may be answered (dropped or rejected). */
  noAnswer?: string;
  /** Expected pods that cannot answer this client (same-node replies without br_netfilter). */
  unreachable: string[];
}

export interface Skip {
  service: string;
  reason: string;
}

const MAX_NODES = 20;
const POD_NAME = /^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$/;
const RESERVED_NAME = /^(node\d+|net|ext|ext2)$/;

function inCidr(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/');
  const family = net.isIPv4(ip) ? 'ipv4' : 'ipv6';
  if (!base || bits === undefined || net.isIP(base) !== net.isIP(ip)) return false;
  const list = new net.BlockList();
  try {
    list.addSubnet(base, Number(bits), family);
  } catch {
    return false;
  }
  return list.check(ip, family);
}

/** Topology node index whose pod network holds ip (10.244.N.0/24), or 0. */
function podNetworkIndex(ip: string): number {
  const m = /^10\.244\.(\d+)\.\d+$/.exec(ip);
  const n = m ? Number(m[1]) : 0;
  return net.isIPv4(ip) && n >= 1 && n <= MAX_NODES ? n : 0;
}

function placeNode(node: Node): SandboxNode {
  const name = String(node.metadata?.name ?? '');
  const internal = (node.status?.addresses ?? []).find((a) => a.type === 'InternalIP' && net.isIPv4(a.address ?? ''))?.address ?? '';
  const m = /^10\.0\.0\.(\d+)$/.exec(internal);
  const index = m ? Number(m[1]) : 0;
  const fit = `the sandbox places node N at 10.0.0.N with pods in 10.244.N.0/24 (N = 1..${MAX_NODES})`;
  if (index < 1 || index > MAX_NODES) throw new Error(`node ${name}: InternalIP ${internal || '(none)'} does not fit: ${fit}`);
  const cidrs = [...new Set([...(node.spec?.podCIDRs ?? []), node.spec?.podCIDR ?? ''])].filter((c) => c !== '' && !c.includes(':'));
  const want = `10.244.${index}.0/24`;
  if (cidrs.some((c) => c !== want)) throw new Error(`node ${name}: pod CIDR ${cidrs.join(', ')} does not fit: ${fit}`);
  return { name, index };
}

function podName(ref: { kind?: string; name?: string } | undefined, ip: string): string {
  const name = ref && (ref.kind === undefined || ref.kind === 'Pod') ? ref.name : undefined;
  if (name && POD_NAME.test(name) && !RESERVED_NAME.test(name) && name !== 'client') return name;
  return `ep-${ip.replaceAll('.', '-')}`;
}

/** Places the nodes and derives one pod per endpoint address. Throws when the manifests do not fit the sandbox. */
export function planPods(objects: ManifestObjects, proxyNodeName: string): PodPlan {
  const nodes = new Map<string, SandboxNode>();
  const taken = new Map<number, string>();
  for (const n of objects.nodes) {
    const placed = placeNode(n);
    const other = taken.get(placed.index);
    if (other !== undefined) throw new Error(`nodes ${other} and ${placed.name} both have address 10.0.0.${placed.index}`);
    taken.set(placed.index, placed.name);
    nodes.set(placed.name, placed);
  }
  const proxyNode = nodes.get(proxyNodeName);
  if (!proxyNode) throw new Error(`the manifests have no Node ${JSON.stringify(proxyNodeName)} for the proxy to run on`);
  // The external clients' default route points at topology node 1.
  if (proxyNode.index !== 1) throw new Error(`the proxy's node ${proxyNodeName} must have InternalIP 10.0.0.1 (external clients route through it)`);

  const notes: string[] = [];
  const pods = new Map<string, PodSpec>();
  const podByIp = new Map<string, string>();
  const nodeOfPod = new Map<string, number>();
  const skipped = new Set<string>();
  const note = (ip: string, why: string): void => {
    if (skipped.has(ip)) return;
    skipped.add(ip);
    notes.push(`endpoint ${ip}: ${why}; no pod created`);
  };
  for (const slice of objects.slices) {
    if (slice.addressType !== 'IPv4') continue;
    const ports = (slice.ports ?? []).filter((p) => Number.isInteger(p.port) && p.port! >= 1 && p.port! <= 65535);
    for (const ep of slice.endpoints ?? []) {
      const ip = ep.addresses?.[0];
      if (!ip || !net.isIPv4(ip)) continue;
      const index = podNetworkIndex(ip);
      if (index === 0) {
        note(ip, `outside the sandbox pod networks 10.244.N.0/24`);
        continue;
      }
      const host = Number(ip.split('.')[3]);
      if (host < 2 || host > 254) {
        note(ip, 'is the network, gateway or broadcast address of its pod network');
        continue;
      }
      const onNode = ep.nodeName ? nodes.get(ep.nodeName) : undefined;
      if (onNode && onNode.index !== index) {
        note(ip, `its nodeName ${ep.nodeName} has pod CIDR 10.244.${onNode.index}.0/24`);
        continue;
      }
      let name = podByIp.get(ip);
      if (name === undefined) {
        name = podName(ep.targetRef, ip);
        if (pods.has(name)) name = `ep-${ip.replaceAll('.', '-')}`;
        pods.set(name, { name, node: index, ip, tcp: [], udp: [] });
        podByIp.set(ip, name);
        nodeOfPod.set(name, index);
      }
      const pod = pods.get(name)!;
      for (const p of ports) {
        const proto = (p.protocol ?? 'TCP').toUpperCase();
        const list = proto === 'TCP' ? pod.tcp! : proto === 'UDP' ? pod.udp! : undefined;
        if (list && !list.includes(p.port!)) list.push(p.port!);
      }
    }
  }

  let clientName = 'client';
  for (let i = 2; pods.has(clientName); i++) clientName = `client-${i}`;
  let clientHost = 250;
  while (clientHost >= 2 && podByIp.has(`10.244.1.${clientHost}`)) clientHost--;
  if (clientHost < 2) throw new Error('no free address left in 10.244.1.0/24 for the client pod');
  const client: PodSpec = { name: clientName, node: 1, ip: `10.244.1.${clientHost}`, tcp: [], udp: [] };

  const indexes = [...taken.keys(), ...nodeOfPod.values()];
  return {
    nodeCount: Math.max(...indexes),
    nodes: [...nodes.values()].sort((a, b) => a.index - b.index),
    proxyNode,
    pods: [...pods.values(), client],
    client,
    podByIp,
    nodeOfPod,
    notes,
  };
}

function skipReason(svc: Service): string {
  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') return 'no rules (ExternalName: a DNS alias only)';
  if (spec.clusterIP === 'None') return 'no rules (headless)';
  if (!spec.ports || spec.ports.length === 0) return 'no rules (no ports)';
  return 'no rules (the proxy skipped it; see its log)';
}

export interface CheckOptions {
  /** Address of the external client. */
  extIp: string;
  /** Whether replies between two pods of one node pass through conntrack (br_netfilter loaded). */
  sameNodeReplies: boolean;
}

/** The checks for every IPv4 service port of the snapshot, and the services that get no rules. */
export function planChecks(objects: ManifestObjects, snapshot: Snapshot, pods: PodPlan, opts: CheckOptions): { checks: Check[]; skips: Skip[] } {
  const checks: Check[] = [];
  const skips: Skip[] = [];
  const states = [...snapshot.services.values()];
  const portsPerService = new Map<string, number>();
  for (const s of states) {
    const key = `${s.info.namespace}/${s.info.serviceName}`;
    portsPerService.set(key, (portsPerService.get(key) ?? 0) + 1);
  }
  for (const svc of objects.services) {
    const key = `${svc.metadata?.namespace ?? ''}/${svc.metadata?.name ?? ''}`;
    if (!portsPerService.has(key)) skips.push({ service: key, reason: skipReason(svc) });
  }
  const names = (eps: Endpoint[]): string[] => [...new Set(eps.map((e) => pods.podByIp.get(e.ip) ?? e.ip))].sort();
  const client = { from: pods.client.name, fromIp: pods.client.ip };
  const ext = { from: 'ext', fromIp: opts.extIp };

  const order = (s: (typeof states)[number]): string => `${s.info.namespace}/${s.info.serviceName}\0${s.info.portName}`;
  for (const s of states.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0))) {
    const i = s.info;
    const base = `${i.namespace}/${i.serviceName}`;
    const service = (portsPerService.get(base) ?? 0) > 1 ? `${base}:${i.portName || i.port}` : base;
    if (i.protocol !== 'TCP' && i.protocol !== 'UDP') {
      skips.push({ service, reason: `${i.protocol} is not probed` });
      continue;
    }
    const proto = i.protocol === 'TCP' ? 'tcp' : 'udp';
    const sticky = i.sessionAffinity.clientIPTimeoutSeconds !== undefined;
    const internal = names(i.internalPolicyLocal ? s.localEndpoints : s.clusterEndpoints);
    const external = names(i.externalPolicyLocal ? s.localEndpoints : s.clusterEndpoints);
    const add = (kind: CheckKind, ip: string, port: number, src: { from: string; fromIp: string }, expected: string[], noAnswer?: string): void => {
      const c: Check = { service, kind, proto, ip, port, ...src, expected: noAnswer ? [] : expected, sticky, unreachable: [] };
      if (!noAnswer && expected.length === 0) c.noAnswer = 'no endpoints';
      else if (noAnswer) c.noAnswer = noAnswer;
      // Without br_netfilter a same-node endpoint's reply to a pod is bridged past conntrack.
      if (!opts.sameNodeReplies && src.from === pods.client.name) {
        c.unreachable = c.expected.filter((p) => pods.nodeOfPod.get(p) === pods.client.node);
      }
      checks.push(c);
    };
    if (i.clusterIP) add('clusterIP', i.clusterIP, i.port, client, internal);
    if (i.nodePort) add('nodePort', `10.0.0.${pods.proxyNode.index}`, i.nodePort, ext, external);
    for (const ip of i.externalIPs) add('externalIP', ip, i.port, ext, external);
    const ranges = i.loadBalancerSourceRanges;
    const allowed = (ip: string): boolean => ranges.length === 0 || ranges.some((r) => inCidr(ip, r));
    for (const ip of i.loadBalancerIPs) {
      const notAllowed = 'dropped: source not in loadBalancerSourceRanges';
      add('loadBalancer', ip, i.port, ext, external, allowed(ext.fromIp) ? undefined : notAllowed);
      if (!allowed(client.fromIp)) add('loadBalancer', ip, i.port, client, [], notAllowed);
    }
  }
  return { checks, skips };
}

/** Reads the manifests once, the way the proxy will, for the pods to create and the checks to run. */
export async function loadManifests(dir: string, node: string): Promise<{ objects: ManifestObjects; snapshot: Snapshot }> {
  const source = new ManifestsSource(dir, { rescanIntervalMs: 0 });
  const model = new ProxyModel({ nodeName: node, families: ['IPv4'] });
  const byKey = new Map<string, { kind: string; object: KubeObject }>();
  await source.start({
    onEvent: (e) => {
      model.apply(e);
      const key = `${e.kind}/${e.object.metadata?.namespace ?? ''}/${e.object.metadata?.name ?? ''}`;
      if (e.type === 'DELETED') byKey.delete(key);
      else byKey.set(key, { kind: e.kind, object: e.object });
    },
    onSynced: () => {},
  });
  await source.stop();
  const of = <T>(kind: string): T[] => [...byKey.values()].filter((o) => o.kind === kind).map((o) => o.object as T);
  return {
    objects: { nodes: of<Node>('Node'), services: of<Service>('Service'), slices: of<EndpointSlice>('EndpointSlice') },
    snapshot: model.snapshot('IPv4'),
  };
}
