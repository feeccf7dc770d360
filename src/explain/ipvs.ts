// Tracer for the IPVS mode: a new connection through the rendered iptables chains (evaluated
// rule by rule, ipset matches against the rendered sets) and the virtual servers.
// Modelled, in the kernel's order: nat KUBE-SERVICES (PREROUTING or OUTPUT: the masquerade
// mark), filter INPUT / OUTPUT (health-check node ports, source-range firewall, the IPVS access
// filter, services without endpoints), the IPVS lookup on dst:port:protocol (one branch per
// real server of weight > 0; a virtual server without one answers port-unreachable), then nat
// KUBE-POSTROUTING (hairpin and marked traffic masqueraded). Not modelled: bridged pod traffic
// (`-m physdev` counts every packet as routed), IPVS persistence (no pins are reported), and
// connections that are not new. A connection the node makes to a kube-ipvs0 address from one of
// its own addresses is taken to come from the destination, as the kernel picks it.
import type { IpvsRuleset, VirtualServer } from '../backend/ipvs/types.js';
import { cidrContains, formatIP, parseCIDR, parseIP } from '../net/ip.js';
import { tokenize } from './iptables/rule.js';
import { TraceError, type TraceBranch, type TraceNode, type TracePacket, type TraceResult, type TraceVerdict } from './tracer.js';
import { TRACE_IP } from './values.js';

type Outcome = 'ACCEPT' | 'DROP' | 'REJECT' | 'RETURN' | 'MASQUERADE' | undefined;

/** The packet as the rules see it at one point: after IPVS, dst is the real server. */
interface Seen {
  src: string;
  dst: string;
  port: number;
  proto: string;
  iif: string;
  /** Output happens on the node itself (nat/filter OUTPUT). */
  host: boolean;
  vs?: VirtualServer;
}

function canon(ip: string): string {
  const p = parseIP(ip, TRACE_IP);
  if (p === null) throw new TraceError(`'${ip}' is not an IP address`);
  return formatIP(p);
}

function inCIDR(ip: string, cidr: string): boolean {
  const c = parseCIDR(cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}`, TRACE_IP);
  const a = parseIP(ip, TRACE_IP);
  return c !== null && a !== null && cidrContains(c, a);
}

class IpvsTracer {
  private readonly sets: Map<string, { type: string; entries: string[] }>;
  private readonly chains: Map<string, string[]>;
  private readonly local: Set<string>;
  mark = 0n;
  path: string[] = [];

  constructor(
    rs: IpvsRuleset,
    node: TraceNode,
  ) {
    this.sets = new Map(rs.ipsets.map((s) => [s.name, { type: s.type, entries: s.entries }]));
    this.chains = new Map(rs.iptables.chains.map((c) => [`${c.table}/${c.name}`, c.rules]));
    for (const j of rs.jumps) {
      const k = `${j.table}/${j.chain}`;
      this.chains.set(k, [...(this.chains.get(k) ?? []), j.rule]);
    }
    this.local = new Set([...node.localIPs, ...rs.dummyAddresses].map(canon));
  }

  private isLocal(ip: string): boolean {
    return this.local.has(ip) || inCIDR(ip, ip.includes(':') ? '::1/128' : '127.0.0.0/8');
  }

  private setMatch(name: string, dirs: string, p: Seen): boolean {
    const set = this.sets.get(name);
    if (!set) throw new TraceError(`rule refers to ipset ${name}, which the ruleset does not hold`);
    const d = dirs.split(',').map((x) => (x === 'src' ? p.src : p.dst));
    const proto = p.proto.toLowerCase();
    if (set.type === 'bitmap:port') return set.entries.includes(String(p.port));
    if (set.type === 'hash:ip') return set.entries.includes(d[0]!);
    return set.entries.some((e) => {
      const [ip, pp, third] = e.split(',');
      if (ip !== d[0] || pp !== `${proto}:${p.port}`) return false;
      if (set.type === 'hash:ip,port') return third === undefined;
      return third !== undefined && (set.type === 'hash:ip,port,net' ? inCIDR(d[2]!, third) : third === d[2]);
    });
  }

  /** Whether every match of `spec` holds, and its target. */
  private evalRule(spec: string, p: Seen): string | undefined {
    const toks = tokenize(spec).map((t) => t.text);
    let neg = false;
    let ok = true;
    for (let i = 0; i < toks.length && ok; i++) {
      const t = toks[i]!;
      if (t === '!') { neg = true; continue; }
      let r: boolean | undefined;
      switch (t) {
        case '-s': r = inCIDR(p.src, toks[++i]!); break;
        case '-d': r = inCIDR(p.dst, toks[++i]!); break;
        case '-p': r = toks[++i] === p.proto.toLowerCase(); break;
        case '-i': { const n = toks[++i]!; r = n.endsWith('+') ? p.iif !== '' && p.iif.startsWith(n.slice(0, -1)) : p.iif === n; break; }
        case '-m': i++; continue;
        case '--comment': i++; continue;
        case '--match-set': r = this.setMatch(toks[i + 1]!, toks[i + 2]!, p); i += 2; break;
        case '--dst-type': r = toks[++i] === 'LOCAL' && this.isLocal(p.dst); break;
        case '--src-type': r = toks[++i] === 'LOCAL' && (p.host || this.isLocal(p.src)); break;
        // Pod traffic is modelled as routed, never bridged.
        case '--physdev-is-in': r = false; break;
        case '--dport': r = Number(toks[++i]) === p.port; break;
        case '--ctstate': r = toks[++i]!.split(',').includes('NEW'); break;
        case '--mark': { const [v, m] = toks[++i]!.split('/').map((x) => BigInt(x)); r = (this.mark & m!) === v; break; }
        case '--vproto': r = p.vs !== undefined && toks[++i] === String({ TCP: 6, UDP: 17, SCTP: 132 }[p.vs.protocol]); break;
        case '--vaddr': r = p.vs !== undefined && inCIDR(p.vs.address, toks[++i]!); break;
        case '--vport': r = p.vs !== undefined && Number(toks[++i]) === p.vs.port; break;
        case '-j': return toks.slice(i + 1).join(' ');
        default: throw new TraceError(`IPVS rule '${spec}': '${t}' is not modelled`);
      }
      ok = r !== neg;
      neg = false;
    }
    return undefined;
  }

  /** Runs a chain: the first terminating outcome, or undefined when it falls off the end. */
  chain(table: string, name: string, p: Seen): Outcome {
    const rules = this.chains.get(`${table}/${name}`);
    if (!rules) throw new TraceError(`chain ${table}/${name} is missing`);
    for (const spec of rules) {
      const target = this.evalRule(spec, p);
      if (target === undefined) continue;
      this.path.push(`${table}/${name}: ${spec}`);
      const word = target.split(' ')[0]!;
      if (word === 'MARK') {
        const [v, m] = target.split(' ')[2]!.split('/').map((x) => BigInt(x));
        this.mark = (this.mark & ~m!) ^ v!;
        continue;
      }
      if (word === 'ACCEPT' || word === 'DROP' || word === 'RETURN' || word === 'MASQUERADE') return word;
      if (word === 'REJECT') return 'REJECT';
      if (!word.startsWith('KUBE-')) throw new TraceError(`target '${target}' is not modelled`);
      const sub = this.chain(table, word, p);
      if (sub !== undefined && sub !== 'RETURN') return sub;
    }
    return undefined;
  }
}

function findVs(rs: IpvsRuleset, p: Seen): VirtualServer | undefined {
  return rs.virtualServers.find((v) => v.protocol === p.proto && v.address === p.dst && v.port === p.port);
}

/** Traces a new connection through the IPVS mode's rendered state. */
export function traceIpvs(rs: IpvsRuleset, packet: TracePacket, node: TraceNode): TraceResult {
  const host = packet.from === 'host';
  const base: Seen = { src: canon(packet.sourceIP), dst: canon(packet.destIP), port: packet.destPort, proto: packet.protocol, iif: host ? '' : packet.inInterface ?? '', host };
  const t = new IpvsTracer(rs, node);
  t.mark = BigInt(packet.mark ?? 0);
  // The node's own connection to an address bound to kube-ipvs0 leaves from that address: the
  // kernel picks a local destination as its own source (upstream's rules rely on it).
  if (host && rs.dummyAddresses.includes(base.dst) && node.localIPs.some((ip) => canon(ip) === base.src)) {
    t.path.push(`route: ${base.dst} is local (kube-ipvs0): the node's connection takes it as source`);
    base.src = base.dst;
  }
  const stop = (verdict: TraceVerdict): TraceResult => ({
    verdict,
    endpoints: [],
    masquerade: false,
    path: t.path,
    branches: [{ conditions: [], verdict, masquerade: false, path: t.path, pins: [] }],
  });
  t.chain('nat', host ? 'OUTPUT' : 'PREROUTING', base);
  const vs = findVs(rs, base);
  // IPVS hooks LOCAL_IN after filter INPUT, LOCAL_OUT before filter OUTPUT.
  if (host) {
    const v = t.chain('filter', 'OUTPUT', { ...base, vs });
    if (v === 'DROP' || v === 'REJECT') return stop(v);
  } else {
    const toLocal = rs.dummyAddresses.includes(base.dst) || node.localIPs.map(canon).includes(base.dst);
    const v = t.chain('filter', toLocal ? 'INPUT' : 'FORWARD', base);
    if (v === 'DROP' || v === 'REJECT') return stop(v);
  }
  if (!vs) {
    t.path.push('ipvs: no virtual server for the destination: not translated');
    return { ...stop('ACCEPT') };
  }
  const live = vs.realServers.filter((r) => r.weight > 0);
  t.path.push(`ipvs: virtual server ${vs.protocol} ${vs.address}:${vs.port} ${vs.scheduler}${vs.persistenceTimeoutSeconds ? ` persistent ${vs.persistenceTimeoutSeconds}` : ''} (${live.length} real servers of weight > 0)`);
  if (live.length === 0) return stop('REJECT');
  const markAfterNat = t.mark;
  const natPath = t.path;
  const branches: TraceBranch[] = live.map((r) => {
    t.path = [...natPath, `ipvs: real server ${r.address}:${r.port} (masquerading forward)`];
    t.mark = markAfterNat;
    const out = t.chain('nat', 'POSTROUTING', { ...base, dst: r.address, port: r.port });
    return {
      conditions: live.length > 1 ? [`scheduler picks ${r.address}:${r.port}`] : [],
      verdict: 'ACCEPT',
      endpoint: { ip: r.address, port: r.port },
      masquerade: out === 'MASQUERADE',
      path: t.path,
      pins: [],
    };
  });
  const path: string[] = [];
  for (const b of branches) for (const s of b.path) if (!path.includes(s)) path.push(s);
  return {
    verdict: 'ACCEPT',
    endpoints: branches.map((b) => ({ ...b.endpoint!, masquerade: b.masquerade, pins: [] })),
    masquerade: branches.some((b) => b.masquerade),
    path,
    branches,
  };
}
