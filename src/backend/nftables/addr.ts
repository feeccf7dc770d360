// Minimal IP address helpers for rendering: canonical text (as nft prints it back), CIDR
// normalisation and containment. Invalid input yields undefined so callers can skip it.

export interface ParsedIP {
  v6: boolean;
  value: bigint;
}

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseV6(s: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail: bigint[] = [];
  let text = s;
  // An embedded IPv4 suffix counts as two groups.
  if (text.includes('.')) {
    const lastColon = text.lastIndexOf(':');
    const v4 = parseV4(text.slice(lastColon + 1));
    if (v4 === undefined || lastColon < 0) return undefined;
    tail = [v4 >> 16n, v4 & 0xffffn];
    text = text.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const toGroups = (h: string): bigint[] | undefined => {
    if (h === '') return [];
    const out: bigint[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(BigInt('0x' + g));
    }
    return out;
  };
  const head = toGroups(halves[0]!);
  const rest = halves.length === 2 ? toGroups(halves[1]!) : [];
  if (!head || !rest) return undefined;
  const given = head.length + rest.length + tail.length;
  let groups: bigint[];
  if (halves.length === 2) {
    if (given > 7) return undefined;
    groups = [...head, ...new Array<bigint>(8 - given).fill(0n), ...rest, ...tail];
  } else {
    if (given !== 8) return undefined;
    groups = [...head, ...tail];
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | g;
  return v;
}

export function parseIP(s: string): ParsedIP | undefined {
  if (s.includes(':')) {
    const v = parseV6(s);
    return v === undefined ? undefined : { v6: true, value: v };
  }
  const v = parseV4(s);
  return v === undefined ? undefined : { v6: false, value: v };
}

export function formatIP(ip: ParsedIP): string {
  if (!ip.v6) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((g) => g.toString(16)).join(':');
  // Like inet_ntop: IPv4-mapped and IPv4-compatible addresses end in dotted quad.
  if (bestStart === 0 && (bestLen === 6 || (bestLen === 5 && groups[5] === 0xffff))) {
    const v4 = formatIP({ v6: false, value: ip.value & 0xffffffffn });
    return bestLen === 6 ? `::${v4}` : `::ffff:${v4}`;
  }
  if (bestStart < 0) return hex(groups);
  return hex(groups.slice(0, bestStart)) + '::' + hex(groups.slice(bestStart + bestLen));
}

const PLAIN_V4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Canonical text of an IP of the wanted family, or undefined. */
export function canonicalIP(s: string, v6: boolean): string | undefined {
  // Fast path: an IPv4 address without leading zeros is already canonical.
  if (!v6 && PLAIN_V4.test(s)) return s;
  const p = parseIP(s.trim());
  if (!p || p.v6 !== v6) return undefined;
  return formatIP(p);
}

export interface ParsedCIDR {
  ip: ParsedIP;
  len: number;
}

export function parseCIDR(s: string): ParsedCIDR | undefined {
  const [addr, lenText, extra] = s.trim().split('/');
  if (addr === undefined || extra !== undefined) return undefined;
  const ip = parseIP(addr);
  if (!ip) return undefined;
  const max = ip.v6 ? 128 : 32;
  const len = lenText === undefined ? max : /^\d{1,3}$/.test(lenText) ? Number(lenText) : NaN;
  if (!(len >= 0 && len <= max)) return undefined;
  const hostBits = BigInt(max - len);
  const value = (ip.value >> hostBits) << hostBits;
  return { ip: { v6: ip.v6, value }, len };
}

/**
 * Canonical CIDR text of the wanted family with host bits cleared; a full-length prefix is
 * written as a plain address, which is how nft lists it back.
 */
export function canonicalCIDR(s: string, v6: boolean): string | undefined {
  const c = parseCIDR(s);
  if (!c || c.ip.v6 !== v6) return undefined;
  const max = v6 ? 128 : 32;
  return c.len === max ? formatIP(c.ip) : `${formatIP(c.ip)}/${c.len}`;
}

export function cidrContains(cidr: string, ip: string): boolean {
  const c = parseCIDR(cidr);
  const p = parseIP(ip);
  if (!c || !p || c.ip.v6 !== p.v6) return false;
  const hostBits = BigInt((p.v6 ? 128 : 32) - c.len);
  return p.value >> hostBits === c.ip.value >> hostBits;
}
