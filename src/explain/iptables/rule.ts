// The rule grammar of the iptables rules the proxy writes, as iptables-save prints them: a
// rule specification is read into header matches (addresses, protocol, interfaces), module
// matches in their order, and one target. Anything outside this subset is an error, never
// a guess, so a trace never silently skips a condition.
import { parseCIDR, parseIP, type CIDR, type IP } from '../../net/ip.js';
import { TRACE_IP } from '../values.js';

export class IptParseError extends Error {}

export type PortModule = 'tcp' | 'udp' | 'sctp';

/** Protocol numbers `-p` accepts by name; 0 is `all`. */
export const IP_PROTOCOLS: Readonly<Record<string, number>> = {
  all: 0, icmp: 1, tcp: 6, udp: 17, dccp: 33, esp: 50, ah: 51, icmpv6: 58, 'ipv6-icmp': 58, sctp: 132, udplite: 136,
};

/** Conntrack states `--ctstate` knows; SNAT and DNAT are the virtual states of a translated connection. */
export const CT_STATES = ['INVALID', 'NEW', 'ESTABLISHED', 'RELATED', 'UNTRACKED', 'SNAT', 'DNAT'] as const;
export type CtState = (typeof CT_STATES)[number];

export type IptMatch =
  | { k: 'addr'; side: 'src' | 'dst'; neg: boolean; cidr: CIDR }
  | { k: 'proto'; neg: boolean; proto: number }
  | { k: 'iface'; side: 'in' | 'out'; neg: boolean; name: string; prefix: boolean }
  | { k: 'port'; module: PortModule; side: 'src' | 'dst'; neg: boolean; lo: number; hi: number }
  | { k: 'addrtype'; side: 'src' | 'dst'; neg: boolean; type: 'LOCAL' }
  | { k: 'statistic'; neg: boolean; probability: number; text: string }
  | { k: 'recent'; neg: boolean; action: 'rcheck' | 'set'; name: string; mask: IP | undefined; side: 'src' | 'dst'; seconds?: number }
  | { k: 'mark'; neg: boolean; value: bigint; mask: bigint }
  | { k: 'ctstate'; neg: boolean; states: CtState[] };

/** New mark = ((mark & and) | or) ^ xor: every MARK option is one of these. */
export interface MarkOp {
  and: bigint;
  or: bigint;
  xor: bigint;
}

export type IptTarget =
  | { k: 'none' }
  | { k: 'jump' | 'goto'; chain: string }
  | { k: 'ACCEPT' | 'DROP' | 'RETURN' }
  | { k: 'REJECT'; with?: string }
  | { k: 'DNAT'; ip: IP; port?: number }
  | { k: 'MARK'; op: MarkOp }
  | { k: 'MASQUERADE'; randomFully: boolean };

export interface IptRule {
  /** Matched on the IP header first, as the kernel does, whatever their place in the text. */
  header: IptMatch[];
  /** Module matches, evaluated in order (a statistic or recent match only runs when reached). */
  modules: IptMatch[];
  comment?: string;
  target: IptTarget;
}

const MASK32 = 0xffffffffn;
const PORT_MODULES: readonly string[] = ['tcp', 'udp', 'sctp'];
const MATCH_MODULES: readonly string[] = [...PORT_MODULES, 'comment', 'addrtype', 'statistic', 'recent', 'mark', 'conntrack'];
const SIMPLE_TARGETS: readonly string[] = ['ACCEPT', 'DROP', 'RETURN'];

/**
 * Splits a line into words as iptables-restore does: whitespace separates, double quotes
 * group (and are removed), a backslash inside quotes escapes the next character.
 */
export function tokenize(line: string): Array<{ text: string; start: number }> {
  const out: Array<{ text: string; start: number }> = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    const start = i;
    let text = '';
    let quoted = false;
    while (i < line.length && (quoted || !/\s/.test(line[i]!))) {
      const c = line[i]!;
      if (c === '"') quoted = !quoted;
      else if (c === '\\' && quoted && i + 1 < line.length) text += line[++i]!;
      else text += c;
      i++;
    }
    if (quoted) throw new IptParseError('unterminated quote');
    out.push({ text, start });
  }
  return out;
}

function parseNumber(text: string, what: string, max: bigint): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new IptParseError(`${what} '${text}' is not a number`);
  const v = BigInt(text);
  if (v > max) throw new IptParseError(`${what} ${text} is out of range`);
  return v;
}

function parsePortRange(text: string): { lo: number; hi: number } {
  const m = /^(\d*)(?::(\d*))?$/.exec(text);
  if (!m || (m[1] === '' && m[2] === undefined)) throw new IptParseError(`bad port '${text}'`);
  const lo = m[1] === '' ? 0 : Number(m[1]);
  const hi = m[2] === undefined ? lo : m[2] === '' ? 65535 : Number(m[2]);
  if (lo > 65535 || hi > 65535 || lo > hi) throw new IptParseError(`bad port '${text}'`);
  return { lo, hi };
}

function parseAddr(text: string): CIDR {
  const cidr = parseCIDR(text, { ...TRACE_IP, bare: true });
  if (cidr === null) throw new IptParseError(`bad address '${text}'`);
  return cidr;
}

function parseValueMask(text: string, what: string): { value: bigint; mask: bigint | undefined } {
  const [v, m, extra] = text.split('/');
  if (extra !== undefined || v === undefined) throw new IptParseError(`bad ${what} '${text}'`);
  return { value: parseNumber(v, what, MASK32), mask: m === undefined ? undefined : parseNumber(m, `${what} mask`, MASK32) };
}

/** `ip`, `ip:port`, `[ip6]:port` or a bare IPv6 address. */
function parseDnatDestination(text: string): { ip: IP; port?: number } {
  let host = text;
  let port: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracket) {
    host = bracket[1]!;
    port = bracket[2];
  } else if (text.indexOf(':') === text.lastIndexOf(':') && text.includes(':')) {
    host = text.slice(0, text.indexOf(':'));
    port = text.slice(text.indexOf(':') + 1);
  }
  const ip = parseIP(host, TRACE_IP);
  if (ip === null) throw new IptParseError(`DNAT: bad address '${host}' (address ranges are not supported)`);
  if (port === undefined) return { ip };
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw new IptParseError(`DNAT: bad port '${port}' (port ranges are not supported)`);
  return { ip, port: Number(port) };
}

function protoNumber(text: string): number {
  const named = IP_PROTOCOLS[text.toLowerCase()];
  if (named !== undefined) return named;
  if (/^\d+$/.test(text) && Number(text) <= 255) return Number(text);
  throw new IptParseError(`unknown protocol '${text}'`);
}

/** One `-m NAME` in the making: its options are collected, then checked as a whole. */
interface OpenModule {
  name: string;
  opts: Array<{ opt: string; neg: boolean; value: string | undefined }>;
}

const MODULE_OPTIONS: Record<string, Record<string, boolean>> = {
  // option → takes a value
  tcp: { '--dport': true, '--destination-port': true, '--sport': true, '--source-port': true },
  udp: { '--dport': true, '--destination-port': true, '--sport': true, '--source-port': true },
  sctp: { '--dport': true, '--destination-port': true, '--sport': true, '--source-port': true },
  comment: { '--comment': true },
  addrtype: { '--src-type': true, '--dst-type': true },
  statistic: { '--mode': true, '--probability': true },
  recent: { '--name': true, '--mask': true, '--rsource': false, '--rdest': false, '--rcheck': false, '--set': false, '--seconds': true, '--reap': false },
  mark: { '--mark': true },
  conntrack: { '--ctstate': true },
};

const TARGET_OPTIONS: Record<string, Record<string, boolean>> = {
  REJECT: { '--reject-with': true },
  DNAT: { '--to-destination': true },
  MARK: { '--set-xmark': true, '--set-mark': true, '--or-mark': true, '--xor-mark': true, '--and-mark': true },
  MASQUERADE: { '--random-fully': false, '--random': false },
};

function closeModule(m: OpenModule, out: IptRule, protoModule: () => PortModule | undefined): void {
  const single = (opt: string): void => {
    if (m.opts.filter((o) => o.opt === opt).length > 1) throw new IptParseError(`-m ${m.name}: ${opt} given twice`);
  };
  const noNeg = (): void => {
    const n = m.opts.find((o) => o.neg);
    if (n) throw new IptParseError(`-m ${m.name}: ${n.opt} cannot be negated`);
  };
  switch (m.name) {
    case 'tcp':
    case 'udp':
    case 'sctp': {
      for (const o of m.opts) {
        const side = o.opt === '--dport' || o.opt === '--destination-port' ? 'dst' : 'src';
        out.modules.push({ k: 'port', module: m.name, side, neg: o.neg, ...parsePortRange(o.value!) });
      }
      // The kernel refuses a port match whose protocol the rule does not pin down.
      if (protoModule() !== m.name) throw new IptParseError(`-m ${m.name} needs -p ${m.name}`);
      break;
    }
    case 'comment': {
      noNeg();
      single('--comment');
      const c = m.opts[0];
      if (!c) throw new IptParseError('-m comment needs --comment');
      out.comment = c.value!;
      break;
    }
    case 'addrtype':
      if (m.opts.length === 0) throw new IptParseError('-m addrtype needs --src-type or --dst-type');
      for (const o of m.opts) {
        if (o.value !== 'LOCAL') throw new IptParseError(`-m addrtype: type '${o.value}' is not supported (only LOCAL)`);
        out.modules.push({ k: 'addrtype', side: o.opt === '--src-type' ? 'src' : 'dst', neg: o.neg, type: 'LOCAL' });
      }
      break;
    case 'statistic': {
      single('--mode');
      single('--probability');
      const mode = m.opts.find((o) => o.opt === '--mode');
      const prob = m.opts.find((o) => o.opt === '--probability');
      if (mode?.neg) throw new IptParseError('-m statistic: --mode cannot be negated');
      if (mode?.value !== 'random') throw new IptParseError(`-m statistic: mode '${mode?.value ?? ''}' is not supported (only random)`);
      if (!prob || !/^(\d+(\.\d*)?|\.\d+)$/.test(prob.value!) || Number(prob.value) > 1) {
        throw new IptParseError(`-m statistic: bad --probability '${prob?.value ?? ''}'`);
      }
      out.modules.push({ k: 'statistic', neg: prob.neg, probability: Number(prob.value), text: prob.value! });
      break;
    }
    case 'recent': {
      for (const o of ['--name', '--mask', '--seconds']) single(o);
      const actions = m.opts.filter((o) => o.opt === '--rcheck' || o.opt === '--set');
      if (actions.length !== 1) throw new IptParseError('-m recent needs exactly one of --rcheck and --set');
      const neg = actions[0]!.neg;
      if (m.opts.some((o) => o.neg && o !== actions[0])) throw new IptParseError('-m recent: only the action can be negated');
      const get = (opt: string): string | undefined => m.opts.find((o) => o.opt === opt)?.value;
      const name = get('--name') ?? 'DEFAULT';
      const maskText = get('--mask');
      const mask = maskText === undefined ? undefined : parseIP(maskText, TRACE_IP) ?? undefined;
      if (maskText !== undefined && mask === undefined) throw new IptParseError(`-m recent: bad --mask '${maskText}'`);
      if (m.opts.some((o) => o.opt === '--rsource') && m.opts.some((o) => o.opt === '--rdest')) throw new IptParseError('-m recent: both --rsource and --rdest');
      const action = actions[0]!.opt === '--rcheck' ? 'rcheck' : 'set';
      const secondsText = get('--seconds');
      if (secondsText !== undefined && action !== 'rcheck') throw new IptParseError('-m recent: --seconds needs --rcheck');
      if (m.opts.some((o) => o.opt === '--reap') && secondsText === undefined) throw new IptParseError('-m recent: --reap needs --seconds');
      const match: IptMatch = { k: 'recent', neg, action, name, mask, side: m.opts.some((o) => o.opt === '--rdest') ? 'dst' : 'src' };
      if (secondsText !== undefined) match.seconds = Number(parseNumber(secondsText, '--seconds', MASK32));
      out.modules.push(match);
      break;
    }
    case 'mark': {
      single('--mark');
      const o = m.opts[0];
      if (!o) throw new IptParseError('-m mark needs --mark');
      const { value, mask } = parseValueMask(o.value!, 'mark');
      out.modules.push({ k: 'mark', neg: o.neg, value, mask: mask ?? MASK32 });
      break;
    }
    case 'conntrack': {
      single('--ctstate');
      const o = m.opts[0];
      if (!o) throw new IptParseError('-m conntrack needs --ctstate');
      const states = o.value!.split(',').map((s) => {
        const up = s.toUpperCase();
        if (!(CT_STATES as readonly string[]).includes(up)) throw new IptParseError(`-m conntrack: unknown state '${s}'`);
        return up as CtState;
      });
      out.modules.push({ k: 'ctstate', neg: o.neg, states });
      break;
    }
  }
}

function buildTarget(name: string, kind: 'jump' | 'goto', opts: Array<{ opt: string; value: string | undefined }>): IptTarget {
  const get = (opt: string): string | undefined => opts.find((o) => o.opt === opt)?.value;
  if (kind === 'goto') {
    if (opts.length > 0) throw new IptParseError(`-g ${name} takes no options`);
    return { k: 'goto', chain: name };
  }
  if (SIMPLE_TARGETS.includes(name)) {
    if (opts.length > 0) throw new IptParseError(`-j ${name} takes no options`);
    return { k: name as 'ACCEPT' | 'DROP' | 'RETURN' };
  }
  if (opts.length !== new Set(opts.map((o) => o.opt)).size) throw new IptParseError(`-j ${name}: an option is given twice`);
  switch (name) {
    case 'REJECT': {
      const w = get('--reject-with');
      return w === undefined ? { k: 'REJECT' } : { k: 'REJECT', with: w };
    }
    case 'DNAT': {
      const to = get('--to-destination');
      if (to === undefined) throw new IptParseError('-j DNAT needs --to-destination');
      return { k: 'DNAT', ...parseDnatDestination(to) };
    }
    case 'MARK': {
      if (opts.length !== 1) throw new IptParseError('-j MARK needs exactly one mark option');
      const { opt, value } = opts[0]!;
      const vm = parseValueMask(value!, opt);
      if (vm.mask !== undefined && opt !== '--set-xmark' && opt !== '--set-mark') throw new IptParseError(`-j MARK ${opt} takes no mask`);
      const v = vm.value;
      const clear = MASK32 & ~(vm.mask ?? MASK32);
      const op: MarkOp =
        opt === '--set-xmark' ? { and: clear, or: 0n, xor: v }
        : opt === '--set-mark' ? { and: clear, or: v, xor: 0n }
        : opt === '--or-mark' ? { and: MASK32, or: v, xor: 0n }
        : opt === '--xor-mark' ? { and: MASK32, or: 0n, xor: v }
        : { and: v, or: 0n, xor: 0n };
      return { k: 'MARK', op };
    }
    case 'MASQUERADE':
      return { k: 'MASQUERADE', randomFully: opts.some((o) => o.opt === '--random-fully') };
  }
  if (opts.length > 0 || !/^[A-Za-z0-9_.-]+$/.test(name)) throw new IptParseError(`target '${name}' is not supported`);
  // Whether NAME is a chain or an unsupported extension target is settled when the rule runs.
  return { k: 'jump', chain: name };
}

/** Reads one rule specification (what follows `-A CHAIN`). Throws IptParseError. */
export function parseRule(spec: string): IptRule {
  const words = tokenize(spec).map((t) => t.text);
  const rule: IptRule = { header: [], modules: [], target: { k: 'none' } };
  const modules: OpenModule[] = [];
  let target: { name: string; kind: 'jump' | 'goto'; opts: Array<{ opt: string; value: string | undefined }> } | undefined;
  let proto: { neg: boolean; proto: number } | undefined;
  const seenHeader = new Set<string>();
  const value = (i: number, opt: string): string => {
    const v = words[i];
    if (v === undefined || v === '!') throw new IptParseError(`${opt} needs a value`);
    return v;
  };
  for (let i = 0; i < words.length; i++) {
    let w = words[i]!;
    let neg = false;
    if (w === '!') {
      neg = true;
      w = words[++i] ?? '';
      if (w === '' || w === '!') throw new IptParseError("'!' must precede an option");
    }
    const header = (key: string): void => {
      if (target) throw new IptParseError(`${w} after the target`);
      if (seenHeader.has(key)) throw new IptParseError(`${w} given twice`);
      seenHeader.add(key);
    };
    switch (w) {
      case '-s': case '--source': case '--src':
      case '-d': case '--destination': case '--dst': {
        const side = w === '-s' || w.startsWith('--s') ? 'src' : 'dst';
        header(side);
        rule.header.push({ k: 'addr', side, neg, cidr: parseAddr(value(++i, w)) });
        continue;
      }
      case '-p': case '--protocol':
        header('proto');
        proto = { neg, proto: protoNumber(value(++i, w)) };
        rule.header.push({ k: 'proto', ...proto });
        continue;
      case '-i': case '--in-interface':
      case '-o': case '--out-interface': {
        const side = w === '-i' || w === '--in-interface' ? 'in' : 'out';
        header(side);
        const name = value(++i, w);
        const prefix = name.endsWith('+');
        rule.header.push({ k: 'iface', side, neg, name: prefix ? name.slice(0, -1) : name, prefix });
        continue;
      }
      case '-m': case '--match': {
        if (neg) throw new IptParseError(`'!' cannot precede ${w}`);
        if (target) throw new IptParseError(`${w} after the target`);
        const name = value(++i, w);
        if (!MATCH_MODULES.includes(name)) throw new IptParseError(`match module '${name}' is not supported`);
        modules.push({ name, opts: [] });
        continue;
      }
      case '-j': case '--jump':
      case '-g': case '--goto':
        if (neg) throw new IptParseError(`'!' cannot precede ${w}`);
        if (target) throw new IptParseError('more than one target');
        target = { name: value(++i, w), kind: w === '-g' || w === '--goto' ? 'goto' : 'jump', opts: [] };
        continue;
    }
    if (!w.startsWith('--')) throw new IptParseError(`unexpected '${w}'`);
    if (target) {
      const takesValue = TARGET_OPTIONS[target.name]?.[w];
      if (takesValue === undefined) throw new IptParseError(`option ${w} of target ${target.name} is not supported`);
      if (neg) throw new IptParseError(`target option ${w} cannot be negated`);
      target.opts.push({ opt: w, value: takesValue ? value(++i, w) : undefined });
      continue;
    }
    // An option belongs to the module loaded last; `-p tcp --dport` loads tcp implicitly.
    let mod = modules[modules.length - 1];
    if ((!mod || MODULE_OPTIONS[mod.name]?.[w] === undefined) && proto && !proto.neg && ['--dport', '--sport', '--destination-port', '--source-port'].includes(w)) {
      const implicit = Object.entries(IP_PROTOCOLS).find(([n, v]) => v === proto!.proto && PORT_MODULES.includes(n))?.[0];
      if (implicit) {
        mod = modules.find((m) => m.name === implicit) ?? { name: implicit, opts: [] };
        if (!modules.includes(mod)) modules.push(mod);
      }
    }
    const takesValue = mod ? MODULE_OPTIONS[mod.name]?.[w] : undefined;
    if (!mod || takesValue === undefined) throw new IptParseError(`option ${w} is not supported${mod ? ` by -m ${mod.name}` : ''}`);
    mod.opts.push({ opt: w, neg, value: takesValue ? value(++i, w) : undefined });
  }
  const protoModule = (): PortModule | undefined => {
    if (!proto || proto.neg) return undefined;
    return PORT_MODULES.find((n) => IP_PROTOCOLS[n] === proto!.proto) as PortModule | undefined;
  };
  for (const m of modules) closeModule(m, rule, protoModule);
  if (target) rule.target = buildTarget(target.name, target.kind, target.opts);
  return rule;
}
