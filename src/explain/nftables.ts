// Packet tracer of the nftables mode: walks a new connection through the netfilter hooks of
// one rendered nftables table, interpreting the rules themselves (not Kubernetes semantics), so
// what it reports is what the ruleset does. Every random choice (numgen) and every unknown
// dynamic-set membership (session affinity) is enumerated: the result lists every branch.
import { PROTOCOL_NUMBER, TRACE_IP, literalIsExact, parseLiteral, valueKey } from './values.js';
import type { NftRuleset } from '../backend/nftables/layout.js';
import { formatIP, ipFromBigInt, ipToBigInt, parseIP, type IPFamily } from '../net/ip.js';
import { ParseError, parseRule, type Stmt, type Verdict } from './parse.js';
import { ExprEvaluator, exprTypes, showValue, type PacketState } from './nftables-expr.js';
import {
  TraceError,
  traceBranches,
  walkHooks,
  type AffinityPin,
  type Chooser,
  type TraceBranch,
  type TraceNode,
  type TracePacket,
  type TraceResult,
  type TraceVerdict,
} from './tracer.js';

/** A chain as the tracer needs it: base chains carry hook, type and priority. */
export interface TraceChain {
  name: string;
  hook?: string;
  type?: string;
  /** A number or an nft priority expression such as `dstnat - 10`. */
  priority?: number | string;
  policy?: string;
  rules: string[];
}

export interface TraceSet {
  name: string;
  /** Elements in nft syntax: `k1 . k2` for sets, `k1 . k2 : value` for maps. */
  elements: string[];
  timeout?: string;
}

/** One table (`ip` or `ip6`) in the shape the tracer reads. */
export interface TraceTable {
  family: 'ip' | 'ip6';
  chains: TraceChain[];
  sets: TraceSet[];
}

const MAX_JUMP_DEPTH = 16;

const NAMED_PRIORITIES: Record<string, number> = { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 };

export function parsePriority(p: number | string | undefined): number {
  if (p === undefined) return 0;
  if (typeof p === 'number') return p;
  const m = /^\s*(-?\d+|[a-z]+)\s*(?:([+-])\s*(\d+))?\s*$/.exec(p);
  if (!m) throw new TraceError(`unknown chain priority '${p}'`);
  const base = /^-?\d+$/.test(m[1]!) ? Number(m[1]) : NAMED_PRIORITIES[m[1]!];
  if (base === undefined) throw new TraceError(`unknown chain priority '${p}'`);
  return base + (m[2] === '-' ? -Number(m[3]) : m[2] === '+' ? Number(m[3]) : 0);
}

type Outcome = { k: 'nomatch' } | { k: 'next' } | { k: 'verdict'; v: Verdict };

class Interpreter {
  private readonly chains = new Map<string, TraceChain>();
  private readonly sets = new Map<string, TraceSet>();
  private readonly parsed = new Map<string, Stmt[]>();
  private readonly family: 4 | 6;
  private readonly ipFamily: IPFamily;
  private readonly protoNum: bigint;
  private readonly ex: ExprEvaluator;
  private st!: PacketState;

  constructor(private readonly table: TraceTable, private readonly packet: TracePacket, node: TraceNode) {
    this.family = table.family === 'ip6' ? 6 : 4;
    this.ipFamily = table.family === 'ip6' ? 'IPv6' : 'IPv4';
    for (const c of table.chains) this.chains.set(c.name, c);
    for (const s of table.sets) this.sets.set(s.name, s);
    const dynamicSets = new Set<string>();
    for (const c of table.chains) {
      for (const r of c.rules) {
        for (const m of r.matchAll(/\b(?:update|add)\s+@([^\s{]+)/g)) dynamicSets.add(m[1]!);
      }
    }
    this.ex = new ExprEvaluator(this.family, (name) => this.sets.get(name)?.elements, dynamicSets, packet, node);
    this.protoNum = BigInt(PROTOCOL_NUMBER[packet.protocol]);
  }

  private addr(ip: string, what: string): bigint {
    const p = parseIP(ip, TRACE_IP);
    if (p === null) throw new TraceError(`${what} '${ip}' is not an IP address`);
    if (p.family !== this.ipFamily) throw new TraceError(`${what} ${ip} is not an IPv${this.family} address (table family ${this.table.family})`);
    return ipToBigInt(p);
  }

  run(chooser: Chooser): TraceBranch {
    const pk = this.packet;
    this.st = {
      saddr: this.addr(pk.sourceIP, 'source'),
      daddr: this.addr(pk.destIP, 'destination'),
      proto: this.protoNum,
      dport: BigInt(pk.destPort),
      iif: pk.from === 'host' ? undefined : pk.inInterface,
      mark: BigInt(pk.mark ?? 0),
      dnat: false,
      masquerade: false,
      natDone: { dst: false, src: false },
      conditions: [],
      path: [],
      pins: [],
      added: new Set(),
    };
    this.ex.start(this.st, chooser);
    const { verdict, routed } = walkHooks(pk.from === 'host', {
      hook: (h) => this.hook(h),
      destinationLocal: () => this.ex.isLocal(this.st.daddr),
      // Prerouting filter chains see it again; NAT is already bound.
      loopedBack: () => (this.st.iif = 'lo'),
    });
    const s = this.st;
    const branch: TraceBranch = {
      conditions: s.conditions,
      verdict,
      masquerade: verdict === 'ACCEPT' && s.masquerade,
      path: s.path,
      pins: s.pins,
    };
    if (routed) branch.routed = routed;
    if (s.dnat) branch.endpoint = { ip: formatIP(ipFromBigInt(s.daddr, this.ipFamily)), port: Number(s.dport) };
    return branch;
  }

  /** Runs the base chains of one hook in priority order; NAT chains run once per connection and direction. */
  private hook(hook: string): TraceVerdict {
    const maniptype = hook === 'prerouting' || hook === 'output' ? 'dst' : 'src';
    const chains = this.table.chains
      .filter((c) => c.hook === hook)
      .map((c) => ({ c, prio: parsePriority(c.priority) }))
      .sort((a, b) => a.prio - b.prio);
    const natAlreadyBound = this.st.natDone[maniptype];
    for (const { c } of chains) {
      if (c.type === 'nat' && (natAlreadyBound || this.st.natDone[maniptype])) continue;
      const v = this.runChain(c, maniptype);
      if (v !== 'ACCEPT') return v;
    }
    if (chains.some((x) => x.c.type === 'nat')) this.st.natDone[maniptype] = true;
    return 'ACCEPT';
  }

  private runChain(base: TraceChain, maniptype: 'dst' | 'src'): TraceVerdict {
    const stack: Array<{ chain: TraceChain; idx: number }> = [];
    let cur = base;
    let idx = 0;
    for (;;) {
      if (idx >= cur.rules.length) {
        const ret = stack.pop();
        if (!ret) return this.policy(base);
        cur = ret.chain;
        idx = ret.idx;
        continue;
      }
      const rule = cur.rules[idx++]!;
      const out = this.evalRule(cur, rule, maniptype);
      if (out.k !== 'verdict') continue;
      const v = out.v;
      switch (v.k) {
        case 'accept': return 'ACCEPT';
        case 'drop': return 'DROP';
        case 'reject': return 'REJECT';
        case 'continue': break;
        case 'return': {
          const ret = stack.pop();
          if (!ret) return this.policy(base);
          cur = ret.chain;
          idx = ret.idx;
          break;
        }
        case 'jump':
        case 'goto': {
          const target = this.chains.get(v.chain);
          if (!target) throw new TraceError(`chain ${cur.name}: rule "${rule}" jumps to missing chain ${v.chain}`);
          if (target.hook) throw new TraceError(`chain ${cur.name}: rule "${rule}" jumps to base chain ${v.chain}`);
          if (v.k === 'jump') {
            if (stack.length >= MAX_JUMP_DEPTH) throw new TraceError(`chain ${cur.name}: rule "${rule}" exceeds the jump depth limit`);
            stack.push({ chain: cur, idx });
          }
          cur = target;
          idx = 0;
          break;
        }
      }
    }
  }

  private policy(base: TraceChain): TraceVerdict {
    if (base.policy === 'drop') {
      this.st.path.push(`${base.name}: policy drop`);
      return 'DROP';
    }
    return 'ACCEPT';
  }

  private stmts(chain: TraceChain, rule: string): Stmt[] {
    let s = this.parsed.get(rule);
    if (!s) {
      try {
        s = parseRule(rule);
      } catch (e) {
        if (e instanceof ParseError) throw new TraceError(`chain ${chain.name}: cannot interpret rule "${rule}": ${e.message}`);
        throw e;
      }
      this.parsed.set(rule, s);
    }
    return s;
  }

  private evalRule(chain: TraceChain, rule: string, maniptype: 'dst' | 'src'): Outcome {
    const fail = (msg: string): never => {
      throw new TraceError(`chain ${chain.name}: cannot interpret rule "${rule}": ${msg}`);
    };
    for (const s of this.stmts(chain, rule)) {
      switch (s.k) {
        case 'noop':
          break;
        case 'match':
          if (!this.ex.match(s, fail)) return { k: 'nomatch' };
          break;
        case 'vmap': {
          const el = this.ex.lookup(s.key, s.map, true, fail);
          if (!el) return { k: 'nomatch' };
          if (!el.verdict) fail(`map element ${el.key.join(' . ')} has no verdict`);
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: el.verdict! };
        }
        case 'verdict':
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: s.v };
        case 'markset': {
          const v = typeof s.value === 'bigint' ? s.value : this.ex.eval(s.value, fail)[0];
          if (typeof v !== 'bigint') return { k: 'nomatch' };
          this.st.mark = v & 0xffffffffn;
          break;
        }
        case 'masquerade':
          if (maniptype !== 'src') fail('masquerade outside postrouting / input');
          this.st.masquerade = true;
          this.st.natDone.src = true;
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: { k: 'accept' } };
        case 'dnat': {
          if (maniptype !== 'dst') fail('dnat outside prerouting / output');
          let addr: string | undefined = s.addr;
          let port: string | undefined = s.port;
          if (s.key && s.map) {
            const el = this.ex.lookup(s.key, s.map, true, fail);
            if (!el) return { k: 'nomatch' };
            if (!el.value || el.value.length > 2) fail(`map element ${el.key.join(' . ')} is not an address or address . port`);
            addr = el.value![0];
            port = el.value![1];
          }
          const lit = parseLiteral(addr!, this.family === 4 ? 'ip4' : 'ip6');
          if (!lit || !literalIsExact(lit) || 'ifname' in lit) fail(`bad dnat address '${addr}'`);
          this.st.daddr = (lit as { lo: bigint }).lo;
          if (port !== undefined) {
            const p = parseLiteral(port, 'port');
            if (!p || 'ifname' in p || p.lo !== p.hi || p.lo > 65535n) fail(`bad dnat port '${port}'`);
            this.st.dport = (p as { lo: bigint }).lo;
          }
          this.st.dnat = true;
          this.st.natDone.dst = true;
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: { k: 'accept' } };
        }
        case 'setupdate': {
          const vals = this.ex.eval(s.key, fail);
          if (vals.some((v) => v === undefined)) return { k: 'nomatch' };
          const types = exprTypes(s.key);
          this.st.added.add(`${s.set}|${vals.map(valueKey).join('|')}`);
          const pin: AffinityPin = { set: s.set, key: vals.map((v, i) => showValue(v, types[i]!)).join(' . ') };
          const timeout = s.timeout ?? this.sets.get(s.set)?.timeout;
          if (timeout) pin.timeout = timeout;
          this.st.pins.push(pin);
          break;
        }
      }
    }
    this.st.path.push(`${chain.name}: ${rule}`);
    return { k: 'next' };
  }
}

/** Traces a new connection through one table; throws TraceError when a rule cannot be interpreted. */
export function traceTable(table: TraceTable, packet: TracePacket, node: TraceNode): TraceResult {
  if (!Number.isInteger(packet.destPort) || packet.destPort < 0 || packet.destPort > 65535) {
    throw new TraceError(`destination port ${packet.destPort} is out of range`);
  }
  if (!(packet.protocol in PROTOCOL_NUMBER)) throw new TraceError(`unknown protocol '${String(packet.protocol)}'`);
  const interp = new Interpreter(table, packet, node);
  return traceBranches((chooser) => interp.run(chooser));
}

/** The tracer's view of a rendered ruleset: hooks flattened, elements in nft syntax. */
export function tableFromRuleset(rs: NftRuleset): TraceTable {
  return {
    family: rs.family,
    chains: rs.chains.map((c) => {
      const out: TraceChain = { name: c.name, rules: c.rules };
      if (c.hook) Object.assign(out, { hook: c.hook.hook, type: c.hook.type, priority: c.hook.priority, policy: 'accept' });
      return out;
    }),
    sets: rs.sets.map((s) => {
      const out: TraceSet = {
        name: s.name,
        elements: [...s.elements].map(([k, v]) => (v === undefined ? k : `${k} : ${v}`)),
      };
      const timeout = /(?:^|;)\s*timeout\s+([^;\s]+)/.exec(s.decl)?.[1];
      if (timeout) out.timeout = timeout;
      return out;
    }),
  };
}

/** Traces a new connection through a rendered ruleset (see traceTable). */
export function trace(ruleset: NftRuleset, packet: TracePacket, node: TraceNode): TraceResult {
  return traceTable(tableFromRuleset(ruleset), packet, node);
}
