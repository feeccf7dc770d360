// The nftables tracer's expressions: a packet's fields, comparisons with literals and set or map
// lookups, evaluated for one branch. Random numbers and unknown dynamic-set membership are the
// chooser's choices; walking rules and chains is nftables.ts's.
import {
  CT_STATE_NEW,
  CT_STATUS_DNAT,
  FIB_LOCAL,
  FIB_UNICAST,
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
import { formatIP, ipFromBigInt, ipToBigInt, parseIP } from '../net/ip.js';
import { ParseError, parseElement, type AnonElement, type Expr, type SetRef, type Stmt } from './parse.js';
import { TraceError, type AffinityPin, type Chooser, type TraceNode, type TracePacket } from './tracer.js';

/** The connection as the rules have changed it so far in one branch, and what that branch assumed. */
export interface PacketState {
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

/** Reports why a rule cannot be interpreted; never returns. */
export type Fail = (m: string) => never;

interface CompiledSet {
  exact: Map<string, AnonElement>;
  ranges: Array<{ lits: Literal[]; el: AnonElement }>;
}

export function exprTypes(e: Expr): ValueType[] {
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

/** A value as nft prints it. */
export function showValue(v: Value, t: ValueType): string {
  if (typeof v === 'bigint' && (t === 'ip4' || t === 'ip6')) return formatIP(ipFromBigInt(v, t === 'ip4' ? 'IPv4' : 'IPv6'));
  return String(v);
}

/**
 * Evaluates expressions against the branch being traced (see start). Sets are compiled once per
 * key type and kept across branches.
 */
export class ExprEvaluator {
  private readonly compiled = new Map<string, CompiledSet>();
  private readonly anonCompiled = new WeakMap<AnonElement[], Map<string, CompiledSet>>();
  private readonly local: Set<bigint>;
  private st!: PacketState;
  private chooser!: Chooser;

  /**
   * `setElements`: a named set's elements in nft syntax; `dynamicSets`: the sets rules add to,
   * whose membership an earlier connection may have changed.
   */
  constructor(
    private readonly family: 4 | 6,
    private readonly setElements: (name: string) => string[] | undefined,
    private readonly dynamicSets: ReadonlySet<string>,
    private readonly packet: TracePacket,
    node: TraceNode,
  ) {
    this.local = new Set([ipToBigInt(parseIP(family === 4 ? '127.0.0.1' : '::1')!)]);
    for (const ip of node.localIPs) {
      const p = parseIP(ip, TRACE_IP);
      if (p !== null && p.family === (family === 6 ? 'IPv6' : 'IPv4')) this.local.add(ipToBigInt(p));
    }
  }

  /** The branch the next evaluations read, and the chooser of its choices. */
  start(st: PacketState, chooser: Chooser): void {
    this.st = st;
    this.chooser = chooser;
  }

  isLocal(a: bigint): boolean {
    return this.local.has(a) || (this.family === 4 && a >> 24n === 127n);
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

  eval(e: Expr, fail: Fail): Value[] {
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

  match(s: Stmt & { k: 'match' }, fail: Fail): boolean {
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

  private lit(text: string, t: ValueType, fail: Fail): Literal {
    const l = parseLiteral(text, t);
    if (!l) fail(`cannot read '${text}' as ${t}`);
    return l!;
  }

  private compile(elements: AnonElement[], types: ValueType[], fail: Fail): CompiledSet {
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
  lookup(key: Expr, ref: SetRef, isMap: boolean, fail: Fail, known?: Value[]): AnonElement | undefined {
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
        const elements = this.setElements(name);
        if (!elements) fail(`no set or map named ${name}`);
        const els = elements!.map((e) => {
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
    const shown = vals.map((v, i) => showValue(v, types[i]!)).join(' . ');
    if (this.st.added.has(`${name}|${vkey}`)) return { key: [] };
    // Whether an earlier connection left this key in the set is unknown: follow both.
    const member = this.chooser.choose(2) === 0;
    this.st.conditions.push(member ? `${shown} already in @${name}` : `${shown} not in @${name}`);
    return member ? { key: [] } : undefined;
  }
}
