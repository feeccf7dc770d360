// Literal values of the nft grammar subset the tracer understands, as closed bigint
// intervals (an address, a CIDR and a port range are all one shape) or interface-name
// patterns. Parsing depends on the type of the expression a literal is compared with.
import { bitLength, ipToBigInt, parseCIDR, parseIP, type IPFamily, type ParseOptions } from '../net/ip.js';

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

/** How the tracer reads addresses: canonical decimal, IPv4-mapped IPv6 accepted. */
export const TRACE_IP: ParseOptions = { v4Mapped: true };

const IP_FAMILY = { ip4: 'IPv4', ip6: 'IPv6' } as const satisfies Record<string, IPFamily>;

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
      const ip = parseIP(text.replace(/^\[|\]$/g, ''), TRACE_IP);
      return ip !== null && ip.family === IP_FAMILY[type] ? ipToBigInt(ip) : null;
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
    const cidr = parseCIDR(text, TRACE_IP);
    if (cidr === null || cidr.family !== IP_FAMILY[type]) return null;
    const lo = ipToBigInt(cidr);
    return { lo, hi: lo | ((1n << BigInt(bitLength(cidr.family) - cidr.prefix)) - 1n) };
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
