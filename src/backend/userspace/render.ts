// Pure rendering of the userspace mode's redirect rules, in the legacy proxy's chains (nat table):
//   KUBE-PORTALS-CONTAINER  (PREROUTING)  service addresses, traffic from pods and the network
//   KUBE-PORTALS-HOST       (OUTPUT)      service addresses, traffic from the node itself
//   KUBE-NODEPORT-CONTAINER (PREROUTING)  NodePorts on the node's addresses
//   KUBE-NODEPORT-HOST      (OUTPUT)      NodePorts, from the node itself (127.0.0.1 included)
// Every rule REDIRECTs to the port the in-process proxy listens on for that portal; REDIRECT
// in OUTPUT sends to the loopback address, in PREROUTING to the receiving interface's address,
// and the proxy listens on all of them.
import type { IPFamily } from '../../model/types.js';
import type { JumpRule } from '../iptables/apply.js';
import { comment, hostCIDR, rule, type IptChain, type RuleParts } from '../iptables/syntax.js';
import { NODEPORT_CONTAINER, NODEPORT_HOST, PORTALS_CONTAINER, PORTALS_HOST } from './names.js';
import type { Portal, UserspacePlan } from './plan.js';

const LOCAL_DST = '-m addrtype --dst-type LOCAL';

/** Rule parts for traffic from this node's pods, and for all other traffic. */
export interface LocalPods {
  ifLocal: RuleParts;
  ifNotLocal: RuleParts;
}

/**
 * The four chains, given the port each listener got. Portals whose listener has no port (a
 * protocol the proxy cannot serve) are left out. `nodePortIPs` null: every local address.
 * `localPods` matches traffic from this node's pods and the rest (local traffic detection), if
 * known. No two rules of a chain match the same packet, so their order does not matter and a
 * partial sync can insert and delete single rules.
 */
export function renderRedirects(
  plan: Pick<UserspacePlan, 'family' | 'portals'>,
  ports: ReadonlyMap<string, number>,
  nodePortIPs: string[] | null,
  localPods?: LocalPods,
): IptChain[] {
  const family: IPFamily = plan.family;
  const chains = { portalsContainer: [] as string[], portalsHost: [] as string[], nodePortsContainer: [] as string[], nodePortsHost: [] as string[] };
  for (const p of plan.portals) {
    const outside = ports.get(p.listener);
    if (outside === undefined) continue;
    // The node and its pods are inside clients of a Local-policy port (see Portal.insideListener).
    const inside = p.insideListener === undefined ? outside : ports.get(p.insideListener);
    const dsts = p.kind === 'nodePort' ? (nodePortIPs === null ? [undefined] : nodePortIPs.map((ip) => `-d ${hostCIDR(ip, family)}`)) : (p.ips ?? []).map((ip) => `-d ${hostCIDR(ip, family)}`);
    const srcs = p.sources?.map((c) => `-s ${c}`) ?? [undefined];
    const redirect = (dst: string | undefined, src: string | undefined, iface: string | undefined, to: number): string =>
      rule({ src, dst, iface, proto: p.proto, matches: [comment(label(p)), `-m ${p.proto} --dport ${p.port}`], jump: `REDIRECT --to-ports ${to}` });
    const container = p.kind === 'nodePort' ? chains.nodePortsContainer : chains.portalsContainer;
    const host = p.kind === 'nodePort' ? chains.nodePortsHost : chains.portalsHost;
    for (const dst of dsts) {
      for (const src of srcs) {
        if (inside !== undefined) host.push(redirect(dst, src, undefined, inside));
        if (inside !== undefined && inside !== outside && localPods && !src) {
          container.push(redirect(dst, localPods.ifLocal.src, localPods.ifLocal.iface, inside));
          container.push(redirect(dst, localPods.ifNotLocal.src, localPods.ifNotLocal.iface, outside));
        } else {
          container.push(redirect(dst, src, undefined, outside));
        }
      }
    }
  }
  return [
    { table: 'nat', name: PORTALS_CONTAINER, rules: chains.portalsContainer },
    { table: 'nat', name: PORTALS_HOST, rules: chains.portalsHost },
    { table: 'nat', name: NODEPORT_CONTAINER, rules: chains.nodePortsContainer },
    { table: 'nat', name: NODEPORT_HOST, rules: chains.nodePortsHost },
  ];
}

function label(p: Portal): string {
  return p.kind === 'nodePort' ? `${p.name} node port` : `${p.name}`;
}

/**
 * The hooks from the built-in chains. Portals come before NodePorts in each chain: the jumps are
 * listed NodePorts first because missing jumps are prepended one after the other.
 */
export function redirectJumps(nodePortIPs: string[] | null): JumpRule[] {
  // With nodePortAddresses the NodePort rules carry their addresses; otherwise only local ones.
  const local = nodePortIPs === null ? [LOCAL_DST] : [];
  const jumps: JumpRule[] = [];
  for (const [chain, portalsChain, nodePortChain] of [
    ['PREROUTING', PORTALS_CONTAINER, NODEPORT_CONTAINER],
    ['OUTPUT', PORTALS_HOST, NODEPORT_HOST],
  ] as const) {
    jumps.push({ table: 'nat', chain, rule: rule({ matches: [...local, comment('kubernetes service node ports (userspace proxy)')], jump: nodePortChain }) });
    jumps.push({ table: 'nat', chain, rule: rule({ matches: [comment('kubernetes service portals (userspace proxy)')], jump: portalsChain }) });
  }
  return jumps;
}
