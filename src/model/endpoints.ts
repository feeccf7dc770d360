// EndpointSlices → endpoints per service port, with upstream kube-proxy's semantics.
import type { Endpoint, IPFamily, Protocol } from './types.js';
import { metaKey, sameStrings } from './service.js';
import {
  looseKey,
  LIMITS,
  clip,
  isDNSLabel,
  isDNSSubdomain,
  isPlainString,
  isRecord,
  parseIP,
  parsePortEntry,
  type FieldProblem,
} from './validate.js';

export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';

export interface SlicePort {
  /** '' for an unnamed port. */
  name: string;
  protocol: Protocol;
  port: number;
}

/** One endpoint of a slice, before it is paired with a port. */
export interface SliceEndpoint {
  ip: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string;
  zone: string;
  hintsForZones: string[];
  hintsForNodes: string[];
}

export interface ParsedSlice {
  /** `namespace/sliceName`. */
  key: string;
  /** `namespace/serviceName`: the Service this slice belongs to. */
  serviceKey: string;
  family: IPFamily;
  ports: SlicePort[];
  endpoints: SliceEndpoint[];
  /**
   * Set when `endpoints` are already the Endpoint objects of this port, for the model's node
   * (see withPortEndpoints).
   */
  endpointsOfPort?: number;
}

export type SliceParseResult =
  | { status: 'ok'; slice: ParsedSlice; problems: FieldProblem[] }
  /** A valid slice the proxy does not use (FQDN address type). */
  | { status: 'ignored'; key: string; reason: string }
  | { status: 'invalid'; key: string; reason: string; detail: string };

function invalid(key: string, reason: string, detail: string): SliceParseResult {
  return { status: 'invalid', key, reason, detail };
}

// Shared by every endpoint without hints, to spare an allocation per endpoint. Never mutated.
const NO_HINTS: string[] = [];

function parseHints(raw: unknown, field: string, problems: FieldProblem[]): string[] {
  if (raw === undefined || raw === null) return NO_HINTS;
  if (!Array.isArray(raw) || raw.length > LIMITS.hints) {
    problems.push({ reason: 'invalid-hints', detail: `${field} is not a list or too long` });
    return NO_HINTS;
  }
  const out = new Set<string>();
  for (const h of raw) {
    const name = isRecord(h) ? h.name : undefined;
    if (isPlainString(name, LIMITS.longName) && name !== '') out.add(name);
    else problems.push({ reason: 'invalid-hints', detail: `${field} entry ${clip(h)}` });
  }
  return out.size === 0 ? NO_HINTS : [...out].sort();
}

function optionalBool(v: unknown): boolean | undefined | 'bad' {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'boolean' ? v : 'bad';
}

function parseEndpoint(raw: unknown, family: IPFamily, problems: FieldProblem[]): SliceEndpoint | null {
  if (!isRecord(raw)) {
    problems.push({ reason: 'invalid-endpoint', detail: `entry ${clip(raw)} is not an object` });
    return null;
  }
  const addresses = raw.addresses;
  if (!Array.isArray(addresses) || addresses.length === 0) {
    problems.push({ reason: 'endpoint-without-address', detail: clip(addresses) });
    return null;
  }
  // Like upstream, only the first address is used: the others are the same pod.
  const ip = parseIP(addresses[0]);
  if (ip === null) {
    problems.push({ reason: 'invalid-endpoint-ip', detail: clip(addresses[0]) });
    return null;
  }
  if (ip.family !== family) {
    problems.push({ reason: 'endpoint-family-mismatch', detail: `${ip.ip} in a ${family} slice` });
    return null;
  }
  const c = raw.conditions;
  if (c !== undefined && c !== null && !isRecord(c)) {
    problems.push({ reason: 'invalid-conditions', detail: `${ip.ip}: conditions is not an object` });
    return null;
  }
  const ready = optionalBool(c?.ready);
  const serving = optionalBool(c?.serving);
  const terminating = optionalBool(c?.terminating);
  if (ready === 'bad' || serving === 'bad' || terminating === 'bad') {
    problems.push({ reason: 'invalid-conditions', detail: `${ip.ip}: ${clip(c)}` });
    return null;
  }
  // API rules: ready unknown means ready; serving unknown defers to ready.
  const isReady = ready ?? true;
  let nodeName = '';
  if (raw.nodeName !== undefined && raw.nodeName !== null) {
    if (isPlainString(raw.nodeName, LIMITS.longName)) nodeName = raw.nodeName;
    else problems.push({ reason: 'invalid-node-name', detail: `${ip.ip}: ${clip(raw.nodeName)}` });
  }
  let zone = '';
  if (raw.zone !== undefined && raw.zone !== null) {
    if (isPlainString(raw.zone, LIMITS.shortName)) zone = raw.zone;
    else problems.push({ reason: 'invalid-zone', detail: `${ip.ip}: ${clip(raw.zone)}` });
  }
  let hintsForZones = NO_HINTS;
  let hintsForNodes = NO_HINTS;
  if (raw.hints !== undefined && raw.hints !== null) {
    if (isRecord(raw.hints)) {
      hintsForZones = parseHints(raw.hints.forZones, 'hints.forZones', problems);
      hintsForNodes = parseHints(raw.hints.forNodes, 'hints.forNodes', problems);
    } else {
      problems.push({ reason: 'invalid-hints', detail: `${ip.ip}: hints is not an object` });
    }
  }
  return {
    ip: ip.ip,
    ready: isReady,
    serving: serving ?? isReady,
    terminating: terminating ?? false,
    nodeName,
    zone,
    hintsForZones,
    hintsForNodes,
  };
}

/** Parses one EndpointSlice. Never throws. */
export function parseEndpointSlice(obj: unknown): SliceParseResult {
  const meta = metaKey(obj);
  if (meta === null) return invalid(looseKey(obj), 'invalid-metadata', 'namespace or name missing or longer than 253');
  const key = `${meta.namespace}/${meta.name}`;
  if (!isDNSLabel(meta.namespace)) return invalid(key, 'invalid-metadata', `namespace ${clip(meta.namespace)}`);
  if (!isDNSSubdomain(meta.name)) return invalid(key, 'invalid-metadata', `name ${clip(meta.name)}`);
  const o = obj as Record<string, unknown> & { metadata: Record<string, unknown> };
  const labels = o.metadata.labels;
  const serviceName = isRecord(labels) ? labels[LABEL_SERVICE_NAME] : undefined;
  if (serviceName === undefined || serviceName === '') {
    return invalid(key, 'missing-service-name', `no ${LABEL_SERVICE_NAME} label`);
  }
  if (!isDNSLabel(serviceName)) return invalid(key, 'invalid-service-name', clip(serviceName));

  const addressType = o.addressType;
  let family: IPFamily;
  if (addressType === 'IPv4' || addressType === 'IPv6') family = addressType;
  else if (addressType === 'FQDN') return { status: 'ignored', key, reason: 'addressType FQDN' };
  else return invalid(key, 'invalid-address-type', clip(addressType));

  const problems: FieldProblem[] = [];
  const rawPorts = o.ports;
  let ports: SlicePort[] = [];
  if (rawPorts !== undefined && rawPorts !== null) {
    if (!Array.isArray(rawPorts)) return invalid(key, 'invalid-ports', 'ports is not a list');
    if (rawPorts.length > LIMITS.slicePorts) {
      return invalid(key, 'too-many-ports', `${rawPorts.length} ports, limit ${LIMITS.slicePorts}`);
    }
    for (const raw of rawPorts) {
      const p = parsePortEntry(raw, problems);
      if (p) ports.push({ name: p.name, protocol: p.protocol, port: p.port });
    }
    // An array grown by push keeps spare room (~128 bytes for the usual single port); this one
    // lives as long as the slice.
    ports = ports.slice();
  }

  const rawEndpoints = o.endpoints;
  const endpoints: SliceEndpoint[] = [];
  if (rawEndpoints !== undefined && rawEndpoints !== null) {
    if (!Array.isArray(rawEndpoints)) return invalid(key, 'invalid-endpoints', 'endpoints is not a list');
    if (rawEndpoints.length > LIMITS.sliceEndpoints) {
      return invalid(key, 'too-many-endpoints', `${rawEndpoints.length} endpoints, limit ${LIMITS.sliceEndpoints}`);
    }
    for (const e of rawEndpoints) {
      const ep = parseEndpoint(e, family, problems);
      if (ep !== null) endpoints.push(ep);
    }
    sortByAddress(endpoints);
  }
  return {
    status: 'ok',
    slice: { key, serviceKey: `${meta.namespace}/${serviceName}`, family, ports, endpoints },
    problems,
  };
}

/** Equal as a slice states them (an Endpoint, which adds its port and locality, compares its slice part here too). */
export function sliceEndpointEqual(a: SliceEndpoint, b: SliceEndpoint): boolean {
  return (
    a.ip === b.ip &&
    a.ready === b.ready &&
    a.serving === b.serving &&
    a.terminating === b.terminating &&
    a.nodeName === b.nodeName &&
    a.zone === b.zone &&
    sameStrings(a.hintsForZones, b.hintsForZones) &&
    sameStrings(a.hintsForNodes, b.hintsForNodes)
  );
}

export function parsedSliceEqual(a: ParsedSlice, b: ParsedSlice): boolean {
  if (a.key !== b.key || a.serviceKey !== b.serviceKey || a.family !== b.family) return false;
  if (a.ports.length !== b.ports.length || a.endpoints.length !== b.endpoints.length) return false;
  for (let i = 0; i < a.ports.length; i++) {
    const x = a.ports[i]!;
    const y = b.ports[i]!;
    if (x.name !== y.name || x.protocol !== y.protocol || x.port !== y.port) return false;
  }
  for (let i = 0; i < a.endpoints.length; i++) {
    if (!sliceEndpointEqual(a.endpoints[i]!, b.endpoints[i]!)) return false;
  }
  return true;
}

export function endpointString(ep: Pick<Endpoint, 'ip' | 'port'>): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

function compareKeys<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/**
 * Sorts slice endpoints so that, for any one port number, they come out in `ip:port`
 * text order (upstream's order) and duplicate addresses are adjacent.
 */
function sortByAddress(endpoints: SliceEndpoint[]): void {
  const keyed = endpoints.map((e): [string, SliceEndpoint] => [e.ip.includes(':') ? `[${e.ip}]:` : `${e.ip}:`, e]);
  keyed.sort(compareKeys);
  for (let i = 0; i < keyed.length; i++) endpoints[i] = keyed[i]![1];
}

/** Higher wins when two slices list the same ip:port. */
function preference(ep: Endpoint): number {
  return (ep.ready ? 4 : 0) + (ep.serving ? 2 : 0) + (ep.isLocal ? 1 : 0);
}

function toEndpoint(se: SliceEndpoint, port: number, nodeName: string): Endpoint {
  return {
    ip: se.ip,
    port,
    ready: se.ready,
    serving: se.serving,
    terminating: se.terminating,
    isLocal: nodeName !== '' && se.nodeName === nodeName,
    nodeName: se.nodeName,
    zone: se.zone,
    hintsForZones: se.hintsForZones,
    hintsForNodes: se.hintsForNodes,
  };
}

/**
 * A slice with a single port (nearly every slice) keeps its endpoints as that port's Endpoint
 * objects, which every snapshot then shares instead of copying: 8 MiB at 100,000 endpoints.
 */
export function withPortEndpoints(slice: ParsedSlice, nodeName: string): ParsedSlice {
  if (slice.ports.length !== 1) return slice;
  const port = slice.ports[0]!.port;
  return { ...slice, endpoints: slice.endpoints.map((se) => toEndpoint(se, port, nodeName)), endpointsOfPort: port };
}

/**
 * The endpoints of one service port: every slice port with the same name and protocol
 * contributes its endpoints at that slice port's number. The same ip:port listed twice
 * (an endpoint moving between slices) appears once, the ready copy preferred. Sorted by
 * `ip:port` text, as upstream does.
 */
export function endpointsForPort(
  slices: readonly ParsedSlice[],
  portName: string,
  protocol: Protocol,
  nodeName: string,
): Endpoint[] {
  const sources: Array<[SliceEndpoint[], number, boolean]> = [];
  for (const slice of slices) {
    for (const sp of slice.ports) {
      if (sp.name === portName && sp.protocol === protocol) sources.push([slice.endpoints, sp.port, slice.endpointsOfPort === sp.port]);
    }
  }
  if (sources.length === 1) {
    // The common case: slice endpoints are already in order, duplicates adjacent.
    const [list, port, converted] = sources[0]!;
    // Nearly always: the slice's own array serves as the port's list, no copy (model arrays are
    // never modified).
    if (converted && list.every((se, i) => i === 0 || se.ip !== list[i - 1]!.ip)) return list as Endpoint[];
    const out: Endpoint[] = [];
    for (const se of list) {
      const ep = converted ? (se as Endpoint) : toEndpoint(se, port, nodeName);
      const last = out[out.length - 1];
      if (last !== undefined && last.ip === ep.ip) {
        if (preference(ep) > preference(last)) out[out.length - 1] = ep;
      } else {
        out.push(ep);
      }
    }
    return out;
  }
  const byKey = new Map<string, Endpoint>();
  for (const [list, port] of sources) {
    for (const se of list) {
      const ep = toEndpoint(se, port, nodeName);
      const k = endpointString(ep);
      const prev = byKey.get(k);
      if (prev === undefined || preference(ep) > preference(prev)) byKey.set(k, ep);
    }
  }
  return [...byKey.entries()].sort(compareKeys).map((e) => e[1]);
}
