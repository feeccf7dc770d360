// Packet tracer of the nftables mode: walks a new connection through the netfilter hooks of
// one rendered nftables table, interpreting the rules themselves (not Kubernetes semantics), so
// what it reports is what the ruleset does. Every random choice (numgen) and every unknown
// dynamic-set membership (session affinity) is enumerated: the result lists every branch.
import {
  CT_STATE_NEW,
  CT_STATUS_DNAT,
  FIB_LOCAL,
  FIB_UNICAST,
  PROTOCOL_NUMBER,
  TRACE_IP,
  isBitmask,
  literalIsExact,
  literalKey,
  literalMatches,
  parseLiteral,
  valueKey,
  type Literal,
  type Value,
  type ValueType,
} from './values.js';
import type { NftRuleset } from '../backend/nftables/layout.js';
import { formatIP, ipFromBigInt, ipToBigInt, parseIP, type IPFamily } from '../net/ip.js';
import { ParseError, parseElement, parseRule, type AnonElement, type Expr, type SetRef, type Stmt, type Verdict } from './parse.js';
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

interface CompiledSet {
  exact: Map<string, AnonElement>;
  ranges: Array<{ lits: Literal[]; el: AnonElement }>;
}

type Outcome = { k: 'nomatch' } | { k: 'next' } | { k: 'verdict'; v: Verdict };

interface State {
  saddr: bigint;
  daddr: bigint;
  proto: bigint;
  dport: bigint;
  iif: string | undefined;
  mark: bigint;
  dnat: boolean;
  masquerade: boolean;
  natDone: { dst: boolean; src: boolean };
  conditions: string[];
  path: string[];
  pins: AffinityPin[];
  added: Set<string>;
}

function exprTypes(e: Expr): ValueType[] {
  switch (e.k) {
    case 'concat': return e.parts.flatMap(exprTypes);
    case 'binop': return exprTypes(e.left);
    case 'numgen': return ['int'];
    case 'fib':
    case 'field': return [e.type];
  }
}

function exprText(e: Expr): string {
  switch (e.k) {
    case 'concat': return e.parts.map(exprText).join(' . ');
    case 'binop': return `${exprText(e.left)} ${e.op} 0x${e.right.toString(16)}`;
    case 'numgen': return `numgen random mod ${e.mod}${e.offset ? ` offset ${e.offset}` : ''}`;
    case 'fib': return `fib ${e.addr} type`;
    case 'field': return e.name;
  }
}

class Interpreter {
  private readonly chains = new Map<string, TraceChain>();
  private readonly sets = new Map<string, TraceSet>();
  private readonly parsed = new Map<string, Stmt[]>();
  private readonly compiled = new Map<string, CompiledSet>();
  private readonly anonCompiled = new WeakMap<AnonElement[], Map<string, CompiledSet>>();
  private readonly dynamicSets = new Set<string>();
  private readonly family: 4 | 6;
  private readonly ipFamily: IPFamily;
  private readonly local: Set<bigint>;
  private readonly protoNum: bigint;
  private st!: State;
  private chooser!: Chooser;

  constructor(private readonly table: TraceTable, private readonly packet: TracePacket, node: TraceNode) {
    this.family = table.family === 'ip6' ? 6 : 4;
    this.ipFamily = table.family === 'ip6' ? 'IPv6' : 'IPv4';
    for (const c of table.chains) this.chains.set(c.name, c);
    for (const s of table.sets) this.sets.set(s.name, s);
    for (const c of table.chains) {
      for (const r of c.rules) {
        for (const m of r.matchAll(/\b(?:update|add)\s+@([^\s{]+)/g)) this.dynamicSets.add(m[1]!);
      }
    }
    this.local = new Set([ipToBigInt(parseIP(this.family === 4 ? '127.0.0.1' : '::1')!)]);
    for (const ip of node.localIPs) {
      const p = parseIP(ip, TRACE_IP);
      if (p !== null && p.family === this.ipFamily) this.local.add(ipToBigInt(p));
    }
    this.protoNum = BigInt(PROTOCOL_NUMBER[packet.protocol]);
  }

  private addr(ip: string, what: string): bigint {
    const p = parseIP(ip, TRACE_IP);
    if (p === null) throw new TraceError(`${what} '${ip}' is not an IP address`);
    if (p.family !== this.ipFamily) throw new TraceError(`${what} ${ip} is not an IPv${this.family} address (table family ${this.table.family})`);
    return ipToBigInt(p);
  }

  private isLocal(a: bigint): boolean {
    return this.local.has(a) || (this.family === 4 && a >> 24n === 127n);
  }

  run(chooser: Chooser): TraceBranch {
    this.chooser = chooser;
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
    const { verdict, routed } = walkHooks(pk.from === 'host', {
      hook: (h) => this.hook(h),
      destinationLocal: () => this.isLocal(this.st.daddr),
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
          if (!this.match(s, fail)) return { k: 'nomatch' };
          break;
        case 'vmap': {
          const el = this.lookup(s.key, s.map, true, fail);
          if (!el) return { k: 'nomatch' };
          if (!el.verdict) fail(`map element ${el.key.join(' . ')} has no verdict`);
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: el.verdict! };
        }
        case 'verdict':
          this.st.path.push(`${chain.name}: ${rule}`);
          return { k: 'verdict', v: s.v };
        case 'markset': {
          const v = typeof s.value === 'bigint' ? s.value : this.eval(s.value, fail)[0];
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
            const el = this.lookup(s.key, s.map, true, fail);
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
          const vals = this.eval(s.key, fail);
          if (vals.some((v) => v === undefined)) return { k: 'nomatch' };
          const types = exprTypes(s.key);
          this.st.added.add(`${s.set}|${vals.map(valueKey).join('|')}`);
          const pin: AffinityPin = { set: s.set, key: vals.map((v, i) => this.show(v, types[i]!)).join(' . ') };
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

  private show(v: Value, t: ValueType): string {
    if (typeof v === 'bigint' && (t === 'ip4' || t === 'ip6')) return formatIP(ipFromBigInt(v, t === 'ip4' ? 'IPv4' : 'IPv6'));
    return String(v);
  }

  private field(name: string): Value {
    const s = this.st;
    const fam = this.family;
    switch (name) {
      case 'ip saddr': return fam === 4 ? s.saddr : undefined;
      case 'ip daddr': return fam === 4 ? s.daddr : undefined;
      case 'ip protocol': return fam === 4 ? s.proto : undefined;
      case 'ip6 saddr': return fam === 6 ? s.saddr : undefined;
      case 'ip6 daddr': return fam === 6 ? s.daddr : undefined;
      case 'ip6 nexthdr': return fam === 6 ? s.proto : undefined;
      case 'meta l4proto': return s.proto;
      case 'meta mark': return s.mark;
      case 'meta iifname': return s.iif;
      case 'meta nfproto': return fam === 4 ? 2n : 10n;
      case 'th dport': return s.dport;
      case 'tcp dport': return s.proto === 6n ? s.dport : undefined;
      case 'udp dport': return s.proto === 17n ? s.dport : undefined;
      case 'sctp dport': return s.proto === 132n ? s.dport : undefined;
      case 'ct state': return CT_STATE_NEW;
      case 'ct status': return s.dnat ? CT_STATUS_DNAT : 0n;
      case 'ct mark': return 0n;
    }
    throw new TraceError(`unknown expression '${name}'`);
  }

  private eval(e: Expr, fail: (m: string) => never): Value[] {
    switch (e.k) {
      case 'concat': return e.parts.flatMap((p) => this.eval(p, fail));
      case 'field': {
        if (e.name === 'meta iifname' && this.st.iif === undefined && this.packet.from !== 'host') {
          fail('the rule matches on the input interface: give the packet an input interface');
        }
        return [this.field(e.name)];
      }
      case 'fib': {
        const a = e.addr === 'saddr' ? this.st.saddr : this.st.daddr;
        return [this.isLocal(a) ? FIB_LOCAL : FIB_UNICAST];
      }
      case 'numgen': {
        const v = e.offset + this.chooser.choose(e.mod);
        this.st.conditions.push(`${exprText(e)} = ${v}`);
        return [BigInt(v)];
      }
      case 'binop': {
        const [v] = this.eval(e.left, fail);
        if (typeof v !== 'bigint') return [undefined];
        return [e.op === '&' ? v & e.right : e.op === '|' ? v | e.right : v ^ e.right];
      }
    }
  }

  private match(s: Stmt & { k: 'match' }, fail: (m: string) => never): boolean {
    if (s.left.k === 'numgen' && 'lit' in s.right && s.right.lit.length === 1 && (s.op === 'implicit' || s.op === '==')) {
      // A random test (`numgen random mod 3 0`): two outcomes, not one branch per value, so that
      // a chain of such tests (1/n, 1/(n-1), …) stays linear in its length.
      const want = Number(s.right.lit[0]);
      const hit = this.chooser.choose(2) === 0;
      this.st.conditions.push(`${exprText(s.left)} ${hit ? '=' : '!='} ${want}`);
      return hit;
    }
    const vals = this.eval(s.left, fail);
    // A missing value (no input interface, wrong protocol) ends the rule whatever the operator.
    if (vals.some((v) => v === undefined)) return false;
    const types = exprTypes(s.left);
    let hit: boolean;
    if ('lit' in s.right) {
      const parts = s.right.lit;
      if (parts.includes(',')) {
        if (vals.length !== 1) fail('a list needs a single expression');
        const items = parts.filter((_, i) => i % 2 === 0);
        hit = items.some((t) => literalMatches(this.lit(t, types[0]!, fail), vals[0], types[0]!));
      } else {
        const comps = parts.filter((_, i) => i % 2 === 0);
        if (comps.length !== vals.length) fail(`value has ${comps.length} parts, expression has ${vals.length}`);
        if (s.op === '<' || s.op === '>' || s.op === '<=' || s.op === '>=') {
          if (vals.length !== 1 || typeof vals[0] !== 'bigint') fail('ordering needs one numeric expression');
          const l = this.lit(comps[0]!, types[0]!, fail);
          if ('ifname' in l) fail('ordering on interface names');
          const v = vals[0] as bigint;
          const r = (l as { lo: bigint }).lo;
          return s.op === '<' ? v < r : s.op === '>' ? v > r : s.op === '<=' ? v <= r : v >= r;
        }
        const exactEq = s.op === '==' || !isBitmask(types[0]!);
        hit = comps.every((t, i) => {
          const l = this.lit(t, types[i]!, fail);
          // `ct state new` tests a bit; `ct state == new` compares the whole value.
          if (!exactEq && vals.length === 1) return literalMatches(l, vals[i], types[i]!);
          return 'ifname' in l ? literalMatches(l, vals[i], types[i]!) : vals[i] === l.lo || (l.lo !== l.hi && literalMatches(l, vals[i], 'int'));
        });
      }
    } else {
      hit = this.lookup(s.left, s.right, false, fail, vals) !== undefined;
    }
    return s.op === '!=' ? !hit : hit;
  }

  private lit(text: string, t: ValueType, fail: (m: string) => never): Literal {
    const l = parseLiteral(text, t);
    if (!l) fail(`cannot read '${text}' as ${t}`);
    return l!;
  }

  private compile(elements: AnonElement[], types: ValueType[], fail: (m: string) => never): CompiledSet {
    const out: CompiledSet = { exact: new Map(), ranges: [] };
    const bitmask = types.some(isBitmask);
    for (const el of elements) {
      if (el.key.length !== types.length) fail(`element ${el.key.join(' . ')} has ${el.key.length} parts, lookup key has ${types.length}`);
      const lits = el.key.map((k, i) => this.lit(k, types[i]!, fail));
      if (!bitmask && lits.every(literalIsExact)) out.exact.set(lits.map(literalKey).join('|'), el);
      else out.ranges.push({ lits, el });
    }
    return out;
  }

  /** Finds the element a key hits; unknown membership of a dynamic set is a branch. */
  private lookup(key: Expr, ref: SetRef, isMap: boolean, fail: (m: string) => never, known?: Value[]): AnonElement | undefined {
    const vals = known ?? this.eval(key, fail);
    if (vals.some((v) => v === undefined)) return undefined;
    const types = exprTypes(key);
    const tkey = types.join(',');
    let cs: CompiledSet | undefined;
    let name = '';
    if ('ref' in ref) {
      name = ref.ref;
      const ck = `${name}|${tkey}`;
      cs = this.compiled.get(ck);
      if (!cs) {
        const set = this.sets.get(name);
        if (!set) fail(`no set or map named ${name}`);
        const els = set!.elements.map((e) => {
          try {
            return parseElement(e);
          } catch (err) {
            if (err instanceof ParseError) fail(`element "${e}" of ${name}: ${err.message}`);
            throw err;
          }
        });
        cs = this.compile(els, types, fail);
        this.compiled.set(ck, cs);
      }
    } else {
      let byType = this.anonCompiled.get(ref.anon);
      if (!byType) this.anonCompiled.set(ref.anon, (byType = new Map()));
      cs = byType.get(tkey);
      if (!cs) byType.set(tkey, (cs = this.compile(ref.anon, types, fail)));
    }
    const vkey = vals.map(valueKey).join('|');
    const found = cs.exact.get(vkey) ?? cs.ranges.find((r) => r.lits.every((l, i) => literalMatches(l, vals[i], types[i]!)))?.el;
    if (found) return found;
    if (isMap || !name || !this.dynamicSets.has(name)) return undefined;
    const shown = vals.map((v, i) => this.show(v, types[i]!)).join(' . ');
    if (this.st.added.has(`${name}|${vkey}`)) return { key: [] };
    // Whether an earlier connection left this key in the set is unknown: follow both.
    const member = this.chooser.choose(2) === 0;
    this.st.conditions.push(member ? `${shown} already in @${name}` : `${shown} not in @${name}`);
    return member ? { key: [] } : undefined;
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
