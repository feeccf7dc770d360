// Input checks shared by the model's parsers: IP and CIDR normalization, object names,
// and size limits. API objects are untrusted (the manifests source does no validation),
// and everything accepted here ends up in kernel rules, so the rules are strict.
import type { IPFamily, Protocol } from './types.js';

/** Limits on absurd input. Beyond them an object (or field) is skipped with a reason. */
export const LIMITS = {
  /** Ports of one Service. The API sets no limit; real services stay far below. */
  servicePorts: 1000,
  /** Entries of one IP list field (externalIPs, ingress, source ranges, clusterIPs). */
  ipListEntries: 1000,
  /** Ports of one EndpointSlice. */
  slicePorts: 1000,
  /** Endpoints of one EndpointSlice (the API allows 1000). */
  sliceEndpoints: 1000,
  /** Topology hints of one endpoint. */
  hints: 100,
  /** Labels of the Node. */
  nodeLabels: 1000,
  /** Node name, hint names (DNS subdomain length). */
  longName: 253,
  /** Zone, label values, port names, traffic distribution (label value length). */
  shortName: 63,
} as const;

export interface FieldProblem {
  reason: string;
  detail: string;
}

export function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Shortens untrusted text before it goes into a log line. */
export function clip(x: unknown, max = 80): string {
  let s: string;
  if (typeof x === 'string') s = x;
  else {
    try {
      s = JSON.stringify(x) ?? String(x);
    } catch {
      s = String(x);
    }
  }
  return s.length > max ? `${s.slice(0, max)}...(${s.length} chars)` : s;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** RFC 1123 label, as namespaces, Service names and port names are. */
export function isDNSLabel(s: unknown): s is string {
  return typeof s === 'string' && s.length <= 63 && DNS_LABEL.test(s);
}

/** RFC 1123 subdomain, as EndpointSlice and Node names are. */
export function isDNSSubdomain(s: unknown): s is string {
  return typeof s === 'string' && s.length <= 253 && DNS_SUBDOMAIN.test(s);
}

/** A bounded string without control characters, for names that only get compared or displayed. */
export function isPlainString(s: unknown, max: number): s is string {
  return typeof s === 'string' && s.length <= max && !/[\u0000-\u001f\u007f]/.test(s);
}

export function parseProtocol(p: unknown): Protocol | null {
  if (p === undefined || p === null || p === '') return 'TCP';
  return p === 'TCP' || p === 'UDP' || p === 'SCTP' ? p : null;
}

export function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

export interface ParsedIP {
  family: IPFamily;
  /** Canonical text: dotted quad, or RFC 5952 compressed lower-case IPv6. */
  ip: string;
  /** IPv4: one 32-bit value; IPv6: eight 16-bit groups. */
  words: number[];
}

function parseIPv4Words(s: string): number | null {
  // A hand-written scanner: this runs for every endpoint address, so it avoids regexes.
  let v = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || dots === 3) return null;
      v = v * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      // Leading zeros are rejected: some parsers read them as octal.
      if (digits > 0 && octet === 0) return null;
      octet = octet * 10 + (c - 48);
      digits++;
      if (octet > 255) return null;
    } else {
      return null;
    }
  }
  if (dots !== 3 || digits === 0) return null;
  return v * 256 + octet;
}

const HEX_GROUP = /^[0-9a-f]{1,4}$/;

function parseIPv6Groups(s: string): number[] | null {
  if (s.length > 45 || s.includes('%')) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parseSide = (side: string, allowV4Tail: boolean): number[] | null => {
    if (side === '') return [];
    const parts = side.split(':');
    const out: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIPv4Words(p);
        if (v4 === null) return null;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
      } else if (HEX_GROUP.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  if (halves.length === 1) {
    const g = parseSide(halves[0]!, true);
    return g !== null && g.length === 8 ? g : null;
  }
  const head = parseSide(halves[0]!, false);
  const tail = parseSide(halves[1]!, true);
  if (head === null || tail === null || head.length + tail.length > 7) return null;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

function formatIPv6(g: number[]): string {
  // RFC 5952: compress the longest run (first on ties) of two or more zero groups.
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
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function formatIPv4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function isV4Mapped(g: number[]): boolean {
  return g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
}

/**
 * Parses an IP address. Returns null for anything that is not a plain IPv4 or IPv6
 * address; IPv4-mapped IPv6 addresses are rejected because they would put an IPv4
 * destination in IPv6 rules.
 */
export function parseIP(s: unknown): ParsedIP | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 45) return null;
  if (!s.includes(':')) {
    const v = parseIPv4Words(s);
    return v === null ? null : { family: 'IPv4', ip: formatIPv4(v), words: [v] };
  }
  const g = parseIPv6Groups(s.toLowerCase());
  if (g === null || isV4Mapped(g)) return null;
  return { family: 'IPv6', ip: formatIPv6(g), words: g };
}

export interface ParsedCIDR {
  family: IPFamily;
  /** Canonical `network/prefix`, host bits cleared. */
  cidr: string;
}

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

export function parseCIDR(s: unknown): ParsedCIDR | null {
  if (typeof s !== 'string' || s.length > 49) return null;
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const prefixText = s.slice(slash + 1);
  if (!PREFIX.test(prefixText)) return null;
  const prefix = Number(prefixText);
  const ip = parseIP(s.slice(0, slash));
  if (ip === null) return null;
  if (ip.family === 'IPv4') {
    if (prefix > 32) return null;
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    return { family: 'IPv4', cidr: `${formatIPv4((ip.words[0]! & mask) >>> 0)}/${prefix}` };
  }
  if (prefix > 128) return null;
  const g = ip.words.map((w, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return bits === 0 ? 0 : w & ((0xffff << (16 - bits)) & 0xffff);
  });
  return { family: 'IPv6', cidr: `${formatIPv6(g)}/${prefix}` };
}
