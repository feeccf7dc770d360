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
import { comment, hostCIDR, rule, type IptChain } from '../iptables/syntax.js';
import { NODEPORT_CONTAINER, NODEPORT_HOST, PORTALS_CONTAINER, PORTALS_HOST } from './names.js';
import type { Portal, UserspacePlan } from './plan.js';

const LOCAL_DST = '-m addrtype --dst-type LOCAL';

/**
 * The four chains, given the port each listener got. Portals whose listener has no port (a
 * protocol the proxy cannot serve) are left out. `nodePortIPs` null: every local address.
 */
export function renderRedirects(plan: UserspacePlan, ports: ReadonlyMap<string, number>, nodePortIPs: string[] | null): IptChain[] {
  const family: IPFamily = plan.family;
  const portals: string[] = [];
  const nodePorts: string[] = [];
  for (const p of plan.portals) {
    const proxyPort = ports.get(p.listener);
    if (proxyPort === undefined) continue;
    const redirect = (dst: string | undefined, src: string | undefined): string =>
      rule({ src, dst, proto: p.proto, matches: [comment(label(p)), `-m ${p.proto} --dport ${p.port}`], jump: `REDIRECT --to-ports ${proxyPort}` });
    if (p.kind === 'nodePort') {
      if (nodePortIPs === null) nodePorts.push(redirect(undefined, undefined));
      else for (const ip of nodePortIPs) nodePorts.push(redirect(`-d ${hostCIDR(ip, family)}`, undefined));
      continue;
    }
    for (const ip of p.ips ?? []) {
      for (const src of p.sources ?? [undefined]) portals.push(redirect(`-d ${hostCIDR(ip, family)}`, src ? `-s ${src}` : undefined));
    }
  }
  return [
    { table: 'nat', name: PORTALS_CONTAINER, rules: portals },
    { table: 'nat', name: PORTALS_HOST, rules: portals },
    { table: 'nat', name: NODEPORT_CONTAINER, rules: nodePorts },
    { table: 'nat', name: NODEPORT_HOST, rules: nodePorts },
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
