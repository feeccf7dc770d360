// Pure rendering of a Snapshot into the nftables layout of docs/nftables-layout.md (layout.ts): no
// I/O, no clock, no randomness. `renderServicePort` gives one service port's elements and chains,
// `render` a whole structured ruleset; script.ts turns a whole one into `nft -f` text.
// Element-level diffs and chunking live in diff.ts.
//
// Rule strings of the per-service chains of ClientIP affinity (<f> is `ip` or `ip6`; the fixed and
// shape chains are listed in layout.ts):
//   masquerade   [<cond>] jump mark-for-masquerade
//                  <cond>: <f> daddr <clusterIP> [<f> saddr != { cidrs } | iifname != "<name>"] | fib saddr type local
//   verdicts     [<cond>] goto <chain> | drop
//                  <cond>: fib saddr type local | <f> saddr { cidrs } | iifname "<name>"
//   affinity     <key> @affinity-clients <pin>             (one per endpoint: a client already pinned)
//                [numgen random mod K 0] <pin>             (one per endpoint: K = n, n-1, …, 2, then none)
//                  <key>: <f> saddr . numgen random mod 1 offset <tag>   (<tag>: the endpoint's, see affinityTag)
//                  <pin>: update @affinity-clients { <key> timeout <t>s } meta l4proto <proto> dnat <f> to <ip>:<port>
//                         (IPv6: [<ip>]:<port>)
import type { BackendConfig } from '../types.js';
import type { Endpoint, ServicePortState, Snapshot } from '../../model/types.js';
import { canonicalCIDR, canonicalIP, cidrContains } from './addr.js';
import { affinityTag, endpointBase, hashedName, servicePortBase } from './names.js';
import {
  AFFINITY_SET,
  CLUSTER_SLOT_OFFSET,
  PROTOCOLS,
  TABLE,
  baseChains,
  baseSets,
  endpointMap,
  servicesChain,
  shapeChain,
  splitDispatch,
  type Fragment,
  type NftChain,
  type NftFamily,
  type NftProto,
  type NftRuleset,
  type RenderContext,
} from './layout.js';

export function renderContext(config: BackendConfig): RenderContext {
  const v6 = config.family === 'IPv6';
  const f: NftFamily = v6 ? 'ip6' : 'ip';
  const ctx: RenderContext = {
    f,
    v6,
    addrType: v6 ? 'ipv6_addr' : 'ipv4_addr',
    mark: '0x' + (1 << config.masqueradeBit).toString(16),
    masqueradeAll: config.masqueradeAll,
    nodePortIPs: [],
    nodeIPs: [],
  };
  switch (config.detectLocalMode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': {
      const cidrs = uniq(config.localCIDRs.map((c) => canonicalCIDR(c, v6)));
      if (cidrs.length > 0) {
        ctx.localCond = `${f} saddr { ${cidrs.join(', ')} }`;
        ctx.nonLocalCond = `${f} saddr != { ${cidrs.join(', ')} }`;
      }
      break;
    }
    case 'BridgeInterface':
      if (validIfname(config.bridgeInterface)) {
        ctx.localCond = `iifname "${config.bridgeInterface}"`;
        ctx.nonLocalCond = `iifname != "${config.bridgeInterface}"`;
      }
      break;
    case 'InterfaceNamePrefix':
      if (validIfname(config.interfaceNamePrefix)) {
        ctx.localCond = `iifname "${config.interfaceNamePrefix}*"`;
        ctx.nonLocalCond = `iifname != "${config.interfaceNamePrefix}*"`;
      }
      break;
  }
  ctx.nodeIPs = uniq(config.nodeIPs.map((ip) => canonicalIP(ip, v6)));
  // As upstream's nftables mode: CIDRs select node IPs, `primary` or nothing means the primary IP.
  const cidrs = config.nodePortAddresses.filter((a) => a !== 'primary');
  const np: Array<string | undefined> = [];
  if (config.nodePortAddresses.length === 0 || config.nodePortAddresses.includes('primary')) np.push(ctx.nodeIPs[0]);
  for (const ip of ctx.nodeIPs) if (cidrs.some((c) => cidrContains(c, ip))) np.push(ip);
  ctx.nodePortIPs = uniq(np);
  return ctx;
}

function validIfname(name: string): boolean {
  return /^[A-Za-z0-9_.:@-]{1,15}$/.test(name);
}

function uniq(xs: Array<string | undefined>): string[] {
  return [...new Set(xs.filter((x): x is string => x !== undefined))];
}

interface Ep {
  ip: string;
  port: number;
  text: string;
}

function sortedEndpoints(eps: Endpoint[], v6: boolean): Ep[] {
  const out: Ep[] = [];
  let ordered = true;
  for (const e of eps) {
    const ip = canonicalIP(e.ip, v6);
    if (!ip || !Number.isInteger(e.port) || e.port < 1 || e.port > 65535) continue;
    const text = `${ip} . ${e.port}`;
    if (ordered && out.length > 0 && !(out[out.length - 1]!.text < text)) ordered = false;
    out.push({ ip, port: e.port, text });
  }
  // Usually already unique and in order; otherwise deduplicate by text and sort.
  if (ordered) return out;
  return [...new Map(out.map((e) => [e.text, e])).values()].sort((x, y) => (x.text < y.text ? -1 : x.text > y.text ? 1 : 0));
}

/** CIDRs nest or are disjoint: keep only those no other one contains (interval sets refuse overlaps). */
function outermostCIDRs(cidrs: string[]): string[] {
  return cidrs.filter((c) => !cidrs.some((o) => o !== c && cidrContains(o, c.split('/')[0]!) && prefixLength(o) < prefixLength(c)));
}

function prefixLength(cidr: string): number {
  return Number(cidr.split('/')[1]);
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 1 && p <= 65535;
}

const NO_IPS: ReadonlySet<string> = new Set();

function addShape(frag: Fragment, shape: string): void {
  if (!frag.shapes.includes(shape)) frag.shapes.push(shape);
}

/** Renders one service port. Ports with an unusable ClusterIP or port render nothing. */
export function renderServicePort(s: ServicePortState, ctx: RenderContext): Fragment {
  const frag: Fragment = { elements: [], chains: [], shapes: [] };
  const info = s.info;
  const proto = info.protocol.toLowerCase() as NftProto;
  if (!PROTOCOLS.includes(proto) || !validPort(info.port)) return frag;
  const v6 = ctx.v6;
  const el = (set: string, key: string, value?: string): void => {
    frag.elements.push(set, key, value);
  };
  const clusterIP = info.clusterIP ? canonicalIP(info.clusterIP, v6) : undefined;
  const cluster = sortedEndpoints(s.clusterEndpoints, v6);
  const local = sortedEndpoints(s.localEndpoints, v6);
  const internal = info.internalPolicyLocal ? local : cluster;
  const extLocal = info.externalPolicyLocal;
  // Locally originated traffic under Local policy uses the cluster endpoints (local ones if none).
  const extCluster = extLocal && cluster.length === 0 ? local : cluster;
  const extIPs = uniq([...info.externalIPs, ...info.loadBalancerIPs].map((ip) => canonicalIP(ip, v6))).filter(
    (ip) => ip !== clusterIP,
  );
  const lbIPs = info.loadBalancerIPs.length > 0 ? new Set(uniq(info.loadBalancerIPs.map((ip) => canonicalIP(ip, v6)))) : NO_IPS;
  const nodePort = validPort(info.nodePort) && ctx.nodePortIPs.length > 0 ? info.nodePort : 0;
  const extHasEndpoints = extLocal ? local.length > 0 || extCluster.length > 0 : cluster.length > 0;

  const used = new Map<string, Ep>();
  const use = (eps: Ep[]): void => {
    for (const e of eps) used.set(e.text, e);
  };

  const affinity = info.sessionAffinity.clientIPTimeoutSeconds;
  const aff = affinity !== undefined && affinity > 0 ? renderAffinity(s, ctx, clusterIP, internal, cluster, local, extHasEndpoints, frag) : undefined;

  const noEndpointVerdict = (policyLocal: boolean, any: boolean): string => (policyLocal && any ? 'drop' : 'goto reject-chain');
  const fillSlots = (
    map: string,
    prefix: string,
    eps: Ep[],
    offset: number,
  ): void => {
    for (let i = 0; i < eps.length; i++) el(map, `${prefix} . ${offset + i}`, eps[i]!.text);
    use(eps);
  };

  if (clusterIP) {
    el('cluster-ips', clusterIP);
    const tuple = `${clusterIP} . ${proto} . ${info.port}`;
    if (internal.length > 0) {
      if (aff) {
        el('service-ips', tuple, `goto ${aff.internalChain}`);
        use(internal);
      } else {
        const shape = `cluster-${internal.length}`;
        fillSlots(endpointMap('service', proto), tuple, internal, 0);
        el('service-ips', tuple, `goto ${shape}`);
        addShape(frag, shape);
      }
    } else {
      el('no-endpoint-services', tuple, noEndpointVerdict(info.internalPolicyLocal, cluster.length > 0));
    }
  }

  const externalTuple = (tuple: string, kind: 'external' | 'nodeport'): void => {
    const dataMap = endpointMap(kind === 'external' ? 'service' : 'nodeport', proto);
    const verdictMap = kind === 'external' ? 'service-ips' : 'service-nodeports';
    if (!extHasEndpoints) {
      el(kind === 'external' ? 'no-endpoint-services' : 'no-endpoint-nodeports', tuple, 'goto reject-chain');
      return;
    }
    if (aff) {
      el(verdictMap, tuple, `goto ${aff.externalChain}`);
      use(extLocal ? [...local, ...extCluster] : cluster);
      return;
    }
    let shape: string;
    if (extLocal) {
      shape = `${kind}-local-${local.length}-${extCluster.length}`;
      fillSlots(dataMap, tuple, local, 0);
      fillSlots(dataMap, tuple, extCluster, CLUSTER_SLOT_OFFSET);
    } else {
      shape = `${kind}-${cluster.length}`;
      fillSlots(dataMap, tuple, cluster, 0);
    }
    el(verdictMap, tuple, `goto ${shape}`);
    addShape(frag, shape);
  };

  for (const ip of extIPs) {
    const tuple = `${ip} . ${proto} . ${info.port}`;
    externalTuple(tuple, 'external');
    // With sourceRangesDenyAll the LB IP gets a firewall entry and no allowed source: all dropped.
    // Without endpoints there is no firewall: every client is rejected alike (upstream's iptables
    // mode does the same), and the modes agree.
    if (extHasEndpoints && lbIPs.has(ip) && (info.loadBalancerSourceRanges.length > 0 || info.sourceRangesDenyAll === true)) {
      const ranges = outermostCIDRs(uniq(info.loadBalancerSourceRanges.map((c) => canonicalCIDR(c, v6))));
      el('firewall-ips', tuple);
      for (const r of ranges) el('firewall-allow', `${tuple} . ${r}`);
      // Traffic the node itself sends to its LB IP arrives with the LB IP as source. An interval
      // set rejects overlapping elements, so it is added only when no range covers it already.
      const nodeInRange = ctx.nodeIPs.some((n) => ranges.some((r) => cidrContains(r, n)));
      if (nodeInRange && !ranges.some((r) => cidrContains(r, ip))) el('firewall-allow', `${tuple} . ${ip}`);
    }
  }
  if (nodePort) externalTuple(`${proto} . ${nodePort}`, 'nodeport');

  for (const e of used.values()) el('hairpin', `${e.ip} . ${e.ip}`);
  return frag;
}

interface AffinityChains {
  internalChain: string;
  externalChain: string;
}

/** Upstream-style per-service chains for ClientIP affinity; fills frag.chains. */
function renderAffinity(
  s: ServicePortState,
  ctx: RenderContext,
  clusterIP: string | undefined,
  internal: Ep[],
  cluster: Ep[],
  local: Ep[],
  extHasEndpoints: boolean,
  frag: Fragment,
): AffinityChains {
  const info = s.info;
  const f = ctx.f;
  const proto = info.protocol.toLowerCase();
  const base = servicePortBase(info);
  const serviceChain = `service-${hashedName(base)}`;
  const localChain = `local-${hashedName(base)}`;
  const externalChain = `external-${hashedName(base)}`;
  // The timeout goes with each update, not the set: a changed timeout is then a rule change.
  const timeout = info.sessionAffinity.clientIPTimeoutSeconds!;
  const affinityKey = (e: Ep): string =>
    // nft 1.0.6 cannot parse a constant inside a concatenated lookup key; this expression always
    // evaluates to the endpoint's tag.
    `${f} saddr . numgen random mod 1 offset ${affinityTag(endpointBase(base, e.ip, e.port))}`;
  const pinAndDnat = (e: Ep, key: string): string =>
    `update @${AFFINITY_SET} { ${key} timeout ${timeout}s } meta l4proto ${proto} dnat ${f} to ${ctx.v6 ? `[${e.ip}]` : e.ip}:${e.port}`;
  // A client already pinned to an endpoint goes there; any other picks one at random as
  // upstream's iptables mode does (1/n, then 1/(n-1), …, the last unconditional) and is pinned
  // to it. No chain per endpoint: nft reads every chain of the ruleset at each command.
  const lbRules = (eps: Ep[]): string[] => {
    if (eps.length === 0) return ['drop'];
    const keys = eps.map(affinityKey);
    const rules = eps.map((e, i) => `${keys[i]} @${AFFINITY_SET} ${pinAndDnat(e, keys[i]!)}`);
    eps.forEach((e, i) => {
      const left = eps.length - i;
      rules.push(`${left > 1 ? `numgen random mod ${left} 0 ` : ''}${pinAndDnat(e, keys[i]!)}`);
    });
    return rules;
  };
  const clusterMasq: string[] = [];
  if (clusterIP) {
    if (ctx.masqueradeAll) clusterMasq.push(`${f} daddr ${clusterIP} jump mark-for-masquerade`);
    else if (ctx.nonLocalCond) clusterMasq.push(`${f} daddr ${clusterIP} ${ctx.nonLocalCond} jump mark-for-masquerade`);
  }
  const internalChain = info.internalPolicyLocal ? localChain : serviceChain;
  const referenced = new Set<string>();
  if (clusterIP && internal.length > 0) referenced.add(internalChain);
  let externalRules: string[] | undefined;
  const hasExternal = info.externalIPs.length > 0 || info.loadBalancerIPs.length > 0 || info.nodePort > 0;
  if (hasExternal && extHasEndpoints) {
    const rules: string[] = [];
    if (!info.externalPolicyLocal) {
      rules.push('jump mark-for-masquerade', `goto ${serviceChain}`);
      referenced.add(serviceChain);
    } else {
      const clusterSide = cluster.length > 0 ? serviceChain : localChain;
      referenced.add(clusterSide);
      rules.push('fib saddr type local jump mark-for-masquerade', `fib saddr type local goto ${clusterSide}`);
      if (ctx.localCond) rules.push(`${ctx.localCond} goto ${clusterSide}`);
      if (local.length > 0) {
        rules.push(`goto ${localChain}`);
        referenced.add(localChain);
      } else {
        rules.push('drop');
      }
    }
    externalRules = rules;
  }
  if (referenced.has(serviceChain)) {
    frag.chains.push({ name: serviceChain, rules: [...(info.internalPolicyLocal ? [] : clusterMasq), ...lbRules(cluster)] });
  }
  if (referenced.has(localChain)) {
    frag.chains.push({ name: localChain, rules: [...(info.internalPolicyLocal ? clusterMasq : []), ...lbRules(local)] });
  }
  // After the chains it goes to, as the transaction needs.
  if (externalRules) frag.chains.push({ name: externalChain, rules: externalRules });
  return { internalChain, externalChain };
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Merges fragments into a ruleset. When two service ports claim the same element (e.g. the same
 * external IP and port), the one with the smaller key wins, as in a full render.
 */
export function render(snapshot: Snapshot, config: BackendConfig): NftRuleset {
  const ctx = renderContext(config);
  const sets = baseSets(ctx);
  const byName = new Map(sets.map((s) => [s.name, s]));
  const chains = baseChains(ctx);
  const shapes = new Set<string>();
  const extraChains: NftChain[] = [];
  const seenChains = new Set(chains.map((c) => c.name));
  for (const key of [...snapshot.services.keys()].sort(compareKeys)) {
    const frag = renderServicePort(snapshot.services.get(key)!, ctx);
    for (const sh of frag.shapes) shapes.add(sh);
    const els = frag.elements;
    for (let i = 0; i < els.length; i += 3) {
      const s = byName.get(els[i]!)!;
      if (!s.elements.has(els[i + 1]!)) s.elements.set(els[i + 1]!, els[i + 2]);
    }
    for (const c of frag.chains) {
      if (seenChains.has(c.name)) continue;
      seenChains.add(c.name);
      extraChains.push(c);
    }
  }
  const sorted = [...shapes].sort(compareKeys);
  const shapeChains = sorted.map((n) => shapeChain(n, ctx));
  const base = chains.map((c) => (c.name === 'services' ? servicesChain(ctx, sorted) : c));
  return { family: ctx.f, table: TABLE, sets: splitDispatch(sets, sorted, ctx), chains: [...shapeChains, ...extraChains, ...base] };
}
