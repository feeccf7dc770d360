// The proxy's own Node → NodeInfo.
import type { NodeInfo } from './types.js';
import { LIMITS, clip, isPlainString, isRecord, parseCIDR, parseIP, type FieldProblem } from './validate.js';

export const LABEL_ZONE = 'topology.kubernetes.io/zone';

export function emptyNodeInfo(name: string): NodeInfo {
  return { name, labels: {}, zone: '', podCIDRs: [], addresses: [] };
}

/** Parses the Node object. Bad fields are dropped and listed in `problems`. */
export function parseNode(obj: unknown, name: string): { info: NodeInfo; problems: FieldProblem[] } {
  const problems: FieldProblem[] = [];
  const info = emptyNodeInfo(name);
  if (!isRecord(obj)) return { info, problems: [{ reason: 'invalid-node', detail: 'not an object' }] };
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  const labels = meta.labels;
  if (labels !== undefined && labels !== null) {
    if (!isRecord(labels) || Object.keys(labels).length > LIMITS.nodeLabels) {
      problems.push({ reason: 'invalid-labels', detail: 'labels is not an object or too large' });
    } else {
      const kept: Array<[string, string]> = [];
      for (const [k, v] of Object.entries(labels)) {
        if (isPlainString(k, LIMITS.longName + 64) && isPlainString(v, LIMITS.shortName)) kept.push([k, v]);
        else problems.push({ reason: 'invalid-label', detail: `${clip(k)}=${clip(v)}` });
      }
      // fromEntries defines own properties, so odd keys cannot touch the prototype.
      info.labels = Object.fromEntries(kept);
    }
  }
  info.zone = info.labels[LABEL_ZONE] ?? '';

  const spec = isRecord(obj.spec) ? obj.spec : {};
  let cidrs: unknown = spec.podCIDRs;
  if (!Array.isArray(cidrs) || cidrs.length === 0) {
    cidrs = spec.podCIDR === undefined || spec.podCIDR === null || spec.podCIDR === '' ? [] : [spec.podCIDR];
  }
  for (const c of (cidrs as unknown[]).slice(0, LIMITS.ipListEntries)) {
    const cidr = parseCIDR(c);
    if (cidr === null) problems.push({ reason: 'invalid-pod-cidr', detail: clip(c) });
    else if (!info.podCIDRs.includes(cidr.cidr)) info.podCIDRs.push(cidr.cidr);
  }

  const status = isRecord(obj.status) ? obj.status : {};
  const addresses = Array.isArray(status.addresses) ? status.addresses.slice(0, LIMITS.ipListEntries) : [];
  // InternalIP addresses first: they are the node's primary IPs.
  for (const type of ['InternalIP', 'ExternalIP']) {
    for (const a of addresses) {
      if (!isRecord(a) || a.type !== type) continue;
      const ip = parseIP(a.address);
      if (ip === null) problems.push({ reason: 'invalid-node-address', detail: clip(a.address) });
      else if (!info.addresses.includes(ip.ip)) info.addresses.push(ip.ip);
    }
  }
  return { info, problems };
}

/** True when two NodeInfos differ in what endpoint selection depends on. */
export function topologyChanged(a: NodeInfo, b: NodeInfo): boolean {
  if (a.zone !== b.zone) return true;
  const ka = Object.keys(a.labels);
  if (ka.length !== Object.keys(b.labels).length) return true;
  return ka.some((k) => !Object.hasOwn(b.labels, k) || a.labels[k] !== b.labels[k]);
}
