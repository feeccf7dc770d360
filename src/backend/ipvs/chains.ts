// The iptables side of the IPVS mode, with upstream's chain names. IPVS does the load
// balancing; iptables matches the ipsets to decide what is masqueraded, what is accepted
// before IPVS sees it, and what is filtered:
//
// nat    KUBE-SERVICES (PREROUTING, OUTPUT): cluster IPs masqueraded from outside the pod
//        network, external IPs masqueraded (unless Local), LB IPs → KUBE-LOAD-BALANCER (Local:
//        RETURN, else mark), local destinations → KUBE-NODE-PORT (Local: RETURN, else mark),
//        then ACCEPT what IPVS serves so no later rule of others interferes;
//        KUBE-POSTROUTING: hairpin (KUBE-LOOP-BACK) and marked traffic masqueraded.
// filter KUBE-PROXY-FIREWALL → KUBE-SOURCE-RANGES-FIREWALL (loadBalancerSourceRanges);
//        KUBE-IPVS-FILTER: new connections to an address on kube-ipvs0 on a port no service
//        has are rejected (they would otherwise reach host sockets); KUBE-IPVS-OUT-FILTER: the
//        node itself may not reach an LB IP whose source ranges exclude it; KUBE-NODE-PORT:
//        health-check node ports; KUBE-FORWARD; KUBE-SERVICES (ours, not upstream's): service
//        addresses without endpoints are rejected so clients fail fast, as in the other modes.
import type { BackendConfig } from '../types.js';
import type { IPFamily } from '../../model/types.js';
import { canonicalCIDR, comment, rule, type IptChain, type IptTable, type RuleParts } from '../iptables/syntax.js';
import {
  CLUSTER_IP,
  EXTERNAL_IP,
  EXTERNAL_IP_LOCAL,
  HEALTH_CHECK_NODE_PORT,
  IPSET_SPECS,
  IPVS_IPS,
  LOAD_BALANCER,
  LOAD_BALANCER_FW,
  LOAD_BALANCER_LOCAL,
  LOAD_BALANCER_SOURCE_CIDR,
  LOAD_BALANCER_SOURCE_IP,
  LOOP_BACK,
  NODE_PORT_LOCAL_SCTP,
  NODE_PORT_LOCAL_TCP,
  NODE_PORT_LOCAL_UDP,
  NODE_PORT_SCTP,
  NODE_PORT_TCP,
  NODE_PORT_UDP,
  ipsetName,
} from './ipsets.js';

export const SERVICES = 'KUBE-SERVICES';
export const POSTROUTING = 'KUBE-POSTROUTING';
export const MARK_MASQ = 'KUBE-MARK-MASQ';
export const NODE_PORT = 'KUBE-NODE-PORT';
export const LOAD_BALANCER_CHAIN = 'KUBE-LOAD-BALANCER';
export const FORWARD = 'KUBE-FORWARD';
export const PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
export const SOURCE_RANGES_FIREWALL = 'KUBE-SOURCE-RANGES-FIREWALL';
export const IPVS_FILTER = 'KUBE-IPVS-FILTER';
export const IPVS_OUT_FILTER = 'KUBE-IPVS-OUT-FILTER';

/** Chains of the mode, per table, in the order they are declared. */
export const CHAINS: ReadonlyArray<{ table: IptTable; name: string }> = [
  { table: 'nat', name: SERVICES },
  { table: 'nat', name: POSTROUTING },
  { table: 'nat', name: NODE_PORT },
  { table: 'nat', name: LOAD_BALANCER_CHAIN },
  { table: 'nat', name: MARK_MASQ },
  { table: 'filter', name: SERVICES },
  { table: 'filter', name: FORWARD },
  { table: 'filter', name: NODE_PORT },
  { table: 'filter', name: PROXY_FIREWALL },
  { table: 'filter', name: SOURCE_RANGES_FIREWALL },
  { table: 'filter', name: IPVS_FILTER },
  { table: 'filter', name: IPVS_OUT_FILTER },
];

/** What the chains need from the service ports, collected by the renderer. */
export interface ChainInputs {
  /** Base names of the sets that have entries. */
  nonEmpty: (base: string) => boolean;
  /** filter KUBE-SERVICES rules: service addresses without (local) endpoints. */
  noEndpointRules: string[];
  /** KUBE-IPVS-OUT-FILTER rules: LB IP:ports the node may not reach. */
  outFilterRules: string[];
}

/** Local-traffic detection as rule parts: absent when nothing counts as local. */
export function ifNotLocal(config: BackendConfig): RuleParts | undefined {
  switch (config.detectLocalMode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': {
      const cidr = config.localCIDRs.map((c) => canonicalCIDR(c, config.family)).find((c) => c !== undefined);
      return cidr ? { src: `! -s ${cidr}` } : undefined;
    }
    case 'BridgeInterface':
      return validIfname(config.bridgeInterface) ? { iface: `! -i ${config.bridgeInterface}` } : undefined;
    case 'InterfaceNamePrefix':
      return validIfname(config.interfaceNamePrefix) ? { iface: `! -i ${config.interfaceNamePrefix}+` } : undefined;
  }
}

function validIfname(name: string): boolean {
  return /^[A-Za-z0-9_.:@-]{1,14}$/.test(name);
}

const COMMENTS = new Map(IPSET_SPECS.map((s) => [s.name, s.comment]));

export function buildChains(config: BackendConfig, input: ChainInputs): IptChain[] {
  const family: IPFamily = config.family;
  const m = '0x' + (1 << config.masqueradeBit).toString(16);
  const chains = new Map<string, IptChain>(CHAINS.map((c) => [`${c.table}/${c.name}`, { table: c.table, name: c.name, rules: [] }]));
  const add = (table: IptTable, chain: string, r: string): void => {
    chains.get(`${table}/${chain}`)!.rules.push(r);
  };
  const set = (base: string, dirs: string): string => `-m set --match-set ${ipsetName(base, family)} ${dirs}`;
  const withSet = (base: string, dirs: string, p: RuleParts = {}): RuleParts => ({
    ...p,
    matches: [comment(COMMENTS.get(base)!), set(base, dirs), ...(p.matches ?? [])],
  });
  // A rule that matches a set only exists while the set has entries, as upstream writes it.
  const ifSet = (table: IptTable, chain: string, base: string, dirs: string, jump: string, p: RuleParts = {}): void => {
    if (input.nonEmpty(base)) add(table, chain, rule({ ...withSet(base, dirs, p), jump }));
  };

  // nat: KUBE-SERVICES never touches what the node sends itself over loopback.
  add('nat', SERVICES, rule({ src: `-s ${family === 'IPv6' ? '::1/128' : '127.0.0.0/8'}`, jump: 'RETURN' }));
  ifSet('nat', POSTROUTING, LOOP_BACK, 'dst,dst,src', 'MASQUERADE');
  ifSet('nat', SERVICES, LOAD_BALANCER, 'dst,dst', LOAD_BALANCER_CHAIN);
  ifSet('nat', LOAD_BALANCER_CHAIN, LOAD_BALANCER_LOCAL, 'dst,dst', 'RETURN');
  // Local node ports keep the client's source: RETURN before the masquerade mark.
  ifSet('nat', NODE_PORT, NODE_PORT_LOCAL_TCP, 'dst', 'RETURN', { proto: 'tcp' });
  ifSet('nat', NODE_PORT, NODE_PORT_TCP, 'dst', MARK_MASQ, { proto: 'tcp' });
  ifSet('nat', NODE_PORT, NODE_PORT_LOCAL_UDP, 'dst', 'RETURN', { proto: 'udp' });
  ifSet('nat', NODE_PORT, NODE_PORT_UDP, 'dst', MARK_MASQ, { proto: 'udp' });
  ifSet('nat', NODE_PORT, NODE_PORT_LOCAL_SCTP, 'dst,dst', 'RETURN', { proto: 'sctp' });
  ifSet('nat', NODE_PORT, NODE_PORT_SCTP, 'dst,dst', MARK_MASQ, { proto: 'sctp' });
  ifSet('filter', PROXY_FIREWALL, LOAD_BALANCER_FW, 'dst,dst', SOURCE_RANGES_FIREWALL);
  ifSet('filter', SOURCE_RANGES_FIREWALL, LOAD_BALANCER_SOURCE_CIDR, 'dst,dst,src', 'RETURN');
  ifSet('filter', SOURCE_RANGES_FIREWALL, LOAD_BALANCER_SOURCE_IP, 'dst,dst,src', 'RETURN');

  if (input.nonEmpty(CLUSTER_IP)) {
    const notLocal = ifNotLocal(config);
    if (config.masqueradeAll) ifSet('nat', SERVICES, CLUSTER_IP, 'dst,dst', MARK_MASQ);
    // Off-node clients of a cluster IP may be balanced to another node: masquerade them.
    else if (notLocal) ifSet('nat', SERVICES, CLUSTER_IP, 'dst,dst', MARK_MASQ, notLocal);
    // Without local detection: the node's own connections that picked a VIP as source.
    else ifSet('nat', SERVICES, CLUSTER_IP, 'src,dst', MARK_MASQ);
  }
  const externalAccept = (base: string): void => {
    // Traffic from off the machine (not bridged from a pod, not from the node) and traffic to
    // an external IP that is a local address stays with IPVS.
    ifSet('nat', SERVICES, base, 'dst,dst', 'ACCEPT', { matches: ['-m physdev ! --physdev-is-in', '-m addrtype ! --src-type LOCAL'] });
    ifSet('nat', SERVICES, base, 'dst,dst', 'ACCEPT', { matches: ['-m addrtype --dst-type LOCAL'] });
  };
  ifSet('nat', SERVICES, EXTERNAL_IP, 'dst,dst', MARK_MASQ);
  externalAccept(EXTERNAL_IP);
  externalAccept(EXTERNAL_IP_LOCAL);
  add('nat', SERVICES, rule({ matches: ['-m addrtype --dst-type LOCAL'], jump: NODE_PORT }));
  for (const base of [CLUSTER_IP, LOAD_BALANCER]) {
    if (input.nonEmpty(base)) add('nat', SERVICES, rule({ matches: [set(base, 'dst,dst')], jump: 'ACCEPT' }));
  }
  add('nat', LOAD_BALANCER_CHAIN, rule({ jump: MARK_MASQ }));
  add('nat', POSTROUTING, rule({ matches: [`-m mark ! --mark ${m}/${m}`], jump: 'RETURN' }));
  // Clear the mark so a packet that goes through the stack again is not masqueraded twice.
  add('nat', POSTROUTING, rule({ jump: `MARK --set-xmark ${m}/0x0` }));
  add('nat', POSTROUTING, rule({ matches: [comment('kubernetes service traffic requiring SNAT')], jump: 'MASQUERADE --random-fully' }));
  add('nat', MARK_MASQ, rule({ jump: `MARK --set-xmark ${m}/${m}` }));

  const reject = `REJECT --reject-with ${family === 'IPv6' ? 'icmp6' : 'icmp'}-port-unreachable`;
  for (const r of input.noEndpointRules) add('filter', SERVICES, r);
  add('filter', SOURCE_RANGES_FIREWALL, rule({ jump: 'DROP' }));
  for (const r of input.outFilterRules) add('filter', IPVS_OUT_FILTER, r);
  add('filter', FORWARD, rule({ matches: [comment('kubernetes forwarding rules'), `-m mark --mark ${m}/${m}`], jump: 'ACCEPT' }));
  add('filter', FORWARD, rule({ matches: [comment('kubernetes forwarding conntrack rule'), '-m conntrack --ctstate RELATED,ESTABLISHED'], jump: 'ACCEPT' }));
  add('filter', NODE_PORT, rule({ ...withSet(HEALTH_CHECK_NODE_PORT, 'dst'), jump: 'ACCEPT' }));
  for (const [base, dirs] of [
    [LOAD_BALANCER, 'dst,dst'],
    [CLUSTER_IP, 'dst,dst'],
    [EXTERNAL_IP, 'dst,dst'],
    [EXTERNAL_IP_LOCAL, 'dst,dst'],
    [HEALTH_CHECK_NODE_PORT, 'dst'],
  ] as const) {
    add('filter', IPVS_FILTER, rule({ matches: [set(base, dirs)], jump: 'RETURN' }));
  }
  add('filter', IPVS_FILTER, rule({ matches: ['-m conntrack --ctstate NEW', set(IPVS_IPS, 'dst')], jump: reject }));
  return [...chains.values()];
}

/** Rules in built-in chains that hook ours in: upstream's, then ours for services without endpoints. */
export function ipvsJumpRules(): Array<{ table: IptTable; chain: string; rule: string }> {
  const jump = (table: IptTable, chain: string, to: string, text: string, isNew = false) => ({
    table,
    chain,
    rule: rule({ matches: [isNew ? '-m conntrack --ctstate NEW' : undefined, comment(text)], jump: to }),
  });
  return [
    jump('nat', 'OUTPUT', SERVICES, 'kubernetes service portals'),
    jump('nat', 'PREROUTING', SERVICES, 'kubernetes service portals'),
    jump('nat', 'POSTROUTING', POSTROUTING, 'kubernetes postrouting rules'),
    jump('filter', 'FORWARD', FORWARD, 'kubernetes forwarding rules'),
    jump('filter', 'INPUT', NODE_PORT, 'kubernetes health check rules'),
    jump('filter', 'INPUT', PROXY_FIREWALL, 'kube-proxy firewall rules'),
    jump('filter', 'FORWARD', PROXY_FIREWALL, 'kube-proxy firewall rules'),
    jump('filter', 'INPUT', IPVS_FILTER, 'kubernetes ipvs access filter'),
    jump('filter', 'OUTPUT', IPVS_OUT_FILTER, 'kubernetes ipvs access filter'),
    // IPVS takes service traffic at INPUT (addresses on kube-ipvs0) and OUTPUT; FORWARD sees
    // traffic routed through the node to external addresses.
    jump('filter', 'INPUT', SERVICES, 'kubernetes service portals', true),
    jump('filter', 'FORWARD', SERVICES, 'kubernetes service portals', true),
    jump('filter', 'OUTPUT', SERVICES, 'kubernetes service portals', true),
  ];
}
