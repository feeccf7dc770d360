// Pure rendering of a Snapshot into the IPVS mode's state (one instance per IP family): the
// addresses on kube-ipvs0, one virtual server per service address and port (cluster IP,
// external IPs, LB IPs, each node address for a NodePort) with a masqueraded real server per
// endpoint the model selected, the ipsets, and the iptables chains that use them (chains.ts).
// No I/O, no clock, no randomness: the same snapshot gives the same ruleset.
import type { BackendConfig } from '../types.js';
import type { Endpoint, IPFamily, Protocol, ServicePortState, Snapshot } from '../../model/types.js';
import { cidrContains, parseCIDR, parseIP } from '../../net/ip.js';
import { MAX_COMMENT, canonicalCIDR, canonicalIP, comment, hostCIDR, rule } from '../iptables/syntax.js';
import { FragmentStore } from '../common/fragment-store.js';
import { emptyFragment, type Fragment, type ObjectKind } from '../common/fragment.js';
import type { IptChain } from '../iptables/syntax.js';
import { buildChains, ipvsJumpRules } from './chains.js';
import {
  CLUSTER_IP,
  EXTERNAL_IP,
  EXTERNAL_IP_LOCAL,
  HEALTH_CHECK_NODE_PORT,
  IPSET_SPECS,
  IPVS_IPS,
  IpsetBuilder,
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
  ipPortEntry,
  ipPortIpEntry,
} from './ipsets.js';
import { parseScheduler, type IpvsRuleset, type RealServer, type Scheduler, type VirtualServer } from './types.js';

export interface IpvsOptions extends BackendConfig {
  /** ipvs.scheduler / --ipvs-scheduler; blank means rr. An unknown name throws. */
  scheduler?: string;
  /** ipvs.excludeCIDRs (both families; this family's are kept). */
  excludeCIDRs?: string[];
}

const NODE_PORT_SETS: Record<Protocol, { all: string; local: string }> = {
  TCP: { all: NODE_PORT_TCP, local: NODE_PORT_LOCAL_TCP },
  UDP: { all: NODE_PORT_UDP, local: NODE_PORT_LOCAL_UDP },
  SCTP: { all: NODE_PORT_SCTP, local: NODE_PORT_LOCAL_SCTP },
};

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 1 && p <= 65535;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.');
}

/**
 * The node addresses that serve NodePorts, as upstream's IPVS mode picks them: every node
 * address when nodePortAddresses is empty or holds a zero-length prefix, else those inside
 * one of its CIDRs (plus the primary address for `primary`); never loopback, since IPVS
 * cannot answer there.
 */
export function nodePortAddresses(config: BackendConfig): string[] {
  const family = config.family;
  const nodeIPs = [...new Set(config.nodeIPs.map((ip) => canonicalIP(ip, family)).filter((ip): ip is string => ip !== undefined))];
  const cidrs = config.nodePortAddresses
    .filter((a) => a !== 'primary')
    .map((a) => parseCIDR(a.trim(), { leadingZeros: true }))
    .filter((c) => c !== null && c.family === family);
  const primary = config.nodePortAddresses.includes('primary');
  let out: string[];
  if ((!primary && cidrs.length === 0) || cidrs.some((c) => c!.prefix === 0)) out = nodeIPs;
  else {
    out = primary && nodeIPs[0] ? [nodeIPs[0]] : [];
    for (const ip of nodeIPs) {
      const p = parseIP(ip, { v4Mapped: true });
      if (p && cidrs.some((c) => cidrContains(c!, p))) out.push(ip);
    }
  }
  return [...new Set(out)].filter((ip) => !isLoopback(ip));
}

/** Real servers for endpoints: canonical, deduplicated, sorted, weight 1. */
function realServers(eps: Endpoint[], family: IPFamily): RealServer[] {
  const seen = new Map<string, RealServer>();
  for (const e of eps) {
    const address = canonicalIP(e.ip, family);
    if (!address || !validPort(e.port)) continue;
    seen.set(`${address} ${e.port}`, { address, port: e.port, weight: 1 });
  }
  return [...seen.values()].sort((a, b) => compare(a.address, b.address) || a.port - b.port);
}

function ipList(ips: string[], family: IPFamily): string[] | undefined {
  const out = ips.map((ip) => canonicalIP(ip, family));
  return out.every((ip) => ip !== undefined) ? [...new Set(out as string[])] : undefined;
}

/** What every service port's render shares: the configuration, resolved once. */
export interface IpvsContext {
  options: IpvsOptions;
  family: IPFamily;
  scheduler: Scheduler;
  /** Addresses that serve NodePorts. */
  nodeAddrs: string[];
  /** Every node address (canonical): never bound to kube-ipvs0. */
  nodeIPs: Set<string>;
  nodeIP: string | undefined;
}

/** Fragment collections besides the ipsets (keyed by base name): kube-ipvs0's addresses and chain rules. */
export const DUMMY = 'dummy';
export const NO_ENDPOINT_RULES = 'no-endpoint-rules';
export const OUT_FILTER_RULES = 'out-filter-rules';

/** Collections a chain's text depends on: their items, or whether a set is empty. */
export const CHAIN_INPUTS = new Set([NO_ENDPOINT_RULES, OUT_FILTER_RULES, ...IPSET_SPECS.map((s) => s.name)]);

export type IpvsFragment = Fragment<VirtualServer>;

/** Resolves the configuration. Throws only for an unknown scheduler (a configuration error). */
export function renderContext(options: IpvsOptions): IpvsContext {
  const family = options.family;
  const nodeIPs = options.nodeIPs.map((ip) => canonicalIP(ip, family)).filter((ip): ip is string => ip !== undefined);
  return {
    options,
    family,
    scheduler: parseScheduler(options.scheduler),
    nodeAddrs: nodePortAddresses(options),
    nodeIPs: new Set(nodeIPs),
    nodeIP: nodeIPs[0],
  };
}

/** Builds one service port's fragment; chain rules carry `<key> <index>` so a full ruleset lists them in service order. */
class FragmentBuilder {
  readonly frag: IpvsFragment = emptyFragment();
  private readonly rules = new Set<string>();
  constructor(private readonly key: string) {}
  set(base: string, entry: string): void {
    this.frag.items.push(base, entry, undefined);
  }
  dummy(ip: string): void {
    this.frag.items.push(DUMMY, ip, undefined, IPVS_IPS, ip, undefined);
  }
  rule(collection: string, text: string): void {
    if (this.rules.has(text)) return;
    this.rules.add(text);
    this.frag.items.push(collection, text, `${this.key} ${String(this.rules.size).padStart(6, '0')}`);
  }
}

const NAME = /^[A-Za-z0-9._/:-]+$/;

/** One service port's fragment; a port with invalid data renders nothing (the model logs why). */
export function renderServicePort(key: string, s: ServicePortState, ctx: IpvsContext): IpvsFragment {
  const out = new FragmentBuilder(key);
  renderInto(s, ctx, out);
  return out.frag;
}

function renderInto(s: ServicePortState, acc: IpvsContext, out: FragmentBuilder): void {
  const info = s.info;
  const family = acc.family;
  // Comments carry the name: it must fit the kernel's comment limit with our longest wording.
  if (!['TCP', 'UDP', 'SCTP'].includes(info.protocol) || !NAME.test(info.name) || info.name.length > MAX_COMMENT - 64) return;
  if (!validPort(info.port) || (info.nodePort !== 0 && !validPort(info.nodePort))) return;
  if (info.healthCheckNodePort !== 0 && !validPort(info.healthCheckNodePort)) return;
  const clusterIP = info.clusterIP === '' ? undefined : canonicalIP(info.clusterIP, family);
  const externalIPs = ipList(info.externalIPs, family);
  const lbIPs = ipList(info.loadBalancerIPs, family);
  if ((info.clusterIP !== '' && !clusterIP) || !externalIPs || !lbIPs) return;

  const protocol = info.protocol;
  const proto = protocol.toLowerCase();
  const name = info.name;
  const timeout = info.sessionAffinity.clientIPTimeoutSeconds;
  const persistence = timeout !== undefined && Number.isInteger(timeout) && timeout > 0 ? timeout : undefined;
  const internal = realServers(info.internalPolicyLocal ? s.localEndpoints : s.clusterEndpoints, family);
  const external = realServers(info.externalPolicyLocal ? s.localEndpoints : s.clusterEndpoints, family);
  const hasEndpoints = s.hasAnyEndpoints || internal.length > 0 || external.length > 0;
  const virtualServer = (address: string, port: number, rs: RealServer[]): void => {
    out.frag.objects.push({
      protocol,
      address,
      port,
      scheduler: acc.scheduler,
      ...(persistence !== undefined ? { persistenceTimeoutSeconds: persistence } : {}),
      ...(acc.scheduler === 'mh' ? { schedulerFlags: ['mh-port'] } : {}),
      realServers: rs.map((r) => ({ ...r })),
    });
  };
  // Without usable endpoints: REJECT (nothing will answer); with endpoints elsewhere only
  // (Local policy): DROP, as the iptables mode does.
  const noEndpoints = (policyLocal: boolean, parts: { dst?: string; matches: string[] }, port: number): void => {
    const local = hasEndpoints && policyLocal;
    const text = local ? `${name} has no local endpoints` : `${name} has no endpoints`;
    const jump = local ? 'DROP' : `REJECT --reject-with ${family === 'IPv6' ? 'icmp6' : 'icmp'}-port-unreachable`;
    out.rule(NO_ENDPOINT_RULES, rule({ dst: parts.dst, proto, matches: [comment(text), ...parts.matches, `-m ${proto} --dport ${port}`], jump }));
  };

  if (clusterIP) {
    out.set(CLUSTER_IP, ipPortEntry(clusterIP, protocol, info.port));
    out.dummy(clusterIP);
    virtualServer(clusterIP, info.port, internal);
    if (internal.length === 0) noEndpoints(info.internalPolicyLocal, { dst: `-d ${hostCIDR(clusterIP, family)}`, matches: [] }, info.port);
  }
  for (const ip of externalIPs) {
    out.set(info.externalPolicyLocal ? EXTERNAL_IP_LOCAL : EXTERNAL_IP, ipPortEntry(ip, protocol, info.port));
    // An address another interface already holds must not be bound again (removing it later would break the node).
    if (!acc.nodeIPs.has(ip)) out.dummy(ip);
    virtualServer(ip, info.port, external);
    if (external.length === 0) noEndpoints(info.externalPolicyLocal, { dst: `-d ${hostCIDR(ip, family)}`, matches: [] }, info.port);
  }
  const denyAll = info.sourceRangesDenyAll === true;
  const ranges = denyAll ? [] : [...new Set(info.loadBalancerSourceRanges.map((c) => canonicalCIDR(c, family)).filter((c): c is string => !!c))];
  // Ranges given but none usable: fail closed (the LB IP is firewalled with nothing allowed).
  // Without endpoints there is no firewall: every client is rejected alike, as in the other modes.
  const firewalled = hasEndpoints && (denyAll || ranges.length > 0 || info.loadBalancerSourceRanges.length > 0);
  const nodeIP = acc.nodeIP ? parseIP(acc.nodeIP, { v4Mapped: true }) : null;
  const allowFromNode = nodeIP !== null && ranges.some((r) => cidrContains(parseCIDR(r, { v4Mapped: true })!, nodeIP));
  const full = family === 'IPv6' ? 128 : 32;
  for (const ip of lbIPs) {
    const entry = ipPortEntry(ip, protocol, info.port);
    out.set(LOAD_BALANCER, entry);
    if (info.externalPolicyLocal) out.set(LOAD_BALANCER_LOCAL, entry);
    if (firewalled) {
      out.set(LOAD_BALANCER_FW, entry);
      for (const r of ranges) out.set(LOAD_BALANCER_SOURCE_CIDR, ipPortIpEntry(ip, protocol, info.port, r.endsWith(`/${full}`) ? r.split('/')[0]! : r));
      // The node reaching its own LB IP has that IP as source: allowed only if the node is in range.
      if (allowFromNode) out.set(LOAD_BALANCER_SOURCE_IP, ipPortIpEntry(ip, protocol, info.port, ip));
      else {
        const vaddr = hostCIDR(ip, family);
        const vproto = { tcp: 6, udp: 17, sctp: 132 }[proto as 'tcp' | 'udp' | 'sctp'];
        // --vaddr without its host mask: iptables-save prints it so, and the kernel check compares text.
        out.rule(OUT_FILTER_RULES, rule({ src: `-s ${vaddr}`, matches: [`-m ipvs --vproto ${vproto} --vaddr ${ip} --vport ${info.port}`], jump: 'DROP' }));
      }
    }
    if (!acc.nodeIPs.has(ip)) out.dummy(ip);
    virtualServer(ip, info.port, external);
    if (external.length === 0) noEndpoints(info.externalPolicyLocal, { dst: `-d ${hostCIDR(ip, family)}`, matches: [] }, info.port);
  }
  if (info.nodePort > 0 && acc.nodeAddrs.length > 0) {
    const sets = NODE_PORT_SETS[protocol];
    const entries = protocol === 'SCTP' ? acc.nodeAddrs.map((a) => ipPortEntry(a, protocol, info.nodePort)) : [String(info.nodePort)];
    for (const e of entries) {
      out.set(sets.all, e);
      if (info.externalPolicyLocal) out.set(sets.local, e);
    }
    for (const a of acc.nodeAddrs) virtualServer(a, info.nodePort, external);
    if (external.length === 0) noEndpoints(info.externalPolicyLocal, { matches: ['-m addrtype --dst-type LOCAL'] }, info.nodePort);
  }
  if (info.healthCheckNodePort > 0) out.set(HEALTH_CHECK_NODE_PORT, String(info.healthCheckNodePort));
  // Hairpin: a local endpoint reaching itself through a service must see another source.
  for (const rs of realServers(s.endpoints.filter((e) => e.isLocal), family)) {
    out.set(LOOP_BACK, ipPortIpEntry(rs.address, protocol, rs.port, rs.address));
  }
}

export function vsKey(v: Pick<VirtualServer, 'protocol' | 'address' | 'port'>): string {
  return `${v.protocol} ${v.address} ${v.port}`;
}

/** Two service ports on one address and port (a conflict the model should have resolved): the smallest service key wins. */
export const VIRTUAL_SERVERS: ObjectKind<VirtualServer> = {
  id: vsKey,
  same: (a, b) => JSON.stringify(a) === JSON.stringify(b),
};

/** A fragment store with every collection of the mode. */
export function newStore(): FragmentStore<VirtualServer> {
  return new FragmentStore(VIRTUAL_SERVERS, [...IPSET_SPECS.map((s) => s.name), DUMMY, NO_ENDPOINT_RULES, OUT_FILTER_RULES]);
}

/** A chain-rule collection in service order. */
function orderedRules(store: FragmentStore<VirtualServer>, collection: string): string[] {
  return [...store.items(collection)].sort((a, b) => compare(a[1]!, b[1]!)).map(([r]) => r);
}

/** The chains for what the store holds. */
export function storeChains(store: FragmentStore<VirtualServer>, ctx: IpvsContext): IptChain[] {
  return buildChains(ctx.options, {
    nonEmpty: (base) => store.items(base).size > 0,
    noEndpointRules: orderedRules(store, NO_ENDPOINT_RULES),
    outFilterRules: orderedRules(store, OUT_FILTER_RULES),
  });
}

/** The whole ruleset of what the store holds. */
export function storeRuleset(store: FragmentStore<VirtualServer>, ctx: IpvsContext): IpvsRuleset {
  const family = ctx.family;
  const sets = new IpsetBuilder();
  for (const spec of IPSET_SPECS) for (const e of store.items(spec.name).keys()) sets.add(spec.name, e);
  return {
    family,
    dummyAddresses: [...store.items(DUMMY).keys()].sort(compare),
    virtualServers: store.objects().sort((a, b) => compare(a.protocol, b.protocol) || compare(a.address, b.address) || a.port - b.port),
    ipsets: sets.build(family),
    iptables: { family, chains: storeChains(store, ctx) },
    jumps: ipvsJumpRules(),
    excludeCIDRs: [...new Set((ctx.options.excludeCIDRs ?? []).map((c) => canonicalCIDR(c, family)).filter((c): c is string => !!c))],
  };
}

/** Full render. Throws only for an unknown scheduler (a configuration error). */
export function renderIpvs(snapshot: Snapshot, options: IpvsOptions): IpvsRuleset {
  const ctx = renderContext(options);
  const store = newStore();
  store.update(snapshot.services.keys(), (k) => renderServicePort(k, snapshot.services.get(k)!, ctx), false);
  return storeRuleset(store, ctx);
}
