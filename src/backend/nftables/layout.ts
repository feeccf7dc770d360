// The nftables table's layout (docs/nftables-layout.md): its types and names, the fixed sets and
// chains, the shape chains and the dispatch to them, and the order a whole table is written in.
// Pure; render.ts fills it from service ports.
//
// Rule strings of the fixed and shape chains, by purpose (<f> is `ip` or `ip6`, <m> the masquerade mark;
// the per-service affinity chains are listed in render.ts):
//   dispatch     <f> daddr . meta l4proto . th dport vmap @service-ips
//                <f> daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
//                <f> daddr . meta l4proto . th dport @<shape>-tuples goto <shape>
//                <f> daddr @nodeport-ips meta l4proto . th dport @<shape>-tuples goto <shape>
//   no endpoints <f> daddr . meta l4proto . th dport vmap @no-endpoint-services
//                <f> daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
//   firewall     <f> daddr . meta l4proto . th dport @firewall-ips jump firewall-check
//                <f> daddr . meta l4proto . th dport . <f> saddr @firewall-allow return
//   verdicts     drop | reject | jump <chain>
//   masquerade   [<cond>] jump mark-for-masquerade
//                  <cond>: <f> saddr != { cidrs } | iifname != "<name>" | fib saddr type local
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
