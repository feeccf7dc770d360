// Input checks shared by the model's parsers: IP and CIDR normalization, object names,
// and size limits. API objects are untrusted (the manifests source does no validation),
// and everything accepted here ends up in kernel rules, so the rules are strict.
import * as net from '../net/ip.js';
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

/**
 * `namespace/name` of an object whose metadata failed the checks, for log lines: each part
 * clipped with its length shown, so even an absurd name identifies the object.
 */
export function looseKey(obj: unknown): string {
  const meta = isRecord(obj) && isRecord(obj.metadata) ? obj.metadata : {};
  const part = (v: unknown): string => (v === undefined || v === null ? '' : clip(v, 253));
  return `${part(meta.namespace)}/${part(meta.name)}`;
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

/** An address as the model keeps it: family and canonical text (RFC 5952 for IPv6). */
/**
 * The checks a Service port and an EndpointSlice port share: name (a DNS label or ''), protocol
 * (default TCP), port number. A failure is recorded in `problems` and gives null.
 */
export function parsePortEntry(
  p: unknown,
  problems: FieldProblem[],
): { entry: Record<string, unknown>; name: string; protocol: Protocol; port: number } | null {
  if (!isRecord(p)) {
    problems.push({ reason: 'invalid-port', detail: `port entry ${clip(p)} is not an object` });
    return null;
  }
  // The API defaults a missing name to ''.
  const name = p.name === undefined || p.name === null ? '' : p.name;
  if (name !== '' && !isDNSLabel(name)) {
    problems.push({ reason: 'invalid-port-name', detail: clip(name) });
    return null;
  }
  const protocol = parseProtocol(p.protocol);
  if (protocol === null) {
    problems.push({ reason: 'invalid-protocol', detail: `port ${clip(name)}: ${clip(p.protocol)}` });
    return null;
  }
  if (!isPort(p.port)) {
    problems.push({ reason: 'invalid-port-number', detail: `port ${clip(name)}: ${clip(p.port)}` });
    return null;
  }
  return { entry: p, name, protocol, port: p.port };
}

export interface ParsedIP {
  family: IPFamily;
  ip: string;
}

/** A CIDR as the model keeps it: canonical `network/prefix`, host bits cleared. */
export interface ParsedCIDR {
  family: IPFamily;
  cidr: string;
}

/**
 * Parses an IP address with the strictest rules (no leading zeros, no zones). IPv4-mapped
 * IPv6 addresses are rejected because they would put an IPv4 destination in IPv6 rules.
 */
export function parseIP(s: unknown): ParsedIP | null {
  if (typeof s === 'string' && net.isCanonicalIPv4(s)) return { family: 'IPv4', ip: s };
  const ip = net.parseIP(s);
  return ip && { family: ip.family, ip: net.formatIP(ip) };
}

/** Parses `address/prefix` with the rules of parseIP; the prefix has no leading zeros. */
export function parseCIDR(s: unknown): ParsedCIDR | null {
  const cidr = net.parseCIDR(s);
  return cidr && { family: cidr.family, cidr: net.formatCIDR(cidr) };
}
