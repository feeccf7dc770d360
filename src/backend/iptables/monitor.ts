// Which changes the nft monitor reports are foreign changes to our iptables rules on the nft
// flavour, whose tables (ip nat, ip filter, ip6 mangle, …) are nftables tables.
import type { IPFamily } from '../../model/types.js';
import { ForeignWatch, type MonitorEvent } from '../nftables/monitor.js';

const TABLES = new Set(['nat', 'filter', 'mangle']);
const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/**
 * A change to one of our chains, or to a built-in chain that may hold a jump of ours: a rule
 * added there that names one of our chains, any rule deleted there (the monitor prints only a
 * deleted rule's handle), or the chain or table itself deleted. Other tools' chains are not ours.
 */
export function touchesOurRules(family: IPFamily, e: MonitorEvent): boolean {
  if (e.family !== (family === 'IPv6' ? 'ip6' : 'ip') || !TABLES.has(e.table)) return false;
  if (e.kind === 'table') return e.verb === 'delete';
  if ((e.kind !== 'rule' && e.kind !== 'chain') || !e.name) return false;
  if (e.name.startsWith('KUBE-')) return true;
  if (!BUILTIN_CHAINS.has(e.name)) return false;
  return e.verb === 'delete' || (e.kind === 'rule' && /\bKUBE-/.test(e.rest));
}

/** The monitor's view of one family's iptables-nft rules. */
export function iptablesForeignWatch(family: IPFamily, exec: { wrap?: string[] }, fullReadEvery: number): ForeignWatch {
  return new ForeignWatch(exec, `iptables ${family}`, (e) => touchesOurRules(family, e), fullReadEvery);
}
