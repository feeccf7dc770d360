// Pure rendering of a Snapshot into upstream kube-proxy's iptables layout (one instance per IP
// family): no I/O, no clock, no randomness. Every rule is written in the canonical form
// iptables-save prints back (see syntax.ts), so the kernel's listing compares equal.
//
// nat    KUBE-SERVICES (from PREROUTING, OUTPUT)  → KUBE-SVC-* / KUBE-SVL-* (cluster IP),
//        KUBE-EXT-* (external IPs, LB IPs through KUBE-FW-* when source ranges are set),
//        last rule → KUBE-NODEPORTS (node addresses) → KUBE-EXT-*;
//        KUBE-SVC-* / KUBE-SVL-* → KUBE-SEP-* (statistic, ClientIP affinity) → DNAT;
//        KUBE-MARK-MASQ sets the mark, KUBE-POSTROUTING (from POSTROUTING) masquerades marked.
// filter KUBE-SERVICES (FORWARD, OUTPUT; new connections): services without (local) endpoints,
//        then KUBE-CLUSTER-IPS: connections still addressed to a cluster IP after DNAT are on
//        a port the service does not have, and are rejected (as our nftables mode does);
//        KUBE-EXTERNAL-SERVICES (INPUT, FORWARD, OUTPUT): external addresses without endpoints;
//        KUBE-NODEPORTS (INPUT): health-check node ports; KUBE-PROXY-FIREWALL: LB traffic
//        not accepted by its source ranges; KUBE-FORWARD; KUBE-FIREWALL (localhost NodePorts).
// KUBE-PROXY-CANARY in mangle, nat and filter holds one marker rule: a flush empties it, a
// chain deletion removes it; either way the apply layer sees a dead canary and resyncs.
import type { BackendConfig } from '../types.js';
import type { Endpoint, IPFamily, ServicePortState, Snapshot } from '../../model/types.js';
import { emptyFragment, type Fragment } from '../common/fragment.js';
import { textDigest } from '../common/hash.js';
import { cidrContains, parseCIDR, parseIP } from '../../net/ip.js';
import {
  CLUSTER_IPS,
  EXTERNAL_SERVICES,
  MARK_MASQ,
  NODEPORTS,
  PROXY_FIREWALL,
  SERVICES,
  baseChains,
  renderContext,
  type IptContext,
} from './base.js';
import { endpointChainName, serviceChainNames } from './names.js';
import { BalancingChain, EndpointChain, type EndpointShape } from './service-chains.js';
import { MAX_COMMENT, canonicalCIDR, canonicalIP, comment, hostCIDR, joinHostPort, rule, type IptChain, type IptRuleset, type IptTable } from './syntax.js';

export { baseChains, jumpRules, renderContext, type IptContext } from './base.js';
export { toRestoreInput, toRestorePieces, type IptChain, type IptRuleset, type IptTable } from './syntax.js';

/** Upstream's threshold: past this many endpoints, per-endpoint rule comments are dropped. */
const LARGE_CLUSTER_ENDPOINTS = 1000;

export function isLargeCluster(snapshot: Snapshot): boolean {
  let n = 0;
  for (const s of snapshot.services.values()) n += s.endpoints.length;
  return n > LARGE_CLUSTER_ENDPOINTS;
}

const PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);
const NAME = /^[A-Za-z0-9._/:-]+$/;

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 1 && p <= 65535;
}

export interface Ep {
  ip: string;
  port: number;
  /** `ip:port` / `[ip]:port`. */
  text: string;
}

/** Usable endpoints, canonical, deduplicated, in upstream's order (by endpoint text). */
export function usable(eps: readonly Endpoint[], family: IPFamily): Ep[] {
  return usableAs(eps, family, (e, ip, text) => ({ ip, port: e.port, text }));
}

/** The same selection and order as `usable`, each entry made by `make` from its canonical address. */
export function usableAs<T>(eps: readonly Endpoint[], family: IPFamily, make: (e: Endpoint, ip: string, text: string) => T): T[] {
  const seen = new Map<string, T>();
  for (const e of eps) {
    const ip = canonicalIP(e.ip, family);
    if (!ip || !validPort(e.port)) continue;
    const text = joinHostPort(ip, e.port);
    seen.set(text, make(e, ip, text));
  }
  return [...seen.entries()].sort((a, b) => compareKeys(a[0], b[0])).map((entry) => entry[1]);
}

/** Canonical IPs of the family; undefined when any is invalid. */
function ipList(ips: string[], family: IPFamily): string[] | undefined {
  const out = ips.map((ip) => canonicalIP(ip, family));
  return out.every((ip) => ip !== undefined) ? [...new Set(out as string[])] : undefined;
}

/** Fields of a service port every rule relies on; undefined when the port cannot be rendered safely. */
export function validated(s: ServicePortState, ctx: Pick<IptContext, 'family'>) {
  const info = s.info;
  const proto = info.protocol.toLowerCase();
  // Comments carry the names: they must fit the kernel's limit with upstream's longest wording.
  if (!PROTOCOLS.has(proto) || info.name.length > MAX_COMMENT - 64) return undefined;
  if (![info.name, info.namespace, info.serviceName].every((n) => NAME.test(n))) return undefined;
  if (!validPort(info.port)) return undefined;
  if (info.nodePort !== 0 && !validPort(info.nodePort)) return undefined;
  if (info.healthCheckNodePort !== 0 && !validPort(info.healthCheckNodePort)) return undefined;
  const clusterIP = info.clusterIP === '' ? undefined : canonicalIP(info.clusterIP, ctx.family);
  if (info.clusterIP !== '' && !clusterIP) return undefined;
  const externalIPs = ipList(info.externalIPs, ctx.family);
  const lbIPs = ipList(info.loadBalancerIPs, ctx.family);
  if (!externalIPs || !lbIPs) return undefined;
  const ranges = [...new Set(info.loadBalancerSourceRanges.map((c) => canonicalCIDR(c, ctx.family)).filter((c): c is string => !!c))];
  // Ranges given but none usable: fail closed rather than open to everyone.
  const denyAll = info.sourceRangesDenyAll === true || (info.loadBalancerSourceRanges.length > 0 && ranges.length === 0);
  return { info, proto, clusterIP, externalIPs, lbIPs, ranges: denyAll ? [] : ranges, firewalled: denyAll || ranges.length > 0 };
}

/**
 * What renderServicePort reads of a service port, as a number: equal for two states that render
 * the same chains (under one context). A restart from a checkpoint leaves the chains of a port
 * whose digest is unchanged unrendered: rendering and hashing the 110,000 chains of 10,000
 * services took ~1.5 s. Of the endpoints only the address and port are read (`usable`).
 */
export function renderInputsDigest(s: ServicePortState): number {
  let text = `${JSON.stringify(s.info)}\n${s.hasAnyEndpoints}\n`;
  for (const e of s.clusterEndpoints) text += `${e.ip} ${e.port},`;
  text += '\n';
  for (const e of s.localEndpoints) text += `${e.ip} ${e.port},`;
  return textDigest(text);
}

/** A service port that takes most of the render's paths: NodePort, LB IP with source ranges, affinity, Local policy. */
const REFERENCE_PORT: ServicePortState = (() => {
  const endpoint = (ip: string, isLocal: boolean): Endpoint => ({
    ip,
    port: 8080,
    ready: true,
    serving: true,
    terminating: false,
    isLocal,
    nodeName: isLocal ? 'this' : 'other',
    zone: '',
    hintsForZones: [],
    hintsForNodes: [],
  });
  const [local, remote] = [endpoint('10.0.0.2', true), endpoint('10.0.0.3', false)];
  return {
    info: {
      name: 'ns/reference:http',
      namespace: 'ns',
      serviceName: 'reference',
      portName: 'http',
      protocol: 'TCP',
      clusterIP: '10.96.0.10',
      port: 80,
      nodePort: 30080,
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: ['192.0.2.20'],
      loadBalancerSourceRanges: ['198.51.100.0/24'],
      sessionAffinity: { clientIPTimeoutSeconds: 10800 },
      externalPolicyLocal: true,
      internalPolicyLocal: false,
      healthCheckNodePort: 30081,
      trafficDistribution: '',
      type: 'LoadBalancer',
    },
    endpoints: [local, remote],
    clusterEndpoints: [local, remote],
    localEndpoints: [local],
    allReachableEndpoints: [local, remote],
    hasAnyEndpoints: true,
    localReadyCount: 1,
  };
})();

/**
 * The context as a number, with the render of a reference port: service port digests taken under
 * one context, or by a proxy that renders differently (another version), say nothing here.
 */
export function contextDigest(ctx: IptContext): number {
  const reference = renderServicePort(REFERENCE_PORT, ctx);
  return textDigest(JSON.stringify([ctx, reference.items, reference.objects.map((o) => [o.name, o.rules])]));
}

/**
 * One service port: rules it adds to shared chains as items (`table/chain`, rule, undefined)
 * and the chains it owns. A port with invalid data renders nothing.
 */
export function renderServicePort(s: ServicePortState, ctx: IptContext): Fragment<IptChain> {
  const frag = emptyFragment<IptChain>();
  const c = validated(s, ctx);
  if (!c) return frag;
  const { info, proto, clusterIP, externalIPs, lbIPs } = c;
  const name = info.name;
  const family = ctx.family;
  const item = (table: IptTable, chain: string, text: string): void => {
    frag.items.push(`${table}/${chain}`, text, undefined);
  };
  const own = (chain: string, rules: string[]): void => {
    frag.objects.push({ table: 'nat', name: chain, rules });
  };
  const dport = (port: number): string => `-m ${proto} --dport ${port}`;
  const to = (ip: string): string => `-d ${hostCIDR(ip, family)}`;

  const externallyAccessible = info.nodePort > 0 || externalIPs.length > 0 || lbIPs.length > 0;
  const externalLocal = info.externalPolicyLocal && externallyAccessible;
  const usesCluster = !info.internalPolicyLocal || externallyAccessible;
  const usesLocal = info.internalPolicyLocal || externalLocal;
  const cluster = usesCluster ? usable(s.clusterEndpoints, family) : [];
  const local = usesLocal ? usable(s.localEndpoints, family) : [];
  const hasEndpoints = s.hasAnyEndpoints || cluster.length > 0 || local.length > 0;

  const { svc: svcChain, svl: svlChain, ext: extChain, fw: fwChain } = serviceChainNames(name, proto);
  const internalChain = info.internalPolicyLocal ? svlChain : svcChain;
  const hasInternal = (info.internalPolicyLocal ? local : cluster).length > 0;
  const externalChainEps = externalLocal ? local : cluster;
  const hasExternal = externalChainEps.length > 0;
  const usesExt = hasEndpoints && externallyAccessible;
  const usesFW = hasEndpoints && lbIPs.length > 0 && c.firewalled;
  const lbTarget = usesFW ? fwChain : extChain;

  // Without usable endpoints: REJECT; with endpoints elsewhere only (Local policy): DROP.
  const noEndpoints = (policyLocal: boolean): { jump: string; text: string } =>
    hasEndpoints && policyLocal
      ? { jump: 'DROP', text: `${name} has no local endpoints` }
      : { jump: ctx.reject, text: `${name} has no endpoints` };

  if (clusterIP) {
    const parts = { dst: to(clusterIP), proto };
    if (hasInternal) {
      item('nat', SERVICES, rule({ ...parts, matches: [comment(`${name} cluster IP`), dport(info.port)], jump: internalChain }));
    } else {
      const v = noEndpoints(info.internalPolicyLocal);
      item('filter', SERVICES, rule({ ...parts, matches: [comment(v.text), dport(info.port)], jump: v.jump }));
    }
    item(
      'filter',
      CLUSTER_IPS,
      rule({ dst: to(clusterIP), matches: [comment(`${info.namespace}/${info.serviceName} cluster IP`)], jump: ctx.reject }),
    );
  }

  const extReject = noEndpoints(externalLocal);
  for (const ip of externalIPs) {
    const parts = { dst: to(ip), proto };
    if (hasEndpoints) item('nat', SERVICES, rule({ ...parts, matches: [comment(`${name} external IP`), dport(info.port)], jump: extChain }));
    if (!hasExternal) item('filter', EXTERNAL_SERVICES, rule({ ...parts, matches: [comment(extReject.text), dport(info.port)], jump: extReject.jump }));
  }
  for (const ip of lbIPs) {
    const parts = { dst: to(ip), proto };
    if (hasEndpoints) item('nat', SERVICES, rule({ ...parts, matches: [comment(`${name} loadbalancer IP`), dport(info.port)], jump: lbTarget }));
    if (usesFW) {
      const text = `${name} traffic not accepted by ${fwChain}`;
      item('filter', PROXY_FIREWALL, rule({ ...parts, matches: [comment(text), dport(info.port)], jump: 'DROP' }));
    }
    if (!hasExternal) item('filter', EXTERNAL_SERVICES, rule({ ...parts, matches: [comment(extReject.text), dport(info.port)], jump: extReject.jump }));
  }
  if (info.nodePort > 0) {
    if (hasEndpoints) item('nat', NODEPORTS, rule({ proto, matches: [comment(name), dport(info.nodePort)], jump: extChain }));
    if (!hasExternal) {
      const matches = [comment(extReject.text), '-m addrtype --dst-type LOCAL', dport(info.nodePort)];
      item('filter', EXTERNAL_SERVICES, rule({ proto, matches, jump: extReject.jump }));
    }
  }
  if (info.healthCheckNodePort > 0) {
    const matches = [comment(`${name} health check node port`), '-m tcp --dport ' + info.healthCheckNodePort];
    item('filter', NODEPORTS, rule({ proto: 'tcp', matches, jump: 'ACCEPT' }));
  }

  // Off-node traffic to the cluster IP may leave the node again towards an endpoint: masquerade.
  const clusterMasq: string[] = [];
  if (clusterIP && hasInternal && (ctx.masqueradeAll || ctx.ifNotLocal)) {
    const cond = ctx.masqueradeAll ? {} : ctx.ifNotLocal;
    clusterMasq.push(rule({ ...cond, dst: to(clusterIP), proto, matches: [comment(`${name} cluster IP`), dport(info.port)], jump: MARK_MASQ }));
  }

  const timeout = info.sessionAffinity.clientIPTimeoutSeconds;
  const affinity = timeout !== undefined && Number.isInteger(timeout) && timeout > 0 ? timeout : undefined;
  const shape: EndpointShape = { family, proto, name, bare: ctx.largeCluster, affinity };
  // One endpoint chain per endpoint, whether the cluster or the local chain (or both) uses it.
  const endpointChains = new Map<string, EndpointChain>();
  for (const e of [...cluster, ...local]) {
    if (!endpointChains.has(e.text)) endpointChains.set(e.text, new EndpointChain(endpointChainName(name, proto, e.text), e.text, shape));
  }
  const chainsOf = (eps: Ep[]): EndpointChain[] => eps.map((e) => endpointChains.get(e.text)!);

  if (usesExt) {
    const rules: string[] = [];
    if (!externalLocal) {
      rules.push(rule({ matches: [comment(`masquerade traffic for ${name} external destinations`)], jump: MARK_MASQ }));
    } else {
      // Traffic from this node behaves as if it went out to a load balancer and came back in:
      // it is subject to neither policy. Host traffic is masqueraded (its source is a node
      // address that the endpoint cannot answer), pod traffic keeps its source.
      const shortCircuit = cluster.length > 0 ? svcChain : local.length > 0 ? svlChain : undefined;
      if (shortCircuit) {
        if (ctx.ifLocal) rules.push(rule({ ...ctx.ifLocal, matches: [comment(`pod traffic for ${name} external destinations`)], jump: shortCircuit }));
        const srcLocal = '-m addrtype --src-type LOCAL';
        rules.push(rule({ matches: [comment(`masquerade LOCAL traffic for ${name} external destinations`), srcLocal], jump: MARK_MASQ }));
        rules.push(rule({ matches: [comment(`route LOCAL traffic for ${name} external destinations`), srcLocal], jump: shortCircuit }));
      }
    }
    if (hasExternal) rules.push(rule({ jump: externalLocal ? svlChain : svcChain }));
    own(extChain, rules);
  }

  if (usesFW) {
    const lb = comment(`${name} loadbalancer IP`);
    const rules = c.ranges.map((r) => rule({ src: `-s ${r}`, matches: [lb], jump: extChain }));
    // A request from the node to an LB IP that is also a local address loops back with the
    // LB IP as its source: allow it when the node itself is inside the source ranges.
    const nodeIP = ctx.nodeIP ? parseIP(ctx.nodeIP, { v4Mapped: true }) : null;
    const allowFromNode = nodeIP !== null && c.ranges.some((r) => cidrContains(parseCIDR(r, { v4Mapped: true })!, nodeIP));
    if (allowFromNode) for (const ip of lbIPs) rules.push(rule({ src: `-s ${hostCIDR(ip, family)}`, matches: [lb], jump: extChain }));
    rules.push(rule({ matches: [comment(`other traffic to ${name} will be dropped by ${PROXY_FIREWALL}`)] }));
    own(fwChain, rules);
  }

  if (cluster.length > 0) frag.objects.push(new BalancingChain(svcChain, info.internalPolicyLocal ? [] : clusterMasq, chainsOf(cluster), shape));
  if (local.length > 0) frag.objects.push(new BalancingChain(svlChain, info.internalPolicyLocal ? clusterMasq : [], chainsOf(local), shape));
  for (const text of [...endpointChains.keys()].sort(compareKeys)) frag.objects.push(endpointChains.get(text)!);
  return frag;
}

const chainId = (c: IptChain): string => `${c.table}/${c.name}`;

/** Full render: base chains with every service item before their fixed rules, then owned chains. */
export function render(snapshot: Snapshot, config: BackendConfig): IptRuleset {
  const ctx = renderContext(config, { largeCluster: isLargeCluster(snapshot) });
  const base = baseChains(ctx);
  const items = new Map<string, Set<string>>(base.map((c) => [chainId(c), new Set<string>()]));
  const owned = new Map<string, IptChain>();
  for (const key of [...snapshot.services.keys()].sort(compareKeys)) {
    const frag = renderServicePort(snapshot.services.get(key)!, ctx);
    for (let i = 0; i < frag.items.length; i += 3) items.get(frag.items[i]!)!.add(frag.items[i + 1]!);
    for (const o of frag.objects) if (!owned.has(chainId(o))) owned.set(chainId(o), o);
  }
  return {
    family: ctx.family,
    chains: [...base.map((c) => ({ ...c, rules: [...items.get(chainId(c))!, ...c.rules] })), ...owned.values()],
  };
}
