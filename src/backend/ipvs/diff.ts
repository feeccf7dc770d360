// The ipvsadm commands that take the kernel's virtual servers (parsed from `ipvsadm -Sn`) to a
// render's, touching only what differs, so one endpoint change is one command. Removed real
// servers are not deleted but drained (weight 0): IPVS then sends them no new connections while
// existing ones finish; the apply layer deletes them once their connections are gone.
import type { IPFamily } from '../../model/types.js';
import { cidrContains, parseCIDR, parseIP } from '../../net/ip.js';
import { hostPort, serviceOptions, serviceRef as ref, type ParsedVirtualServer } from './ipvsadm.js';
import type { RealServer, VirtualServer } from './types.js';

const key = (v: Pick<VirtualServer, 'protocol' | 'address' | 'port'>): string => `${v.protocol} ${v.address} ${v.port}`;
const rsKey = (r: Pick<RealServer, 'address' | 'port'>): string => hostPort(r.address, r.port);

function sameService(a: ParsedVirtualServer, b: VirtualServer): boolean {
  return (
    a.scheduler === b.scheduler &&
    a.persistenceTimeoutSeconds === b.persistenceTimeoutSeconds &&
    (a.schedulerFlags ?? []).join(',') === (b.schedulerFlags ?? []).join(',')
  );
}

export interface IpvsDiff {
  /** `ipvsadm --restore` lines, in an order the kernel accepts. */
  commands: string[];
  /** Real servers at weight 0 that are no longer wanted: delete each once it has no connections. */
  draining: Array<{ service: string; realServer: string }>;
}

/**
 * Commands from `current` to `desired`, for one family. Virtual servers of the other family,
 * or inside excludeCIDRs (others' services on this node), are left alone.
 */
export function diffVirtualServers(current: ParsedVirtualServer[], desired: VirtualServer[], family: IPFamily, excludeCIDRs: string[] = []): IpvsDiff {
  const excluded = excludeCIDRs.map((c) => parseCIDR(c)).filter((c) => c !== null);
  const ours = (address: string): boolean => {
    const ip = parseIP(address);
    return ip !== null && ip.family === family && !excluded.some((c) => cidrContains(c!, ip));
  };
  const have = new Map(current.filter((v) => ours(v.address)).map((v) => [key(v), v]));
  const commands: string[] = [];
  const draining: IpvsDiff['draining'] = [];
  const drainOrDelete: string[] = [];
  for (const v of desired) {
    const cur = have.get(key(v));
    have.delete(key(v));
    const r = ref(v);
    if (!cur) {
      commands.push(`-A ${r} ${serviceOptions(v)}`);
      for (const rs of v.realServers) commands.push(`-a ${r} -r ${rsKey(rs)} -m -w ${rs.weight}`);
      continue;
    }
    if (!sameService(cur, v)) commands.push(`-E ${r} ${serviceOptions(v)}`);
    const curRs = new Map(cur.realServers.map((rs) => [rsKey(rs), rs]));
    for (const rs of v.realServers) {
      const c = curRs.get(rsKey(rs));
      curRs.delete(rsKey(rs));
      if (!c) commands.push(`-a ${r} -r ${rsKey(rs)} -m -w ${rs.weight}`);
      else if (c.weight !== rs.weight || c.forwarding !== 'masq') commands.push(`-e ${r} -r ${rsKey(rs)} -m -w ${rs.weight}`);
    }
    for (const [k, c] of curRs) {
      // Anything but a masqueraded real server was never ours to drain: remove it at once.
      if (c.forwarding !== 'masq') drainOrDelete.push(`-d ${r} -r ${k}`);
      else {
        if (c.weight !== 0) commands.push(`-e ${r} -r ${k} -m -w 0`);
        draining.push({ service: r, realServer: k });
      }
    }
  }
  commands.push(...drainOrDelete);
  for (const v of have.values()) commands.push(`-D ${ref(v)}`);
  return { commands, draining };
}
