// Literal values of the nft grammar subset the tracer understands, as closed bigint
// intervals (an address, a CIDR and a port range are all one shape) or interface-name
// patterns. Parsing depends on the type of the expression a literal is compared with.
import { isIPv4, isIPv6 } from 'node:net';

export type ValueType =
  | 'ip4'
  | 'ip6'
  | 'proto'
  | 'port'
  | 'int'
  | 'ifname'
  | 'nfproto'
  | 'ctstate'
  | 'ctstatus'
  | 'fibtype';

export type Literal = { lo: bigint; hi: bigint } | { ifname: string; prefix: boolean };

/** A runtime value: numbers for everything but interface names; undefined when absent. */
export type Value = bigint | string | undefined;

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, ipv6_icmp: 58, 'ipv6-icmp': 58, icmpv6: 58, sctp: 132, udplite: 136, dccp: 33 };
const NFPROTO: Record<string, number> = { ipv4: 2, ipv6: 10 };
const CT_STATE: Record<string, number> = { invalid: 1, established: 2, related: 4, new: 8, untracked: 64 };
const CT_STATUS: Record<string, number> = { expected: 1, 'seen-reply': 2, assured: 4, confirmed: 8, snat: 16, dnat: 32, dying: 512 };
const FIB_TYPE: Record<string, number> = {
  unspec: 0, unicast: 1, local: 2, broadcast: 3, anycast: 4, multicast: 5, blackhole: 6, unreachable: 7, prohibit: 8,
};

export const PROTOCOL_NUMBER = { TCP: 6, UDP: 17, SCTP: 132 } as const;
export const CT_STATE_NEW = BigInt(CT_STATE.new!);
export const CT_STATUS_DNAT = BigInt(CT_STATUS.dnat!);
export const FIB_LOCAL = BigInt(FIB_TYPE.local!);
export const FIB_UNICAST = BigInt(FIB_TYPE.unicast!);

/** Types whose implicit comparison is a bit test, as nft does for ct state / ct status. */
export function isBitmask(t: ValueType): boolean {
  return t === 'ctstate' || t === 'ctstatus';
}

export function ipToBigInt(ip: string): { family: 4 | 6; n: bigint } | null {
  if (isIPv4(ip)) {
    let n = 0n;
    for (const part of ip.split('.')) n = (n << 8n) | BigInt(Number(part));
    return { family: 4, n };
  }
  if (isIPv6(ip)) {
    let s = ip;
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
    const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
    if (v4) {
      const n4 = ipToBigInt(v4[1]!)!.n;
      s = s.slice(0, -v4[1]!.length) + ((n4 >> 16n) & 0xffffn).toString(16) + ':' + (n4 & 0xffffn).toString(16);
    }
    const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    let n = 0n;
    for (const g of groups) n = (n << 16n) | BigInt(parseInt(g, 16));
    return { family: 6, n };
  }
  return null;
}

export function bigIntToIP(n: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  // Compress the longest run of zero groups, as the usual textual form does.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return groups.slice(0, best).join(':') + '::' + groups.slice(best + bestLen).join(':');
}

function parseInteger(s: string): bigint | null {
  if (/^0x[0-9a-f]+$/i.test(s) || /^\d+$/.test(s)) return BigInt(s);
  return null;
}

function parseScalar(text: string, type: ValueType): bigint | null {
  const named = (table: Record<string, number>): bigint | null => {
    const v = table[text.toLowerCase()];
    return v === undefined ? parseInteger(text) : BigInt(v);
  };
  switch (type) {
    case 'ip4':
    case 'ip6': {
      const ip = ipToBigInt(text.replace(/^\[|\]$/g, ''));
      return ip && ip.family === (type === 'ip4' ? 4 : 6) ? ip.n : null;
    }
    case 'proto': return named(PROTOCOLS);
    case 'nfproto': return named(NFPROTO);
    case 'ctstate': return named(CT_STATE);
    case 'ctstatus': return named(CT_STATUS);
    case 'fibtype': return named(FIB_TYPE);
    case 'port':
    case 'int': return parseInteger(text);
    case 'ifname': return null;
  }
}

/** Parses one literal (address, CIDR, range, number, symbol, interface name) or returns null. */
export function parseLiteral(raw: string, type: ValueType): Literal | null {
  const text = raw.startsWith('"') ? raw.slice(1, -1) : raw;
  if (type === 'ifname') {
    return text.endsWith('*') && !text.endsWith('\\*')
      ? { ifname: text.slice(0, -1), prefix: true }
      : { ifname: text.replace(/\\\*$/, '*'), prefix: false };
  }
  if ((type === 'ip4' || type === 'ip6') && text.includes('/')) {
    const [addr, lenText] = text.split('/');
    const base = parseScalar(addr!, type);
    const bits = type === 'ip4' ? 32 : 128;
    const len = Number(lenText);
    if (base === null || !/^\d+$/.test(lenText ?? '') || len > bits) return null;
    const host = (1n << BigInt(bits - len)) - 1n;
    const lo = base & ~host & ((1n << BigInt(bits)) - 1n);
    return { lo, hi: lo | host };
  }
  const dash = text.indexOf('-', 1);
  if (dash > 0 && type !== 'ctstatus') {
    const lo = parseScalar(text.slice(0, dash), type);
    const hi = parseScalar(text.slice(dash + 1), type);
    if (lo !== null && hi !== null && lo <= hi) return { lo, hi };
  }
  const v = parseScalar(text, type);
  return v === null ? null : { lo: v, hi: v };
}

/** Whether a runtime value falls in a literal; bitmask types test for shared bits. */
export function literalMatches(lit: Literal, value: Value, type: ValueType): boolean {
  if (value === undefined) return false;
  if ('ifname' in lit) {
    if (typeof value !== 'string') return false;
    return lit.prefix ? value.startsWith(lit.ifname) : value === lit.ifname;
  }
  if (typeof value !== 'bigint') return false;
  if (isBitmask(type) && lit.lo === lit.hi) return (value & lit.lo) !== 0n;
  return value >= lit.lo && value <= lit.hi;
}

export function literalIsExact(lit: Literal): boolean {
  return 'ifname' in lit ? !lit.prefix : lit.lo === lit.hi;
}

/** A canonical text for an exact value, used as a hash key for set lookups. */
export function valueKey(v: Value): string {
  return v === undefined ? '?' : typeof v === 'string' ? `s:${v}` : v.toString(16);
}

export function literalKey(lit: Literal): string {
  return 'ifname' in lit ? `s:${lit.ifname}` : lit.lo.toString(16);
}
