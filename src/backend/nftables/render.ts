// Pure rendering of a Snapshot into the nftables layout of docs/nftables-layout.md: no I/O,
// no clock, no randomness. `render` gives a structured ruleset; script.ts turns a whole one into
// `nft -f` text. Element-level diffs and chunking live in diff.ts.
//
// Every rule string emitted, by purpose (<f> is `ip` or `ip6`, <m> the masquerade mark):
//   dispatch     <f> daddr . meta l4proto . th dport vmap @service-ips
//                <f> daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
//                <f> daddr . meta l4proto . th dport @<shape>-tuples goto <shape>
//                <f> daddr @nodeport-ips meta l4proto . th dport @<shape>-tuples goto <shape>
//   no endpoints <f> daddr . meta l4proto . th dport vmap @no-endpoint-services
//                <f> daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
//   firewall     <f> daddr . meta l4proto . th dport @firewall-ips jump firewall-check
//                <f> daddr . meta l4proto . th dport . <f> saddr @firewall-allow return
//   verdicts     drop | reject | jump <chain> | goto <chain>
//   masquerade   [<cond>] jump mark-for-masquerade
//                  <cond>: <f> saddr != { cidrs } | iifname != "<name>" | fib saddr type local
//                          | <f> daddr <clusterIP> [<f> saddr != { cidrs } | iifname != "<name>"]
//   load balance [<cond>] meta l4proto <p> dnat <f> to <f> daddr . meta l4proto . <p> dport . numgen random mod N [offset 65536] map @service-endpoints-<p>
//                [<cond>] meta l4proto <p> dnat <f> to meta l4proto . <p> dport . numgen random mod N [offset 65536] map @nodeport-endpoints-<p>
//                  (<p>: tcp, udp, sctp — one rule each)
//                  <cond>: fib saddr type local | <f> saddr { cidrs } | iifname "<name>"
//   wrong port   ct state invalid drop
//                <f> daddr @cluster-ips reject
//   postrouting  ct status dnat <f> saddr . <f> daddr @hairpin masquerade
//                meta mark & <m> == 0 return
//                meta mark set meta mark ^ <m>
//                meta mark set meta mark | <m>
//                masquerade fully-random
//   affinity     <key> @affinity-clients <pin>             (one per endpoint: a client already pinned)
//                [numgen random mod K 0] <pin>             (one per endpoint: K = n, n-1, …, 2, then none)
//                  <key>: <f> saddr . numgen random mod 1 offset <tag>   (<tag>: the endpoint's, see affinityTag)
//                  <pin>: update @affinity-clients { <key> timeout <t>s } meta l4proto <proto> dnat <f> to <ip>:<port>
//                         (IPv6: [<ip>]:<port>)
import type { BackendConfig } from '../types.js';
import type { Endpoint, ServicePortState, Snapshot } from '../../model/types.js';
import { canonicalCIDR, canonicalIP, cidrContains } from './addr.js';
import { affinityTag, endpointBase, hashedName, servicePortBase } from './names.js';

export type NftFamily = 'ip' | 'ip6';
export const TABLE = 'kube-proxy';

export const PROTOCOLS = ['tcp', 'udp', 'sctp'] as const;
export type NftProto = (typeof PROTOCOLS)[number];

/** The data map holding the endpoint slots of one protocol: `service-endpoints-tcp`, `nodeport-endpoints-udp`, … */
export function endpointMap(kind: 'service' | 'nodeport', proto: NftProto): string {
  return `${kind}-endpoints-${proto}`;
}

/**
 * The one set of pinned clients, `client . endpoint tag`, shared by every affinity service port
 * (tags are per service port and endpoint). A set per service port made each nft command read
 * thousands of set declarations (docs/nftables-layout.md).
 */
export const AFFINITY_SET = 'affinity-clients';

/**
 * Room for pinned clients across all affinity services. Upstream holds up to 65,535 per endpoint;
 * the kernel allocates elements as they come, so the bound only stops a flood of sources.
 */
export const AFFINITY_SET_SIZE = 4194304;

export interface NftSet {
  name: string;
  kind: 'set' | 'map';
  /** Declaration body: `type …` or `typeof …`, flags and timeout, e.g. `type ipv4_addr; flags interval`. */
  decl: string;
  /** Dynamic sets are filled by the packet path (affinity); their elements are never diffed. */
  dynamic?: boolean;
  /** Element text → value text (`undefined` for plain sets). */
  elements: Map<string, string | undefined>;
}

export interface NftHook {
  type: 'filter' | 'nat';
  hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  priority: string;
}

export interface NftChain {
  name: string;
  hook?: NftHook;
  rules: string[];
}

export interface NftRuleset {
  family: NftFamily;
  table: string;
  sets: NftSet[];
  chains: NftChain[];
}

/** What one service port contributes: elements, and for affinity services its own chains. */
export interface Fragment {
  /** Flat triples: set name, element key, value (undefined for plain sets). */
  elements: Array<string | undefined>;
  chains: NftChain[];
  /** Names of shape chains the elements point at. */
  shapes: string[];
}

/** Slot offset of the cluster endpoints of a Local-policy tuple (for locally originated traffic). */
export const CLUSTER_SLOT_OFFSET = 65536;

/** Everything render needs that depends only on the configuration. */
export interface RenderContext {
  f: NftFamily;
  v6: boolean;
  addrType: string;
  mark: string;
  masqueradeAll: boolean;
  /** Condition matching traffic from local pods, undefined when nothing is treated as local. */
  localCond?: string;
  /** Condition matching traffic not from local pods. */
  nonLocalCond?: string;
  nodePortIPs: string[];
  nodeIPs: string[];
}

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

/** The sets and maps of the table, empty except for the configuration-derived `nodeport-ips`. */
export function baseSets(ctx: RenderContext): NftSet[] {
  const a = ctx.addrType;
  const f = ctx.f;
  const set = (name: string, decl: string): NftSet => ({ name, kind: 'set', decl, elements: new Map() });
  const map = (name: string, decl: string): NftSet => ({ name, kind: 'map', decl, elements: new Map() });
  const sets = [
    set('cluster-ips', `type ${a}`),
    set('nodeport-ips', `type ${a}`),
    set('hairpin', `type ${a} . ${a}`),
    set('firewall-ips', `type ${a} . inet_proto . inet_service`),
    set('firewall-allow', `type ${a} . inet_proto . inet_service . ${a}; flags interval`),
    map('service-ips', `type ${a} . inet_proto . inet_service : verdict`),
    map('service-nodeports', 'type inet_proto . inet_service : verdict'),
    // One endpoint map per protocol: nft 1.0.6 cannot re-read a `: ${f} daddr . th dport` data
    // declaration from the kernel (rules added in a later transaction are rejected), and a
    // protocol-specific `tcp dport` data type makes nft add an implicit `meta l4proto tcp` to
    // every rule using the map. So each protocol gets its own map and its own DNAT rule.
    ...PROTOCOLS.map((p) => map(endpointMap('service', p), `typeof ${f} daddr . meta l4proto . ${p} dport . numgen random mod 1 : ${f} daddr . ${p} dport`)),
    ...PROTOCOLS.map((p) => map(endpointMap('nodeport', p), `typeof meta l4proto . ${p} dport . numgen random mod 1 : ${f} daddr . ${p} dport`)),
    map('no-endpoint-services', `type ${a} . inet_proto . inet_service : verdict`),
    map('no-endpoint-nodeports', 'type inet_proto . inet_service : verdict'),
    { ...set(AFFINITY_SET, `typeof ${f} saddr . numgen random mod 1; size ${AFFINITY_SET_SIZE}; flags dynamic,timeout`), dynamic: true },
  ];
  for (const ip of ctx.nodePortIPs) sets[1]!.elements.set(ip, undefined);
  return sets;
}

/** The fixed chains: hooks, dispatch, masquerading. */
export function baseChains(ctx: RenderContext): NftChain[] {
  const f = ctx.f;
  const preDnat = [
    `${f} daddr . meta l4proto . th dport @firewall-ips jump firewall-check`,
    `${f} daddr . meta l4proto . th dport vmap @no-endpoint-services`,
    `${f} daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports`,
  ];
  return [
    { name: 'mark-for-masquerade', rules: [`meta mark set meta mark | ${ctx.mark}`] },
    {
      name: 'masquerading',
      rules: [`meta mark & ${ctx.mark} == 0 return`, `meta mark set meta mark ^ ${ctx.mark}`, 'masquerade fully-random'],
    },
    { name: 'reject-chain', rules: ['reject'] },
    { name: 'firewall-check', rules: [`${f} daddr . meta l4proto . th dport . ${f} saddr @firewall-allow return`, 'drop'] },
    servicesChain(ctx, []),
    { name: 'filter-prerouting-pre-dnat', hook: { type: 'filter', hook: 'prerouting', priority: 'dstnat - 10' }, rules: preDnat },
    // nft only accepts the `dstnat` keyword in prerouting: output hooks use its value, -100.
    { name: 'filter-output-pre-dnat', hook: { type: 'filter', hook: 'output', priority: '-110' }, rules: [...preDnat] },
    { name: 'nat-prerouting', hook: { type: 'nat', hook: 'prerouting', priority: 'dstnat' }, rules: ['jump services'] },
    { name: 'nat-output', hook: { type: 'nat', hook: 'output', priority: '-100' }, rules: ['jump services'] },
    {
      name: 'filter-forward',
      hook: { type: 'filter', hook: 'forward', priority: 'filter' },
      rules: ['ct state invalid drop', `${f} daddr @cluster-ips reject`],
    },
    {
      name: 'filter-output-post-dnat',
      hook: { type: 'filter', hook: 'output', priority: '-90' },
      rules: [`${f} daddr @cluster-ips reject`],
    },
    {
      name: 'nat-postrouting',
      hook: { type: 'nat', hook: 'postrouting', priority: 'srcnat' },
      rules: [`ct status dnat ${f} saddr . ${f} daddr @hairpin masquerade`, 'jump masquerading'],
    },
  ];
}

/**
 * The set of the tuples a shape chain serves (`daddr . proto . port`; `proto . port` for node
 * ports). Renderers dispatch a tuple through `service-ips` / `service-nodeports` (`goto <shape>`,
 * where two services claiming one tuple are resolved); in the kernel a tuple going to a shape
 * is an element of that shape's plain set instead: the kernel checks every chain reachable
 * through a verdict map at each commit that adds a jump or goto element, which took 3 ms per
 * change at 30,000 Services (see docs/nftables-layout.md).
 */
export function shapeTuples(shape: string): string {
  return `${shape}-tuples`;
}

/** The dispatch maps whose `goto <shape>` elements live in the shapes' tuple sets in the kernel. */
const SHAPE_DISPATCH_MAPS = new Set(['service-ips', 'service-nodeports']);

const SHAPE_VERDICT = /^goto ((?:cluster|external|nodeport)-(?:local-)?\d+(?:-\d+)?)$/;

/** The shape chain a dispatch map's value goes to; undefined for a per-service chain or a verdict. */
export function dispatchShape(value: string | undefined): string | undefined {
  return value === undefined ? undefined : SHAPE_VERDICT.exec(value)?.[1];
}

/** The kernel set a dispatch element lives in: its shape's tuple set, or the map itself. */
export function kernelSetOf(set: string, value: string | undefined): { set: string; value: string | undefined } {
  if (!SHAPE_DISPATCH_MAPS.has(set)) return { set, value };
  const shape = dispatchShape(value);
  return shape ? { set: shapeTuples(shape), value: undefined } : { set, value };
}

/**
 * The kernel's sets from rendered ones: `service-ips` and `service-nodeports` keep only their
 * per-service verdicts, and each shape's tuples go to its set (after the base sets, by shape).
 */
export function splitDispatch(sets: readonly NftSet[], shapes: readonly string[], ctx: RenderContext): NftSet[] {
  const tuples = new Map(shapes.map((s) => [s, shapeTupleSet(s, ctx)]));
  const out = sets.map((s) => {
    if (!SHAPE_DISPATCH_MAPS.has(s.name)) return s;
    const kept: NftSet = { ...s, elements: new Map() };
    for (const [k, v] of s.elements) {
      const shape = dispatchShape(v);
      if (shape) tuples.get(shape)!.elements.set(k, undefined);
      else kept.elements.set(k, v);
    }
    return kept;
  });
  return [...out, ...tuples.values()];
}

export function isShapeTuples(set: string): boolean {
  return set.endsWith('-tuples');
}

/** The declaration of a shape's tuple set. */
export function shapeTupleSet(shape: string, ctx: RenderContext): NftSet {
  const decl = shape.startsWith('nodeport-') ? 'type inet_proto . inet_service' : `type ${ctx.addrType} . inet_proto . inet_service`;
  return { name: shapeTuples(shape), kind: 'set', decl, elements: new Map() };
}

/** The dispatch chain: per-service chains through the verdict maps, then one rule per shape (sorted). */
export function servicesChain(ctx: RenderContext, shapes: readonly string[]): NftChain {
  const f = ctx.f;
  return {
    name: 'services',
    rules: [
      `${f} daddr . meta l4proto . th dport vmap @service-ips`,
      `${f} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports`,
      ...shapes.map((s) =>
        s.startsWith('nodeport-')
          ? `${f} daddr @nodeport-ips meta l4proto . th dport @${shapeTuples(s)} goto ${s}`
          : `${f} daddr . meta l4proto . th dport @${shapeTuples(s)} goto ${s}`,
      ),
    ],
  };
}

/** Rules of a shape chain, from its name (`cluster-N`, `external-N`, `external-local-L-C`, `nodeport-…`). */
export function shapeChain(name: string, ctx: RenderContext): NftChain {
  const m = /^(cluster|external|nodeport)-(?:(local)-)?(\d+)(?:-(\d+))?$/.exec(name);
  if (!m) throw new Error(`not a shape chain name: ${name}`);
  const [, cls, local, a, b] = m;
  const f = ctx.f;
  const kind = cls === 'nodeport' ? 'nodeport' : 'service';
  // One DNAT rule per protocol (see baseSets), each with its own condition prefix.
  const dnat = (n: string, offset: boolean, cond = ''): string[] =>
    PROTOCOLS.map((p) => {
      const key = kind === 'nodeport' ? `meta l4proto . ${p} dport` : `${f} daddr . meta l4proto . ${p} dport`;
      return `${cond}meta l4proto ${p} dnat ${f} to ${key} . numgen random mod ${n}${offset ? ` offset ${CLUSTER_SLOT_OFFSET}` : ''} map @${endpointMap(kind, p)}`;
    });
  const rules: string[] = [];
  if (cls === 'cluster') {
    if (ctx.masqueradeAll) rules.push('jump mark-for-masquerade');
    else if (ctx.nonLocalCond) rules.push(`${ctx.nonLocalCond} jump mark-for-masquerade`);
    rules.push(...dnat(a!, false));
  } else if (!local) {
    rules.push('jump mark-for-masquerade', ...dnat(a!, false));
  } else {
    // Local policy: traffic starting on this node keeps working through the cluster endpoints;
    // host traffic is masqueraded, pod traffic is not; everything else keeps its client IP.
    rules.push('fib saddr type local jump mark-for-masquerade', ...dnat(b!, true, 'fib saddr type local '));
    if (ctx.localCond) rules.push(...dnat(b!, true, `${ctx.localCond} `));
    if (a === '0') rules.push('drop');
    else rules.push(...dnat(a!, false));
  }
  return { name, rules };
}

/** One usable endpoint; `text` (`ip . port`) is the slot value and the dedup key, built once. */
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

export function elementText(key: string, value: string | undefined): string {
  return value === undefined ? key : `${key} : ${value}`;
}

/** Names of the chains a chain's rules jump or go to. */
export function chainRefs(chain: NftChain): string[] {
  const out: string[] = [];
  for (const r of chain.rules) for (const m of r.matchAll(/\b(?:jump|goto) ([^\s,}]+)/g)) out.push(m[1]!);
  return out;
}

/** Chains ordered so that every chain comes after the chains it refers to. */
export function orderChains(chains: NftChain[]): NftChain[] {
  const byName = new Map(chains.map((c) => [c.name, c]));
  const done = new Set<string>();
  const out: NftChain[] = [];
  const visit = (c: NftChain): void => {
    if (done.has(c.name)) return;
    done.add(c.name);
    for (const r of chainRefs(c)) {
      const d = byName.get(r);
      if (d) visit(d);
    }
    out.push(c);
  };
  for (const c of chains) visit(c);
  return out;
}

export function chainHeader(c: NftChain): string | undefined {
  return c.hook ? `type ${c.hook.type} hook ${c.hook.hook} priority ${c.hook.priority}; policy accept;` : undefined;
}

/** Data sets before verdict maps, so a tuple becomes live only with its endpoints in place. */
export const SET_ORDER = [
  'hairpin',
  'cluster-ips',
  'nodeport-ips',
  ...PROTOCOLS.map((p) => endpointMap('service', p)),
  ...PROTOCOLS.map((p) => endpointMap('nodeport', p)),
  'firewall-allow',
  'firewall-ips',
  'no-endpoint-services',
  'no-endpoint-nodeports',
  'service-ips',
  'service-nodeports',
];

export const VERDICT_MAPS = new Set(['service-ips', 'service-nodeports', 'no-endpoint-services', 'no-endpoint-nodeports']);

/** Sets whose elements make a tuple live: added after its endpoint data, deleted before it. */
export function isDispatchSet(name: string): boolean {
  return VERDICT_MAPS.has(name) || isShapeTuples(name);
}

/** Position of a set's elements in a whole-table write (per-service sets first, then SET_ORDER, tuple sets last). */
export function setOrder(name: string): number {
  if (isShapeTuples(name)) return SET_ORDER.length;
  return SET_ORDER.indexOf(name);
}
