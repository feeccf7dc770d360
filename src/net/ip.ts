// IP addresses and CIDRs as text: parsing, canonical formatting, containment. The model,
// the configuration, the nftables backend and the tracer all read addresses here; each
// states how lenient it is through options, and the defaults are the strictest forms.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are rejected unless `v4Mapped` is set, and
// even then they stay IPv6 addresses: they are never turned into IPv4, so they are not
// inside any IPv4 CIDR, just as an ip6 rule never matches an IPv4 packet.
// Defined here, the lowest layer; the model re-exports it.
export type IPFamily = 'IPv4' | 'IPv6';

export interface IP {
  family: IPFamily;
  /** 16-bit groups, most significant first: two for IPv4, eight for IPv6. */
  groups: number[];
}

export interface CIDR extends IP {
  /** Prefix length. `groups` hold the network address: host bits are always cleared. */
  prefix: number;
}

export interface ParseOptions {
  /**
   * Accept leading zeros in the octets of a plain IPv4 address and in a prefix length,
   * read as decimal ("010.1.1.1" is 10.1.1.1), as Go's ParseIPSloppy does; at most three
   * digits still. Without it they are rejected, because some parsers read them as octal.
   * An IPv4 address embedded in IPv6 never takes leading zeros.
   */
  leadingZeros?: boolean;
  /** Accept IPv4-mapped IPv6 addresses (::ffff:0:0/96, however written). */
  v4Mapped?: boolean;
}

export interface CIDROptions extends ParseOptions {
  /** Read an address without "/prefix" as a full-length prefix. */
  bare?: boolean;
}

export interface FormatOptions {
  /**
   * Write IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses with a
   * dotted quad, as inet_ntop, and so nft, prints them. Otherwise every group is hex.
   */
  dottedQuad?: boolean;
}

/** Number of bits of an address of the family: 32 or 128. */
export function bitLength(family: IPFamily): number {
  return family === 'IPv4' ? 32 : 128;
}

/** One to three decimal digits as a number (the caller checks the range); null otherwise. */
function decimalByte(s: string, from: number, to: number, leadingZeros: boolean): number | null {
  const digits = to - from;
  if (digits === 0 || digits > 3) return null;
  if (!leadingZeros && digits > 1 && s.charCodeAt(from) === 48 /* 0 */) return null;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return null;
    v = v * 10 + (c - 48);
  }
  return v;
}

// A hand-written scanner without regexes or split: the model reads every endpoint address here.
function parseIPv4(s: string, leadingZeros: boolean): number[] | null {
  const octets: number[] = [];
  let start = 0;
  for (let i = 0; i <= s.length; i++) {
    if (i < s.length && s.charCodeAt(i) !== 46 /* . */) continue;
    if (octets.length === 4) return null;
    const v = decimalByte(s, start, i, leadingZeros);
    if (v === null || v > 255) return null;
    octets.push(v);
    start = i + 1;
  }
  if (octets.length !== 4) return null;
  return [octets[0]! * 256 + octets[1]!, octets[2]! * 256 + octets[3]!];
}

/**
 * Whether the text is an IPv4 address exactly as `formatIP` writes it (four decimal octets of
 * at most 255, no leading zeros). Callers return such text as it is: most addresses arrive
 * canonical, and parsing and formatting each again allocated ~400 bytes per address.
 */
export function isCanonicalIPv4(s: string): boolean {
  const n = s.length;
  if (n < 7 || n > 15) return false;
  let dots = 0;
  let start = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : 46;
    if (c === 46 /* . */) {
      const digits = i - start;
      if (digits === 0 || digits > 3) return false;
      if (digits > 1 && s.charCodeAt(start) === 48 /* 0 */) return false;
      if (digits === 3) {
        const v = (s.charCodeAt(start) - 48) * 100 + (s.charCodeAt(start + 1) - 48) * 10 + (s.charCodeAt(start + 2) - 48);
        if (v > 255) return false;
      }
      if (i < n) dots++;
      start = i + 1;
    } else if (c < 48 || c > 57) return false;
  }
  return dots === 3;
}

/** One to four hex digits, either case; -1 for anything else. */
function hexGroup(s: string): number {
  if (s.length === 0 || s.length > 4) return -1;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) v = v * 16 + (c - 48);
    else if (c >= 97 && c <= 102) v = v * 16 + (c - 87);
    else if (c >= 65 && c <= 70) v = v * 16 + (c - 55);
    else return -1;
  }
  return v;
}

/** Groups of one side of "::"; only the last part of the address may be a dotted quad. */
function sideGroups(side: string, v4Tail: boolean): number[] | null {
  if (side === '') return [];
  const parts = side.split(':');
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (v4Tail && i === parts.length - 1 && p.includes('.')) {
      const v4 = parseIPv4(p, false);
      if (v4 === null) return null;
      out.push(v4[0]!, v4[1]!);
    } else {
      const g = hexGroup(p);
      if (g < 0) return null;
      out.push(g);
    }
  }
  return out;
}

function parseIPv6(s: string): number[] | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  if (halves.length === 1) {
    const g = sideGroups(s, true);
    return g !== null && g.length === 8 ? g : null;
  }
  const head = sideGroups(halves[0]!, false);
  const tail = sideGroups(halves[1]!, true);
  // "::" stands for at least one zero group.
  if (head === null || tail === null || head.length + tail.length > 7) return null;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

function isV4Mapped(g: number[]): boolean {
  return g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
}

/**
 * Parses a dotted-quad IPv4 address or an IPv6 address (with "::" compression and an
 * optional dotted-quad tail). Zones ("fe80::1%eth0"), brackets, whitespace and anything
 * else are rejected with null.
 */
export function parseIP(text: unknown, opts: ParseOptions = {}): IP | null {
  // The longest IPv6 text is 45 characters (six groups of four and a dotted quad).
  if (typeof text !== 'string' || text.length === 0 || text.length > 45) return null;
  if (!text.includes(':')) {
    const g = parseIPv4(text, opts.leadingZeros === true);
    return g === null ? null : { family: 'IPv4', groups: g };
  }
  const g = parseIPv6(text);
  if (g === null || (opts.v4Mapped !== true && isV4Mapped(g))) return null;
  return { family: 'IPv6', groups: g };
}

/**
 * Parses "address/prefix". Host bits may be set and are cleared ("10.1.2.3/8" is
 * 10.0.0.0/8), as every caller wants the network.
 */
export function parseCIDR(text: unknown, opts: CIDROptions = {}): CIDR | null {
  if (typeof text !== 'string' || text.length > 49) return null;
  const slash = text.indexOf('/');
  if (slash < 0 && opts.bare !== true) return null;
  const ip = parseIP(slash < 0 ? text : text.slice(0, slash), opts);
  if (ip === null) return null;
  const max = bitLength(ip.family);
  const prefix = slash < 0 ? max : decimalByte(text, slash + 1, text.length, opts.leadingZeros === true);
  if (prefix === null || prefix > max) return null;
  return { family: ip.family, groups: maskGroups(ip.groups, prefix), prefix };
}

function maskGroups(groups: number[], prefix: number): number[] {
  return groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return g & ((0xffff << (16 - bits)) & 0xffff);
  });
}

/** Whether the address lies in the CIDR; never across families. */
export function cidrContains(cidr: CIDR, ip: IP): boolean {
  if (cidr.family !== ip.family) return false;
  const masked = maskGroups(ip.groups, cidr.prefix);
  return masked.every((g, i) => g === cidr.groups[i]);
}

function formatIPv4(g: number[]): string {
  return `${g[0]! >> 8}.${g[0]! & 255}.${g[1]! >> 8}.${g[1]! & 255}`;
}

/**
 * Canonical text: a dotted quad without leading zeros, or RFC 5952 IPv6 (lower case, no
 * leading zeros in a group, the longest run of two or more zero groups written "::",
 * the first on a tie).
 */
export function formatIP(ip: IP, opts: FormatOptions = {}): string {
  const g = ip.groups;
  if (ip.family === 'IPv4') return formatIPv4(g);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (opts.dottedQuad === true && bestStart === 0 && (bestLen === 6 || (bestLen === 5 && g[5] === 0xffff))) {
    const v4 = formatIPv4(g.slice(6));
    return bestLen === 6 ? `::${v4}` : `::ffff:${v4}`;
  }
  const hex = (from: number, to: number): string =>
    g
      .slice(from, to)
      .map((x) => x.toString(16))
      .join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

/** "network/prefix" in canonical text. */
export function formatCIDR(cidr: CIDR, opts: FormatOptions = {}): string {
  return `${formatIP(cidr, opts)}/${cidr.prefix}`;
}

/** The address as one unsigned number, for interval arithmetic. */
export function ipToBigInt(ip: IP): bigint {
  let n = 0n;
  for (const g of ip.groups) n = (n << 16n) | BigInt(g);
  return n;
}

/** The address of the family whose value is n (taken modulo the address size). */
export function ipFromBigInt(n: bigint, family: IPFamily): IP {
  const count = bitLength(family) / 16;
  const groups: number[] = [];
  for (let i = count - 1; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  return { family, groups };
}
