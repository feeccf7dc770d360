// The ipsets of the IPVS mode, with upstream's names and types (runbooks and other tools look
// for them), their entries in the form `ipset save` prints, and `ipset restore` input.
import type { IPFamily, Protocol } from '../../model/types.js';
import type { Ipset, IpsetType } from './types.js';

export const LOOP_BACK = 'KUBE-LOOP-BACK';
export const CLUSTER_IP = 'KUBE-CLUSTER-IP';
export const EXTERNAL_IP = 'KUBE-EXTERNAL-IP';
export const EXTERNAL_IP_LOCAL = 'KUBE-EXTERNAL-IP-LOCAL';
export const LOAD_BALANCER = 'KUBE-LOAD-BALANCER';
export const LOAD_BALANCER_FW = 'KUBE-LOAD-BALANCER-FW';
export const LOAD_BALANCER_LOCAL = 'KUBE-LOAD-BALANCER-LOCAL';
export const LOAD_BALANCER_SOURCE_IP = 'KUBE-LOAD-BALANCER-SOURCE-IP';
export const LOAD_BALANCER_SOURCE_CIDR = 'KUBE-LOAD-BALANCER-SOURCE-CIDR';
export const NODE_PORT_TCP = 'KUBE-NODE-PORT-TCP';
export const NODE_PORT_LOCAL_TCP = 'KUBE-NODE-PORT-LOCAL-TCP';
export const NODE_PORT_UDP = 'KUBE-NODE-PORT-UDP';
export const NODE_PORT_LOCAL_UDP = 'KUBE-NODE-PORT-LOCAL-UDP';
// A bitmap holds ports only; SCTP node ports are matched per node address instead.
export const NODE_PORT_SCTP = 'KUBE-NODE-PORT-SCTP-HASH';
export const NODE_PORT_LOCAL_SCTP = 'KUBE-NODE-PORT-LOCAL-SCTP-HASH';
export const HEALTH_CHECK_NODE_PORT = 'KUBE-HEALTH-CHECK-NODE-PORT';
export const IPVS_IPS = 'KUBE-IPVS-IPS';

/** Every set, in upstream's order: base name, type, and the comment our rules carry. */
export const IPSET_SPECS: ReadonlyArray<{ name: string; type: IpsetType; comment: string }> = [
  { name: LOOP_BACK, type: 'hash:ip,port,ip', comment: 'endpoints reaching themselves through a service (hairpin)' },
  { name: CLUSTER_IP, type: 'hash:ip,port', comment: 'service cluster IP and port' },
  { name: EXTERNAL_IP, type: 'hash:ip,port', comment: 'service external IP and port' },
  { name: EXTERNAL_IP_LOCAL, type: 'hash:ip,port', comment: 'service external IP and port, externalTrafficPolicy Local' },
  { name: LOAD_BALANCER, type: 'hash:ip,port', comment: 'service load balancer IP and port' },
  { name: LOAD_BALANCER_FW, type: 'hash:ip,port', comment: 'service load balancer IP and port with source ranges' },
  { name: LOAD_BALANCER_LOCAL, type: 'hash:ip,port', comment: 'service load balancer IP and port, externalTrafficPolicy Local' },
  { name: LOAD_BALANCER_SOURCE_IP, type: 'hash:ip,port,ip', comment: 'load balancer IP and port with an allowed source IP' },
  { name: LOAD_BALANCER_SOURCE_CIDR, type: 'hash:ip,port,net', comment: 'load balancer IP and port with an allowed source CIDR' },
  { name: NODE_PORT_TCP, type: 'bitmap:port', comment: 'TCP node ports' },
  { name: NODE_PORT_LOCAL_TCP, type: 'bitmap:port', comment: 'TCP node ports, externalTrafficPolicy Local' },
  { name: NODE_PORT_UDP, type: 'bitmap:port', comment: 'UDP node ports' },
  { name: NODE_PORT_LOCAL_UDP, type: 'bitmap:port', comment: 'UDP node ports, externalTrafficPolicy Local' },
  { name: NODE_PORT_SCTP, type: 'hash:ip,port', comment: 'SCTP node address and node port' },
  { name: NODE_PORT_LOCAL_SCTP, type: 'hash:ip,port', comment: 'SCTP node address and node port, externalTrafficPolicy Local' },
  { name: HEALTH_CHECK_NODE_PORT, type: 'bitmap:port', comment: 'health check node ports' },
  { name: IPVS_IPS, type: 'hash:ip', comment: 'addresses bound to kube-ipvs0' },
];

const MAX_NAME = 31;

/** The kernel name of a set: IPv6 sets are `KUBE-6-…` (both families coexist), cut to 31 characters. */
export function ipsetName(base: string, family: IPFamily): string {
  if (family === 'IPv4') return base;
  return base.replace(/^KUBE-/, 'KUBE-6-').slice(0, MAX_NAME);
}

const proto = (p: Protocol): string => p.toLowerCase();

/** Address with the port of a hash:ip,port set: `10.96.0.10,tcp:80` (addresses canonical). */
export function ipPortEntry(ip: string, protocol: Protocol, port: number): string {
  return `${ip},${proto(protocol)}:${port}`;
}

/** hash:ip,port,ip / hash:ip,port,net: a host-length net is printed as a bare address. */
export function ipPortIpEntry(ip: string, protocol: Protocol, port: number, second: string): string {
  return `${ipPortEntry(ip, protocol, port)},${second}`;
}

/** Sets keyed by base name, filled by the renderer. */
export class IpsetBuilder {
  private readonly entries = new Map<string, Set<string>>(IPSET_SPECS.map((s) => [s.name, new Set<string>()]));

  add(base: string, entry: string): void {
    this.entries.get(base)!.add(entry);
  }

  has(base: string): boolean {
    return this.entries.get(base)!.size > 0;
  }

  build(family: IPFamily): Ipset[] {
    return IPSET_SPECS.map((s) => ({
      name: ipsetName(s.name, family),
      type: s.type,
      family,
      comment: s.comment,
      entries: [...this.entries.get(s.name)!].sort(compareEntries),
    }));
  }
}

/** Numeric order for port bitmaps, text order otherwise. */
function compareEntries(a: string, b: string): number {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) return Number(a) - Number(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The `create` options for a set, as `ipset save` prints them. */
function createOptions(set: Ipset): string {
  if (set.type === 'bitmap:port') return 'range 0-65535';
  return `family ${set.family === 'IPv6' ? 'inet6' : 'inet'} hashsize 1024 maxelem 65536`;
}

/**
 * `ipset restore` input that makes each set hold exactly its entries: create when missing,
 * flush, add. Sets are independent: a reader sees either the old or the new content of each.
 */
export function toIpsetRestore(sets: Ipset[]): string {
  const out: string[] = [];
  for (const s of sets) {
    out.push(`create ${s.name} ${s.type} ${createOptions(s)} -exist`);
    out.push(`flush ${s.name}`);
    for (const e of s.entries) out.push(`add ${s.name} ${e}`);
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

/**
 * `ipset restore` input that takes a set the kernel holds from `before` (what was last written)
 * to `after`: only the entries that differ, so a change to a large set costs what changed, and
 * readers never see it empty. '' when nothing differs.
 */
export function toIpsetUpdate(before: Ipset, after: Ipset): string {
  const had = new Set(before.entries);
  const wanted = new Set(after.entries);
  // Deletions first: the set never needs room for both.
  const lines = [...before.entries.filter((e) => !wanted.has(e)).map((e) => `del ${after.name} ${e}`), ...after.entries.filter((e) => !had.has(e)).map((e) => `add ${after.name} ${e}`)];
  return lines.length > 0 ? lines.join('\n') + '\n' : '';
}
