// The IPVS renderer's output: plain data the apply layer turns into `ip addr` on kube-ipvs0,
// `ipvsadm --restore`, `ipset restore` and `iptables-restore` input, and that a parser of the
// kernel's listings produces back for comparison.
import type { IPFamily, Protocol } from '../../model/types.js';
import type { IptChain, IptRuleset, IptTable } from '../iptables/syntax.js';

/** Schedulers the kernel ships (ip_vs_<name>); the same list the configuration accepts. */
export const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh'] as const;
export type Scheduler = (typeof SCHEDULERS)[number];
export const DEFAULT_SCHEDULER: Scheduler = 'rr';

/** The dummy interface every service address is bound to, so the kernel accepts it as local. */
export const DUMMY_DEVICE = 'kube-ipvs0';

export interface RealServer {
  address: string;
  port: number;
  /** 1 for a live endpoint; 0 while a removed one drains (graceful termination, set by apply). */
  weight: number;
}

export interface VirtualServer {
  protocol: Protocol;
  /** Canonical address (inet_ntop form). */
  address: string;
  port: number;
  scheduler: Scheduler;
  /** ClientIP affinity: the service's timeout; absent without affinity. */
  persistenceTimeoutSeconds?: number;
  /** Scheduler flags as ipvsadm names them (`-b`): `mh-port` with mh, so a client's source port is hashed too, as upstream. */
  schedulerFlags?: string[];
  /** Sorted by address text, then port. Masquerading (`-m`) is implied: kube-proxy only uses NAT forwarding. */
  realServers: RealServer[];
}

export type IpsetType = 'hash:ip' | 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';

export interface Ipset {
  name: string;
  type: IpsetType;
  family: IPFamily;
  comment: string;
  /** Entries as `ipset save` prints them (e.g. `10.96.0.10,tcp:80`), sorted, unique. */
  entries: string[];
}

export interface IpvsRuleset {
  family: IPFamily;
  /** Addresses to hold on kube-ipvs0 (sorted); any other address there is stale. */
  dummyAddresses: string[];
  /** Sorted by protocol, address, port. */
  virtualServers: VirtualServer[];
  /** Every set of the mode, in upstream's order, empty ones included (rules refer to them). */
  ipsets: Ipset[];
  /** Our chains in nat and filter with their rules, in iptables-save's canonical form. */
  iptables: IptRuleset;
  /** Rules in built-in chains that hook ours in. */
  jumps: Array<{ table: IptTable; chain: string; rule: string }>;
  /** CIDRs (canonical, this family) whose virtual servers are not ours: never deleted as stale. */
  excludeCIDRs: string[];
}

export type { IptChain };

/** A scheduler name from the configuration: blank means rr; anything else unknown is an error. */
export function parseScheduler(name: string | undefined): Scheduler {
  const s = (name ?? '').trim();
  if (s === '') return DEFAULT_SCHEDULER;
  if ((SCHEDULERS as readonly string[]).includes(s)) return s as Scheduler;
  throw new Error(`unknown IPVS scheduler "${s}": must be one of ${SCHEDULERS.join(', ')}`);
}
