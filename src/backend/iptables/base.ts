// The fixed part of the iptables layout: the chains every ruleset has, their fixed rules, the
// hooks from the built-in chains, and the configuration-derived context the renderer uses.
import type { BackendConfig } from '../types.js';
import type { IPFamily } from '../../model/types.js';
import { cidrContains, parseCIDR, parseIP, type CIDR } from '../../net/ip.js';
import { CANARY_CHAIN as CANARY, CANARY_RULE } from './canary.js';
import { canonicalCIDR, canonicalIP, comment, hostCIDR, rule, type IptChain, type IptTable, type RuleParts } from './syntax.js';

export const MARK_MASQ = 'KUBE-MARK-MASQ';
export const SERVICES = 'KUBE-SERVICES';
export const NODEPORTS = 'KUBE-NODEPORTS';
export const EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
export const CLUSTER_IPS = 'KUBE-CLUSTER-IPS';
/** The shared chains service ports add rules to (`table/chain`): they are written after the service chains they jump to. */
export const DISPATCH_CHAINS: readonly string[] = [
  `nat/${SERVICES}`,
  `nat/${NODEPORTS}`,
  `filter/${SERVICES}`,
  `filter/${CLUSTER_IPS}`,
  `filter/${EXTERNAL_SERVICES}`,
  `filter/${NODEPORTS}`,
  `filter/${PROXY_FIREWALL}`,
];
const FORWARD = 'KUBE-FORWARD';
const POSTROUTING = 'KUBE-POSTROUTING';
const KUBELET_FIREWALL = 'KUBE-FIREWALL';

/** Everything render needs that depends only on the configuration. */
export interface IptContext {
  family: IPFamily;
  /** The masquerade mark, e.g. `0x4000`. */
  mark: string;
  masqueradeAll: boolean;
  /** Rule parts matching traffic from local pods, and the rest; absent when nothing counts as local. */
  ifLocal?: RuleParts;
  ifNotLocal?: RuleParts;
  /** The primary node IP (canonical), for LB source ranges that contain the node. */
  nodeIP?: string;
  /** The fixed tail of nat KUBE-SERVICES: the jump(s) to KUBE-NODEPORTS. */
  nodePortRules: string[];
  /** IPv4 with localhost NodePorts: the KUBE-FIREWALL guard against martian localhost traffic. */
  localhostGuard: boolean;
  /** Drop per-endpoint comments (upstream's large-cluster mode). */
  largeCluster: boolean;
  reject: string;
}

function validIfname(name: string): boolean {
  return /^[A-Za-z0-9_.:@-]{1,14}$/.test(name);
}

export function renderContext(config: BackendConfig, opts: { largeCluster?: boolean } = {}): IptContext {
  const family = config.family;
  const v6 = family === 'IPv6';
  const localhostNodePorts = config.localhostNodePorts ?? true;
  const ctx: IptContext = {
    family,
    mark: '0x' + (1 << config.masqueradeBit).toString(16),
    masqueradeAll: config.masqueradeAll,
    nodePortRules: [],
    localhostGuard: !v6 && localhostNodePorts,
    largeCluster: opts.largeCluster ?? false,
    reject: `REJECT --reject-with ${v6 ? 'icmp6' : 'icmp'}-port-unreachable`,
  };
  switch (config.detectLocalMode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': {
      // Upstream detects local traffic by one CIDR per family.
      const cidr = config.localCIDRs.map((c) => canonicalCIDR(c, family)).find((c) => c !== undefined);
      if (cidr) {
        ctx.ifLocal = { src: `-s ${cidr}` };
        ctx.ifNotLocal = { src: `! -s ${cidr}` };
      }
      break;
    }
    case 'BridgeInterface':
      if (validIfname(config.bridgeInterface)) {
        ctx.ifLocal = { iface: `-i ${config.bridgeInterface}` };
        ctx.ifNotLocal = { iface: `! -i ${config.bridgeInterface}` };
      }
      break;
    case 'InterfaceNamePrefix':
      if (validIfname(config.interfaceNamePrefix)) {
        ctx.ifLocal = { iface: `-i ${config.interfaceNamePrefix}+` };
        ctx.ifNotLocal = { iface: `! -i ${config.interfaceNamePrefix}+` };
      }
      break;
  }
  const nodeIPs = [...new Set(config.nodeIPs.map((ip) => canonicalIP(ip, family)).filter((ip): ip is string => ip !== undefined))];
  ctx.nodeIP = nodeIPs[0];
  ctx.nodePortRules = nodePortRules(config, nodeIPs, localhostNodePorts);
  return ctx;
}

const NODEPORTS_COMMENT = comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain');

/** nodePortAddresses as upstream's iptables mode: empty or a zero CIDR means every local address. */
function nodePortRules(config: BackendConfig, nodeIPs: string[], localhostNodePorts: boolean): string[] {
  const family = config.family;
  const v6 = family === 'IPv6';
  const cidrs = config.nodePortAddresses
    .filter((a) => a !== 'primary')
    .map((a) => parseCIDR(a.trim(), { leadingZeros: true }))
    .filter((c): c is CIDR => c !== null && c.family === family);
  const primary = config.nodePortAddresses.includes('primary');
  if ((!primary && cidrs.length === 0) || cidrs.some((c) => c.prefix === 0)) {
    // Localhost NodePorts never work on IPv6, and on IPv4 only with route_localnet.
    const notLocalhost = v6 ? '! -d ::1/128' : localhostNodePorts ? undefined : '! -d 127.0.0.0/8';
    return [rule({ dst: notLocalhost, matches: [NODEPORTS_COMMENT, '-m addrtype --dst-type LOCAL'], jump: NODEPORTS })];
  }
  const ips: string[] = [];
  if (primary && nodeIPs[0]) ips.push(nodeIPs[0]);
  const candidates = v6 ? nodeIPs : [...nodeIPs, ...(localhostNodePorts ? ['127.0.0.1'] : [])];
  for (const ip of candidates) {
    const p = parseIP(ip, { v4Mapped: true });
    if (p && cidrs.some((c) => cidrContains(c, p))) ips.push(ip);
  }
  return [...new Set(ips)].map((ip) => rule({ dst: `-d ${hostCIDR(ip, family)}`, matches: [NODEPORTS_COMMENT], jump: NODEPORTS }));
}

/** Every fixed chain of ours with its fixed rules; in shared chains they follow the service items. */
export function baseChains(ctx: IptContext): IptChain[] {
  const m = ctx.mark;
  const chains: IptChain[] = [
    { table: 'nat', name: SERVICES, rules: [...ctx.nodePortRules] },
    { table: 'nat', name: NODEPORTS, rules: [] },
    {
      table: 'nat',
      name: POSTROUTING,
      rules: [
        rule({ matches: [`-m mark ! --mark ${m}/${m}`], jump: 'RETURN' }),
        // Clear the mark so a packet that goes through the stack again is not masqueraded twice.
        rule({ jump: `MARK --set-xmark ${m}/0x0` }),
        rule({ matches: [comment('kubernetes service traffic requiring SNAT')], jump: 'MASQUERADE --random-fully' }),
      ],
    },
    { table: 'nat', name: MARK_MASQ, rules: [rule({ jump: `MARK --set-xmark ${m}/${m}` })] },
    { table: 'nat', name: CANARY, rules: [CANARY_RULE] },
    {
      table: 'filter',
      name: SERVICES,
      rules: [rule({ matches: [comment('cluster IPs on ports no service has')], jump: CLUSTER_IPS })],
    },
    { table: 'filter', name: CLUSTER_IPS, rules: [] },
    { table: 'filter', name: EXTERNAL_SERVICES, rules: [] },
    { table: 'filter', name: NODEPORTS, rules: [] },
    {
      table: 'filter',
      name: FORWARD,
      rules: [
        rule({ matches: ['-m conntrack --ctstate INVALID'], jump: 'DROP' }),
        // Marked traffic (e.g. NodePort traffic) is forwarded even when FORWARD's policy drops.
        rule({ matches: [comment('kubernetes forwarding rules'), `-m mark --mark ${m}/${m}`], jump: 'ACCEPT' }),
        rule({ matches: [comment('kubernetes forwarding conntrack rule'), '-m conntrack --ctstate RELATED,ESTABLISHED'], jump: 'ACCEPT' }),
      ],
    },
    { table: 'filter', name: PROXY_FIREWALL, rules: [] },
    { table: 'filter', name: CANARY, rules: [CANARY_RULE] },
    { table: 'mangle', name: CANARY, rules: [CANARY_RULE] },
  ];
  if (ctx.localhostGuard) {
    // route_localnet lets martian localhost traffic in from the network: drop what did not
    // come from the node itself and was not DNATed to localhost by us.
    chains.push({
      table: 'filter',
      name: KUBELET_FIREWALL,
      rules: [
        rule({
          src: '! -s 127.0.0.0/8',
          dst: '-d 127.0.0.0/8',
          matches: [comment('block incoming localnet connections'), '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT'],
          jump: 'DROP',
        }),
      ],
    });
  }
  return chains;
}

/** Rules in built-in chains that hook ours in, in upstream's order. */
export function jumpRules(ctx: IptContext): Array<{ table: IptTable; chain: string; rule: string }> {
  const NEW = '-m conntrack --ctstate NEW';
  const jump = (table: IptTable, chain: string, to: string, text: string, isNew: boolean) => ({
    table,
    chain,
    rule: rule({ matches: [isNew ? NEW : undefined, comment(text)], jump: to }),
  });
  const out = [
    jump('filter', 'INPUT', EXTERNAL_SERVICES, 'kubernetes externally-visible service portals', true),
    jump('filter', 'FORWARD', EXTERNAL_SERVICES, 'kubernetes externally-visible service portals', true),
    // The node's own connections to an external address without endpoints are refused too, as
    // in the nftables mode (they would otherwise leave the node untranslated).
    jump('filter', 'OUTPUT', EXTERNAL_SERVICES, 'kubernetes externally-visible service portals', true),
    jump('filter', 'INPUT', NODEPORTS, 'kubernetes health check service ports', false),
    jump('filter', 'FORWARD', SERVICES, 'kubernetes service portals', true),
    jump('filter', 'OUTPUT', SERVICES, 'kubernetes service portals', true),
    jump('filter', 'FORWARD', FORWARD, 'kubernetes forwarding rules', false),
    jump('filter', 'INPUT', PROXY_FIREWALL, 'kubernetes load balancer firewall', true),
    jump('filter', 'OUTPUT', PROXY_FIREWALL, 'kubernetes load balancer firewall', true),
    jump('filter', 'FORWARD', PROXY_FIREWALL, 'kubernetes load balancer firewall', true),
    jump('nat', 'OUTPUT', SERVICES, 'kubernetes service portals', false),
    jump('nat', 'PREROUTING', SERVICES, 'kubernetes service portals', false),
    jump('nat', 'POSTROUTING', POSTROUTING, 'kubernetes postrouting rules', false),
  ];
  if (ctx.localhostGuard) {
    out.push({ table: 'filter', chain: 'INPUT', rule: `-j ${KUBELET_FIREWALL}` });
    out.push({ table: 'filter', chain: 'OUTPUT', rule: `-j ${KUBELET_FIREWALL}` });
  }
  return out;
}
