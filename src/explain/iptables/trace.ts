// Packet tracer over iptables restore input: walks a new connection through the netfilter
// hooks and the tables registered on them, interpreting the rules themselves. Every random
// choice (`-m statistic`), unknown recent-list membership (session affinity) and unknown
// source port is a branch, as in the nftables tracer.
import { formatIP, ipFromBigInt, ipToBigInt, parseIP, type IPFamily } from '../../net/ip.js';
import { TraceError, traceBranches, walkHooks, type AffinityPin, type Chooser, type TraceBranch, type TraceNode, type TracePacket, type TraceResult, type TraceVerdict } from '../tracer.js';
import { PROTOCOL_NUMBER, TRACE_IP } from '../values.js';
import { restoreTables } from './hooks.js';
import type { IptTableName, RestoreChain, RestoreInput } from './restore.js';
import { IptParseError, parseRule, type IptMatch, type IptRule } from './rule.js';

type Hook = 'PREROUTING' | 'INPUT' | 'FORWARD' | 'OUTPUT' | 'POSTROUTING';

/** Tables on each hook, in the kernel's priority order. */
const HOOK_TABLES: Record<Hook, IptTableName[]> = {
  PREROUTING: ['raw', 'mangle', 'nat'],
  INPUT: ['mangle', 'filter', 'security', 'nat'],
  FORWARD: ['mangle', 'filter', 'security'],
  OUTPUT: ['raw', 'mangle', 'nat', 'filter', 'security'],
  POSTROUTING: ['mangle', 'nat'],
};

/** NAT on a hook binds the destination (before routing) or the source (after). */
const NAT_KIND: Partial<Record<Hook, 'dst' | 'src'>> = { PREROUTING: 'dst', OUTPUT: 'dst', INPUT: 'src', POSTROUTING: 'src' };

const MAX_JUMP_DEPTH = 32;
const MASK32 = 0xffffffffn;

interface State {
  saddr: bigint;
  daddr: bigint;
  dport: bigint;
  iif: string | undefined;
  oif: string | undefined;
  mark: bigint;
  dnat: boolean;
  masquerade: boolean;
  natDone: { dst: boolean; src: boolean };
  /** Source ports already decided on this branch: the port match text → matched. */
  sport: Map<string, boolean>;
  conditions: string[];
  path: string[];
  pins: AffinityPin[];
  recent: Set<string>;
}

interface Where {
  table: IptTableName;
  chain: RestoreChain;
  spec: string;
  hook: Hook;
}

type Outcome = { k: 'next' } | { k: 'verdict'; v: 'ACCEPT' | 'DROP' | 'REJECT' | 'RETURN' } | { k: 'jump' | 'goto'; chain: RestoreChain };

class IptInterpreter {
  private readonly parsed = new Map<string, IptRule>();
  private readonly local: Set<bigint>;
  private readonly proto: bigint;
  /** Recent-list name → the `--seconds` of the checks that read it (the pin's lifetime). */
  private readonly recentSeconds = new Map<string, number>();
  private st!: State;
  private chooser!: Chooser;

  constructor(
    private readonly tables: RestoreInput,
    private readonly family: IPFamily,
    private readonly packet: TracePacket,
    node: TraceNode,
  ) {
    this.local = new Set([ipToBigInt(parseIP(family === 'IPv4' ? '127.0.0.1' : '::1')!)]);
    for (const ip of node.localIPs) {
      const p = parseIP(ip, TRACE_IP);
      if (p !== null && p.family === family) this.local.add(ipToBigInt(p));
    }
    this.proto = BigInt(PROTOCOL_NUMBER[packet.protocol]);
    for (const t of tables.values()) {
      for (const c of t.chains.values()) {
        for (const spec of c.rules.filter((r) => r.includes('--rcheck'))) {
          for (const m of this.parsedQuietly(spec)?.modules ?? []) {
            if (m.k === 'recent' && m.action === 'rcheck' && m.seconds !== undefined) this.recentSeconds.set(m.name, m.seconds);
          }
        }
      }
    }
  }

  /** A rule read for what it tells about others; one that cannot be read fails when a trace reaches it. */
  private parsedQuietly(spec: string): IptRule | undefined {
    try {
      return parseRule(spec);
    } catch (e) {
      if (e instanceof IptParseError) return undefined;
      throw e;
    }
  }

  private addr(ip: string, what: string): bigint {
    const p = parseIP(ip, TRACE_IP);
    if (p === null) throw new TraceError(`${what} '${ip}' is not an IP address`);
    if (p.family !== this.family) throw new TraceError(`${what} ${ip} is not an ${this.family} address`);
    return ipToBigInt(p);
  }

  private isLocal(a: bigint): boolean {
    return this.local.has(a) || (this.family === 'IPv4' && a >> 24n === 127n);
  }

  private show(a: bigint): string {
    return formatIP(ipFromBigInt(a, this.family));
  }

  run(chooser: Chooser): TraceBranch {
    this.chooser = chooser;
    const pk = this.packet;
    this.st = {
      saddr: this.addr(pk.sourceIP, 'source'),
      daddr: this.addr(pk.destIP, 'destination'),
      dport: BigInt(pk.destPort),
      iif: pk.from === 'host' ? undefined : pk.inInterface,
      oif: undefined,
      mark: BigInt(pk.mark ?? 0),
      dnat: false,
      masquerade: false,
      natDone: { dst: false, src: false },
      sport: new Map(),
      conditions: [],
      path: [],
      pins: [],
      recent: new Set(),
    };
    const { verdict, routed } = walkHooks(pk.from === 'host', {
      hook: (h) => this.hook(h.toUpperCase() as Hook),
      destinationLocal: () => this.isLocal(this.st.daddr),
      // The output interface is known before OUTPUT only for local destinations.
      routed: (local) => (this.st.oif = local ? 'lo' : undefined),
      // PREROUTING and INPUT see it again; NAT is already bound both ways.
      loopedBack: () => (this.st.iif = 'lo'),
    });
    const s = this.st;
    const branch: TraceBranch = { conditions: s.conditions, verdict, masquerade: verdict === 'ACCEPT' && s.masquerade, path: s.path, pins: s.pins };
    if (routed) branch.routed = routed;
    if (s.dnat) branch.endpoint = { ip: this.show(s.daddr), port: Number(s.dport) };
    return branch;
  }

  /** Runs the hook's built-in chain of every table on it; NAT runs once per connection and kind. */
  private hook(hook: Hook): TraceVerdict {
    const natKind = NAT_KIND[hook];
    const natBound = natKind !== undefined && this.st.natDone[natKind];
    for (const name of HOOK_TABLES[hook]) {
      const table = this.tables.get(name);
      if (!table || (name === 'nat' && natBound)) continue;
      const chain = table.chains.get(hook);
      if (!chain) continue;
      const v = this.runChain(name, chain, hook);
      if (v !== 'ACCEPT') return v;
    }
    if (natKind !== undefined) this.st.natDone[natKind] = true;
    return 'ACCEPT';
  }

  private runChain(table: IptTableName, base: RestoreChain, hook: Hook): TraceVerdict {
    const stack: Array<{ chain: RestoreChain; idx: number }> = [];
    let cur = base;
    let idx = 0;
    const chains = this.tables.get(table)!.chains;
    for (;;) {
      if (idx >= cur.rules.length) {
        const ret = stack.pop();
        if (!ret) return this.policy(table, base);
        ({ chain: cur, idx } = ret);
        continue;
      }
      const spec = cur.rules[idx++]!;
      const out = this.evalRule({ table, chain: cur, spec, hook }, chains);
      if (out.k === 'next') continue;
      if (out.k === 'verdict') {
        if (out.v !== 'RETURN') return out.v;
        const ret = stack.pop();
        if (!ret) return this.policy(table, base);
        ({ chain: cur, idx } = ret);
        continue;
      }
      if (out.k === 'jump') {
        if (stack.length >= MAX_JUMP_DEPTH) throw new TraceError(`${table}/${cur.name}: rule "${spec}" exceeds the jump depth limit`);
        stack.push({ chain: cur, idx });
      }
      cur = out.chain;
      idx = 0;
    }
  }

  /** Falling off (or returning from) a built-in chain applies its policy. */
  private policy(table: IptTableName, base: RestoreChain): TraceVerdict {
    if (base.policy !== 'DROP') return 'ACCEPT';
    this.st.path.push(`${table}/${base.name}: policy DROP`);
    return 'DROP';
  }

  private rule(w: Where): IptRule {
    let r = this.parsed.get(w.spec);
    if (!r) {
      try {
        r = parseRule(w.spec);
      } catch (e) {
        if (e instanceof IptParseError) throw new TraceError(`${w.table}/${w.chain.name}: cannot interpret rule "${w.spec}": ${e.message}`);
        throw e;
      }
      this.parsed.set(w.spec, r);
    }
    return r;
  }

  private evalRule(w: Where, chains: Map<string, RestoreChain>): Outcome {
    const fail = (msg: string): never => {
      throw new TraceError(`${w.table}/${w.chain.name}: cannot interpret rule "${w.spec}": ${msg}`);
    };
    const r = this.rule(w);
    for (const m of r.header) if (!this.match(m, w, fail)) return { k: 'next' };
    for (const m of r.modules) if (!this.match(m, w, fail)) return { k: 'next' };
    const s = this.st;
    s.path.push(`${w.table}/${w.chain.name}: ${w.spec}`);
    const t = r.target;
    switch (t.k) {
      case 'none':
        return { k: 'next' };
      case 'ACCEPT':
      case 'DROP':
      case 'RETURN':
        return { k: 'verdict', v: t.k };
      case 'REJECT':
        if (w.table !== 'filter') fail('REJECT is only valid in the filter table');
        return { k: 'verdict', v: 'REJECT' };
      case 'jump':
      case 'goto': {
        const target = chains.get(t.chain);
        if (!target) return fail(`no chain or supported target named ${t.chain} in table ${w.table}`);
        if (target.builtin) fail(`cannot jump to built-in chain ${t.chain}`);
        return { k: t.k, chain: target };
      }
      case 'MARK': {
        const { and, or, xor } = t.op;
        s.mark = (((s.mark & and) | or) ^ xor) & MASK32;
        return { k: 'next' };
      }
      case 'DNAT': {
        if (w.table !== 'nat' || NAT_KIND[w.hook] !== 'dst') fail('DNAT is only valid in nat PREROUTING and OUTPUT');
        if (t.ip.family !== this.family) fail(`DNAT to an ${t.ip.family} address in an ${this.family} ruleset`);
        s.daddr = ipToBigInt(t.ip);
        if (t.port !== undefined) s.dport = BigInt(t.port);
        s.dnat = true;
        // A NAT target ends the nat table for this hook: the binding is made.
        return { k: 'verdict', v: 'ACCEPT' };
      }
      case 'MASQUERADE':
        if (w.table !== 'nat' || w.hook !== 'POSTROUTING') fail('MASQUERADE is only valid in nat POSTROUTING');
        s.masquerade = true;
        return { k: 'verdict', v: 'ACCEPT' };
    }
  }

  private match(m: IptMatch, w: Where, fail: (msg: string) => never): boolean {
    const s = this.st;
    const hit = ((): boolean => {
      switch (m.k) {
        case 'addr': {
          if (m.cidr.family !== this.family) fail(`an ${m.cidr.family} address in an ${this.family} ruleset`);
          const bits = BigInt(this.family === 'IPv4' ? 32 : 128);
          const shift = bits - BigInt(m.cidr.prefix);
          return (m.side === 'src' ? s.saddr : s.daddr) >> shift === ipToBigInt(m.cidr) >> shift;
        }
        case 'proto':
          return m.proto === 0 || BigInt(m.proto) === this.proto;
        case 'iface': {
          // As the kernel: no input interface after routing a local packet out, no output interface before routing.
          const invalid = m.side === 'in' ? w.hook === 'OUTPUT' || w.hook === 'POSTROUTING' : w.hook === 'PREROUTING' || w.hook === 'INPUT';
          if (invalid) fail(`${m.side === 'in' ? '-i' : '-o'} cannot be used on ${w.hook}`);
          const have = m.side === 'in' ? s.iif : s.oif;
          if (have === undefined) {
            fail(m.side === 'in'
              ? 'the rule matches on the input interface: give the packet an input interface'
              : 'the rule matches on the output interface, which depends on routes the trace does not know');
          }
          return m.prefix ? have!.startsWith(m.name) : have === m.name;
        }
        case 'port': {
          if (m.side === 'dst') return s.dport >= BigInt(m.lo) && s.dport <= BigInt(m.hi);
          return this.sourcePort(m.lo, m.hi);
        }
        case 'addrtype':
          return this.isLocal(m.side === 'src' ? s.saddr : s.daddr);
        case 'statistic':
          return this.random(m.probability, m.text, w);
        case 'recent':
          return this.recent(m, fail);
        case 'mark':
          return (s.mark & m.mask) === m.value;
        case 'ctstate': {
          // A new connection: NEW, plus the virtual states of the translations made so far.
          const have = new Set(['NEW', ...(s.dnat ? ['DNAT'] : []), ...(s.masquerade ? ['SNAT'] : [])]);
          return m.states.some((x) => have.has(x));
        }
      }
    })();
    return m.neg ? !hit : hit;
  }

  /** Both outcomes of a random draw are followed, each with its probability as the condition. */
  private random(p: number, text: string, w: Where): boolean {
    if (p <= 0) return false;
    if (p >= 1) return true;
    const taken = this.chooser.choose(2) === 0;
    const rest = (1 - p).toFixed(Math.max(1, text.split('.')[1]?.length ?? 1));
    this.st.conditions.push(`${w.chain.name}: random ${taken ? `p=${text} matched` : `p=${rest} not matched`}`);
    return taken;
  }

  /** The trace does not fix a source port: a port match is a branch, decided once per branch. */
  private sourcePort(lo: number, hi: number): boolean {
    const key = lo === hi ? `${lo}` : `${lo}:${hi}`;
    const known = this.st.sport.get(key);
    if (known !== undefined) return known;
    const inside = this.chooser.choose(2) === 0;
    this.st.sport.set(key, inside);
    this.st.conditions.push(`source port ${inside ? 'in' : 'not in'} ${key}`);
    return inside;
  }

  private recent(m: IptMatch & { k: 'recent' }, fail: (msg: string) => never): boolean {
    const s = this.st;
    if (m.mask && m.mask.family !== this.family) fail(`--mask ${formatIP(m.mask)} is not an ${this.family} address`);
    const addr = m.side === 'src' ? s.saddr : s.daddr;
    const key = m.mask ? addr & ipToBigInt(m.mask) : addr;
    const shown = this.show(key);
    const id = `${m.name}|${key}`;
    if (m.action === 'set') {
      s.recent.add(id);
      const pin: AffinityPin = { set: m.name, key: shown };
      const seconds = this.recentSeconds.get(m.name);
      if (seconds !== undefined) pin.timeout = `${seconds}s`;
      if (!s.pins.some((p) => p.set === pin.set && p.key === pin.key)) s.pins.push(pin);
      return true;
    }
    if (s.recent.has(id)) return true;
    // Whether an earlier connection left this address in the list is unknown: follow both.
    const member = this.chooser.choose(2) === 0;
    const within = m.seconds !== undefined ? ` within ${m.seconds}s` : '';
    s.conditions.push(member ? `${shown} seen in recent list ${m.name}${within}` : `${shown} not in recent list ${m.name}${within}`);
    return member;
  }
}

/** Traces a new connection through iptables restore input for one IP family. */
export function traceIptables(restoreInput: string, family: IPFamily, packet: TracePacket, node: TraceNode): TraceResult {
  if (!Number.isInteger(packet.destPort) || packet.destPort < 0 || packet.destPort > 65535) {
    throw new TraceError(`destination port ${packet.destPort} is out of range`);
  }
  if (!(packet.protocol in PROTOCOL_NUMBER)) throw new TraceError(`unknown protocol '${String(packet.protocol)}'`);
  const interp = new IptInterpreter(restoreTables(restoreInput), family, packet, node);
  return traceBranches((chooser) => interp.run(chooser));
}
