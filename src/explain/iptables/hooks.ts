// Where the iptables mode hooks its chains into the built-in ones (upstream's jumps, plus one
// noted below). These jumps are not
// part of the restore input the proxy writes on each sync (they live in chains shared with
// other software, and are ensured one by one), so a trace of restore input alone assumes
// them. Each jump is prepended, in this list's order, so in the kernel the last entry of a
// built-in chain comes first: see kernelOrderJumps.
import { TraceError } from '../tracer.js';
import { BUILTIN_CHAINS, parseRestoreInput, type IptTableName, type RestoreInput } from './restore.js';
import { IptParseError } from './rule.js';

export interface UpstreamJump {
  table: Extract<IptTableName, 'nat' | 'filter'>;
  /** The built-in chain holding the jump. */
  from: string;
  /** Our chain it jumps to. */
  to: string;
  /** Matches before the comment (`-m conntrack --ctstate NEW` on some filter hooks). */
  args: readonly string[];
  /** Empty for the kubelet's own firewall chain, which has no comment. */
  comment: string;
}

const NEW_ONLY = ['-m', 'conntrack', '--ctstate', 'NEW'] as const;

/** The jump list, in the order the jumps are ensured (each at the top of its chain). */
export const UPSTREAM_JUMPS: readonly UpstreamJump[] = [
  { table: 'filter', from: 'INPUT', to: 'KUBE-EXTERNAL-SERVICES', args: NEW_ONLY, comment: 'kubernetes externally-visible service portals' },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-EXTERNAL-SERVICES', args: NEW_ONLY, comment: 'kubernetes externally-visible service portals' },
  // Not upstream's: the node's own connections to an external address without endpoints are refused as in nftables mode.
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-EXTERNAL-SERVICES', args: NEW_ONLY, comment: 'kubernetes externally-visible service portals' },
  { table: 'filter', from: 'INPUT', to: 'KUBE-NODEPORTS', args: [], comment: 'kubernetes health check service ports' },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-SERVICES', args: NEW_ONLY, comment: 'kubernetes service portals' },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-SERVICES', args: NEW_ONLY, comment: 'kubernetes service portals' },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-FORWARD', args: [], comment: 'kubernetes forwarding rules' },
  { table: 'filter', from: 'INPUT', to: 'KUBE-PROXY-FIREWALL', args: NEW_ONLY, comment: 'kubernetes load balancer firewall' },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-PROXY-FIREWALL', args: NEW_ONLY, comment: 'kubernetes load balancer firewall' },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-PROXY-FIREWALL', args: NEW_ONLY, comment: 'kubernetes load balancer firewall' },
  { table: 'nat', from: 'OUTPUT', to: 'KUBE-SERVICES', args: [], comment: 'kubernetes service portals' },
  { table: 'nat', from: 'PREROUTING', to: 'KUBE-SERVICES', args: [], comment: 'kubernetes service portals' },
  { table: 'nat', from: 'POSTROUTING', to: 'KUBE-POSTROUTING', args: [], comment: 'kubernetes postrouting rules' },
  // The kubelet's firewall chain (localhost NodePort protection), ensured after the others.
  { table: 'filter', from: 'INPUT', to: 'KUBE-FIREWALL', args: [], comment: '' },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-FIREWALL', args: [], comment: '' },
];

/** The jump as iptables-save prints it, without `-A CHAIN`. */
export function jumpRuleSpec(j: UpstreamJump): string {
  const comment = j.comment === '' ? [] : ['-m', 'comment', '--comment', `"${j.comment}"`];
  return [...j.args, ...comment, '-j', j.to].join(' ');
}

/** The jumps of one built-in chain in the order the kernel holds them (last ensured first). */
export function kernelOrderJumps(table: IptTableName, from: string): UpstreamJump[] {
  return UPSTREAM_JUMPS.filter((j) => j.table === table && j.from === from).reverse();
}

/**
 * Fills in (in place) upstream's jumps from the built-in chains to ours, for tables whose
 * built-in chains the input leaves empty (the proxy writes only its own chains). A jump is
 * added only when its target chain exists: an absent chain could not be jumped to.
 */
export function withUpstreamJumps(tables: RestoreInput): RestoreInput {
  for (const [name, table] of tables) {
    const builtins = BUILTIN_CHAINS[name].map((c) => table.chains.get(c)!);
    if (builtins.some((c) => c.rules.length > 0)) continue;
    for (const c of builtins) {
      c.rules = kernelOrderJumps(name, c.name).filter((j) => table.chains.has(j.to)).map(jumpRuleSpec);
    }
  }
  return tables;
}

/** Reads restore input for tracing: parse errors become TraceErrors; missing hooks are upstream's. */
export function restoreTables(restoreInput: string): RestoreInput {
  try {
    return withUpstreamJumps(parseRestoreInput(restoreInput));
  } catch (e) {
    if (e instanceof IptParseError) throw new TraceError(`cannot read the iptables rules: ${e.message}`);
    throw e;
  }
}
