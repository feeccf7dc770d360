// Service → ServicePortInfo per IP family, with upstream kube-proxy's semantics.
import type { Service } from './k8s.js';
import type { IPFamily, Protocol, ServicePortInfo } from './types.js';
import { unusableExternalIP } from './addresses.js';
import {
  LIMITS,
  clip,
  looseKey,
  isDNSLabel,
  isPlainString,
  isPort,
  isRecord,
  parseCIDR,
  parseIP,
  parsePortEntry,
  type FieldProblem,
} from './validate.js';

export const DEFAULT_SESSION_AFFINITY_TIMEOUT = 10800;
/** The API's upper bound for sessionAffinityConfig.clientIP.timeoutSeconds. */
export const MAX_SESSION_AFFINITY_TIMEOUT = 86400;

/** Services carrying either label are meant for another proxy (or none). */
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';

export interface ParsedService {
  /** `namespace/name`. */
  key: string;
  namespace: string;
  name: string;
  /** metadata.creationTimestamp in ms; Infinity when absent or unreadable (counts as newest). */
  createdMs: number;
  ports: Record<IPFamily, ServicePortInfo[]>;
}

export type ServiceParseResult =
  | { status: 'ok'; service: ParsedService; problems: FieldProblem[] }
  /** A valid Service this proxy does not handle (headless, ExternalName, other proxy). */
  | { status: 'skipped'; key: string; reason: string }
  /** Unusable input; `key` is '' when even the name is unusable. */
  | { status: 'invalid'; key: string; reason: string; detail: string };

/** Upstream's ServicePortName string: `ns/name:port`, `:port` omitted for an unnamed port. */
export function servicePortName(namespace: string, name: string, portName: string): string {
  return portName === '' ? `${namespace}/${name}` : `${namespace}/${name}:${portName}`;
}

/** Namespace and name of any object, for keys; null when unusable. */
export function metaKey(obj: unknown): { namespace: string; name: string } | null {
  if (!isRecord(obj) || !isRecord(obj.metadata)) return null;
  const { namespace, name } = obj.metadata;
  if (typeof namespace !== 'string' || typeof name !== 'string') return null;
  if (namespace === '' || name === '' || namespace.length > 253 || name.length > 253) return null;
  return { namespace, name };
}

interface PortBase {
  portName: string;
  protocol: Protocol;
  port: number;
  nodePort: number;
}

type ServiceType = ServicePortInfo['type'];

function invalid(key: string, reason: string, detail: string): ServiceParseResult {
  return { status: 'invalid', key, reason, detail };
}

/** Splits a list of IPs by family, normalized, dropping (and reporting) bad entries. */
function ipsByFamily(
  raw: unknown,
  field: string,
  problems: FieldProblem[],
): Record<IPFamily, string[]> {
  const out: Record<IPFamily, string[]> = { IPv4: [], IPv6: [] };
  if (raw === undefined || raw === null) return out;
  if (!Array.isArray(raw)) {
    problems.push({ reason: `invalid-${field}`, detail: `${field} is not a list` });
    return out;
  }
  if (raw.length > LIMITS.ipListEntries) {
    problems.push({ reason: `too-many-${field}`, detail: `${raw.length} entries, limit ${LIMITS.ipListEntries}` });
    return out;
  }
  for (const entry of raw) {
    const ip = parseIP(entry);
    if (ip === null) {
      problems.push({ reason: `invalid-${field}`, detail: clip(entry) });
      continue;
    }
    if (!out[ip.family].includes(ip.ip)) out[ip.family].push(ip.ip);
  }
  return out;
}

function parsePorts(raw: unknown, type: ServiceType, problems: FieldProblem[]): PortBase[] | string {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) return 'ports is not a list';
  if (raw.length > LIMITS.servicePorts) return `${raw.length} ports, limit ${LIMITS.servicePorts}`;
  const out: PortBase[] = [];
  const seen = new Set<string>();
  for (const rawPort of raw) {
    const parsed = parsePortEntry(rawPort, problems);
    if (!parsed) continue;
    const { entry: p, name: portName, protocol } = parsed;
    let nodePort = 0;
    if (p.nodePort !== undefined && p.nodePort !== null && p.nodePort !== 0) {
      if (!isPort(p.nodePort)) {
        problems.push({ reason: 'invalid-node-port', detail: `port ${clip(portName)}: ${clip(p.nodePort)}` });
        continue;
      }
      // The API only allocates node ports for these types; elsewhere the field is noise.
      if (type === 'NodePort' || type === 'LoadBalancer') nodePort = p.nodePort;
    }
    const id = `${portName}/${protocol}`;
    if (seen.has(id)) {
      problems.push({ reason: 'duplicate-port', detail: `port ${clip(portName)}/${protocol} appears twice` });
      continue;
    }
    seen.add(id);
    out.push({ portName, protocol, port: parsed.port, nodePort });
  }
  return out;
}

function sessionAffinityTimeout(spec: Record<string, unknown>, problems: FieldProblem[]): number | undefined {
  const affinity = spec.sessionAffinity;
  if (affinity === undefined || affinity === null || affinity === '' || affinity === 'None') return undefined;
  if (affinity !== 'ClientIP') {
    problems.push({ reason: 'invalid-session-affinity', detail: clip(affinity) });
    return undefined;
  }
  const cfg = spec.sessionAffinityConfig;
  const clientIP = isRecord(cfg) ? cfg.clientIP : undefined;
  const t = isRecord(clientIP) ? clientIP.timeoutSeconds : undefined;
  // The API server defaults the timeout; manifests may leave it out.
  if (t === undefined || t === null) return DEFAULT_SESSION_AFFINITY_TIMEOUT;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_SESSION_AFFINITY_TIMEOUT) {
    problems.push({ reason: 'invalid-session-affinity-timeout', detail: clip(t) });
    return DEFAULT_SESSION_AFFINITY_TIMEOUT;
  }
  return t;
}

function policyLocal(v: unknown, field: string, problems: FieldProblem[]): boolean {
  if (v === 'Local') return true;
  if (v !== undefined && v !== null && v !== '' && v !== 'Cluster') {
    problems.push({ reason: `invalid-${field}`, detail: clip(v) });
  }
  return false;
}

/**
 * Parses one Service into per-family port infos. Never throws. Bad fields are dropped
 * and listed in `problems`; an unusable Service is `invalid`.
 */
export function parseService(obj: unknown): ServiceParseResult {
  const meta = metaKey(obj);
  if (meta === null) return invalid(looseKey(obj), 'invalid-metadata', 'namespace or name missing or longer than 253');
  const key = `${meta.namespace}/${meta.name}`;
  if (!isDNSLabel(meta.namespace)) return invalid(key, 'invalid-metadata', `namespace ${clip(meta.namespace)}`);
  if (!isDNSLabel(meta.name)) return invalid(key, 'invalid-metadata', `name ${clip(meta.name)}`);
  const svc = obj as Service;
  const labels = svc.metadata!.labels;
  if (labels !== undefined && labels !== null && !isRecord(labels)) {
    return invalid(key, 'invalid-labels', 'labels is not an object');
  }
  if (labels && (LABEL_SERVICE_PROXY_NAME in labels || LABEL_HEADLESS in labels)) {
    return { status: 'skipped', key, reason: 'labelled for another proxy' };
  }
  const spec = svc.spec as unknown;
  if (!isRecord(spec)) return invalid(key, 'invalid-spec', 'spec missing or not an object');

  let type: ServiceType;
  const rawType = spec.type;
  if (rawType === undefined || rawType === null || rawType === '' || rawType === 'ClusterIP') type = 'ClusterIP';
  else if (rawType === 'ExternalName') return { status: 'skipped', key, reason: 'type ExternalName' };
  else if (rawType === 'NodePort' || rawType === 'LoadBalancer') type = rawType;
  else return invalid(key, 'invalid-type', clip(rawType));

  const problems: FieldProblem[] = [];

  // clusterIPs is authoritative; clusterIP alone comes from old clients or manifests.
  let rawIPs: unknown[];
  if (spec.clusterIPs !== undefined && spec.clusterIPs !== null) {
    if (!Array.isArray(spec.clusterIPs)) return invalid(key, 'invalid-cluster-ip', 'clusterIPs is not a list');
    rawIPs = spec.clusterIPs;
  } else rawIPs = [];
  if (rawIPs.length === 0 && typeof spec.clusterIP === 'string' && spec.clusterIP !== '') rawIPs = [spec.clusterIP];
  if (rawIPs[0] === 'None') {
    return { status: 'skipped', key, reason: 'headless' };
  }
  if (rawIPs.length === 0) return { status: 'skipped', key, reason: 'no cluster IP' };
  if (rawIPs.length > 2) return invalid(key, 'invalid-cluster-ip', `${rawIPs.length} clusterIPs`);
  const clusterIP: Record<IPFamily, string> = { IPv4: '', IPv6: '' };
  for (const raw of rawIPs) {
    const ip = parseIP(raw);
    if (ip === null) {
      problems.push({ reason: 'invalid-cluster-ip', detail: clip(raw) });
    } else if (clusterIP[ip.family] !== '') {
      problems.push({ reason: 'invalid-cluster-ip', detail: `second ${ip.family} cluster IP ${ip.ip}` });
    } else {
      clusterIP[ip.family] = ip.ip;
    }
  }
  if (clusterIP.IPv4 === '' && clusterIP.IPv6 === '') {
    return invalid(key, 'invalid-cluster-ip', clip(rawIPs));
  }

  const ports = parsePorts(spec.ports, type, problems);
  if (typeof ports === 'string') return invalid(key, 'invalid-ports', ports);

  const externalIPs = ipsByFamily(spec.externalIPs, 'external-ip', problems);
  for (const family of ['IPv4', 'IPv6'] as const) {
    externalIPs[family] = externalIPs[family].filter((ip) => {
      const why = unusableExternalIP(ip);
      if (why !== null) problems.push({ reason: 'unusable-external-ip', detail: `${ip} is ${why}` });
      return why === null;
    });
  }

  const ingressIPs: Record<IPFamily, string[]> = { IPv4: [], IPv6: [] };
  const status = svc.status as unknown;
  const lb = isRecord(status) ? status.loadBalancer : undefined;
  const ingress = isRecord(lb) ? lb.ingress : undefined;
  if (ingress !== undefined && ingress !== null) {
    if (!Array.isArray(ingress) || ingress.length > LIMITS.ipListEntries) {
      problems.push({ reason: 'invalid-ingress', detail: 'status.loadBalancer.ingress is not a list or too long' });
    } else {
      for (const ing of ingress) {
        if (!isRecord(ing) || ing.ip === undefined || ing.ip === null || ing.ip === '') continue;
        // Only VIP-mode ingress is programmed; with Proxy mode the load balancer
        // delivers traffic to the node and must not be short-circuited here.
        if (ing.ipMode !== undefined && ing.ipMode !== null && ing.ipMode !== 'VIP') {
          if (ing.ipMode !== 'Proxy') problems.push({ reason: 'invalid-ingress-ip-mode', detail: clip(ing.ipMode) });
          continue;
        }
        const ip = parseIP(ing.ip);
        if (ip === null) problems.push({ reason: 'invalid-ingress-ip', detail: clip(ing.ip) });
        else if (!ingressIPs[ip.family].includes(ip.ip)) ingressIPs[ip.family].push(ip.ip);
      }
    }
  }

  const sourceRanges: Record<IPFamily, string[]> = { IPv4: [], IPv6: [] };
  const rawRanges = spec.loadBalancerSourceRanges;
  // Ranges were asked for: a family left without a usable one must not fall back to "open".
  const rangesRequested = rawRanges !== undefined && rawRanges !== null && !(Array.isArray(rawRanges) && rawRanges.length === 0);
  if (rawRanges !== undefined && rawRanges !== null) {
    if (!Array.isArray(rawRanges) || rawRanges.length > LIMITS.ipListEntries) {
      problems.push({ reason: 'invalid-source-range', detail: 'loadBalancerSourceRanges is not a list or too long' });
    } else {
      for (const r of rawRanges) {
        // API validation tolerates surrounding whitespace here.
        const cidr = parseCIDR(typeof r === 'string' ? r.trim() : r);
        if (cidr === null) problems.push({ reason: 'invalid-source-range', detail: clip(r) });
        else if (!sourceRanges[cidr.family].includes(cidr.cidr)) sourceRanges[cidr.family].push(cidr.cidr);
      }
    }
  }

  const timeout = sessionAffinityTimeout(spec, problems);
  const hasExternalIPs = externalIPs.IPv4.length + externalIPs.IPv6.length > 0;
  // Upstream's ExternalPolicyLocal: the policy only exists for externally reachable services.
  const externallyAccessible = type !== 'ClusterIP' || hasExternalIPs;
  const externalPolicyLocal =
    policyLocal(spec.externalTrafficPolicy, 'external-traffic-policy', problems) && externallyAccessible;
  const internalPolicyLocal = policyLocal(spec.internalTrafficPolicy, 'internal-traffic-policy', problems);

  let healthCheckNodePort = 0;
  if (type === 'LoadBalancer' && externalPolicyLocal) {
    if (isPort(spec.healthCheckNodePort)) healthCheckNodePort = spec.healthCheckNodePort;
    else problems.push({ reason: 'invalid-health-check-node-port', detail: clip(spec.healthCheckNodePort) });
  }

  let trafficDistribution = '';
  const td = spec.trafficDistribution;
  if (td !== undefined && td !== null) {
    if (isPlainString(td, LIMITS.shortName)) trafficDistribution = td;
    else problems.push({ reason: 'invalid-traffic-distribution', detail: clip(td) });
  }

  const out: Record<IPFamily, ServicePortInfo[]> = { IPv4: [], IPv6: [] };
  for (const family of ['IPv4', 'IPv6'] as const) {
    // Upstream ignores a Service in a family where it has no cluster IP.
    if (clusterIP[family] === '') continue;
    const denyAll = rangesRequested && sourceRanges[family].length === 0;
    if (denyAll && type === 'LoadBalancer') {
      problems.push({
        reason: 'source-ranges-deny-all',
        detail: `no usable ${family} entry in loadBalancerSourceRanges: external traffic to the ${family} load-balancer IPs is dropped`,
      });
    }
    // map, not push: an array grown by push keeps spare room (~128 bytes for one port, 10,000
    // Services: 1.2 MiB), and this one lives as long as the Service.
    out[family] = ports.map((p) => ({
        name: servicePortName(meta.namespace, meta.name, p.portName),
        namespace: meta.namespace,
        serviceName: meta.name,
        portName: p.portName,
        protocol: p.protocol,
        clusterIP: clusterIP[family],
        port: p.port,
        nodePort: p.nodePort,
        externalIPs: externalIPs[family],
        loadBalancerIPs: ingressIPs[family],
        loadBalancerSourceRanges: sourceRanges[family],
        ...(denyAll ? { sourceRangesDenyAll: true } : {}),
        sessionAffinity: timeout === undefined ? {} : { clientIPTimeoutSeconds: timeout },
        externalPolicyLocal,
        internalPolicyLocal,
        healthCheckNodePort,
        trafficDistribution,
        type,
      }));
  }
  return {
    status: 'ok',
    service: { key, namespace: meta.namespace, name: meta.name, createdMs: creationMs(svc.metadata!.creationTimestamp), ports: out },
    problems,
  };
}

function creationMs(t: unknown): number {
  const ms = typeof t === 'string' ? Date.parse(t) : NaN;
  return Number.isNaN(ms) ? Infinity : ms;
}

export function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function servicePortInfoEqual(a: ServicePortInfo, b: ServicePortInfo): boolean {
  return (
    a.name === b.name &&
    a.namespace === b.namespace &&
    a.serviceName === b.serviceName &&
    a.portName === b.portName &&
    a.protocol === b.protocol &&
    a.clusterIP === b.clusterIP &&
    a.port === b.port &&
    a.nodePort === b.nodePort &&
    sameStrings(a.externalIPs, b.externalIPs) &&
    sameStrings(a.loadBalancerIPs, b.loadBalancerIPs) &&
    sameStrings(a.loadBalancerSourceRanges, b.loadBalancerSourceRanges) &&
    (a.sourceRangesDenyAll ?? false) === (b.sourceRangesDenyAll ?? false) &&
    a.sessionAffinity.clientIPTimeoutSeconds === b.sessionAffinity.clientIPTimeoutSeconds &&
    a.externalPolicyLocal === b.externalPolicyLocal &&
    a.internalPolicyLocal === b.internalPolicyLocal &&
    a.healthCheckNodePort === b.healthCheckNodePort &&
    a.trafficDistribution === b.trafficDistribution &&
    a.type === b.type
  );
}

export function parsedServiceEqual(a: ParsedService, b: ParsedService): boolean {
  if (a.createdMs !== b.createdMs) return false;
  for (const family of ['IPv4', 'IPv6'] as const) {
    const x = a.ports[family];
    const y = b.ports[family];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!servicePortInfoEqual(x[i]!, y[i]!)) return false;
  }
  return true;
}
