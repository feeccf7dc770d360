// Start-up cleanup of what another proxy mode left behind: KUBE-* iptables chains and the
// jumps to them, the kube-ipvs0 dummy interface and the IPVS virtual servers on its addresses.
// Chains of other owners (including kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY in the
// filter table) are never touched.
import { run, tryRun, type ExecOptions } from './exec.js';
import { log } from '../../log.js';

const OWN_CHAINS = new Set([
  'KUBE-SERVICES',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-NODEPORTS',
  'KUBE-POSTROUTING',
  'KUBE-MARK-MASQ',
  'KUBE-FORWARD',
  'KUBE-PROXY-FIREWALL',
  'KUBE-PROXY-CANARY',
  'KUBE-LOAD-BALANCER',
  'KUBE-NODE-PORT',
  'KUBE-IPVS-FILTER',
  'KUBE-IPVS-OUT-FILTER',
  'KUBE-SOURCE-RANGES-FIREWALL',
]);
const OWN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'];

/** Whether a chain of an iptables table was created by kube-proxy. */
export function isKubeProxyChain(table: string, chain: string): boolean {
  if (OWN_CHAINS.has(chain) || OWN_PREFIXES.some((p) => chain.startsWith(p))) return true;
  // The ipvs mode's KUBE-FIREWALL lives in nat; the filter table's one is kubelet's.
  return table === 'nat' && chain === 'KUBE-FIREWALL';
}

/**
 * From `iptables-save` output, the `iptables-restore --noflush` input removing our chains and
 * every jump to them from other chains; '' when there is nothing to remove.
 */
export function iptablesCleanupScript(save: string): string {
  const out: string[] = [];
  let table = '';
  let own: string[] = [];
  let dels: string[] = [];
  const flushTable = (): void => {
    if (table && own.length > 0 && ['nat', 'filter', 'mangle'].includes(table)) {
      out.push(`*${table}`, ...own.map((c) => `:${c} - [0:0]`), ...dels, ...own.map((c) => `-X ${c}`), 'COMMIT');
    }
    own = [];
    dels = [];
  };
  const chainsOf = new Map<string, Set<string>>();
  // First pass: which chains are ours, per table.
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (isKubeProxyChain(table, name)) {
        if (!chainsOf.has(table)) chainsOf.set(table, new Set());
        chainsOf.get(table)!.add(name);
      }
    }
  }
  table = '';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim();
      own = [...(chainsOf.get(table) ?? [])];
    } else if (line.startsWith('-A ')) {
      const ours = chainsOf.get(table);
      if (!ours) continue;
      const chain = line.split(' ')[1]!;
      const target = /\s-[jg]\s+(\S+)/.exec(line)?.[1];
      if (!ours.has(chain) && target && ours.has(target)) dels.push('-D' + line.slice(2));
    } else if (line.trim() === 'COMMIT') {
      flushTable();
    }
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

export interface LeftoverReport {
  iptablesChains: number;
  ipvsServices: number;
  removedInterface: boolean;
}

/**
 * Removes iptables/ipvs leftovers of upstream kube-proxy (`parts` picks which; both by default).
 * Errors are logged, not thrown.
 */
export async function removeLeftovers(opts: ExecOptions = {}, parts: { iptables?: boolean; ipvs?: boolean } = {}): Promise<LeftoverReport> {
  const report: LeftoverReport = { iptablesChains: 0, ipvsServices: 0, removedInterface: false };
  for (const tool of parts.iptables === false ? [] : ['iptables', 'ip6tables']) {
    try {
      const save = await tryRun([`${tool}-save`], undefined, opts);
      if (!save || save.code !== 0) continue;
      const script = iptablesCleanupScript(save.stdout);
      if (!script) continue;
      const res = await run([`${tool}-restore`, '--noflush'], script, opts);
      if (res.code !== 0) {
        log.warn('removing iptables leftovers failed', { tool, error: res.stderr.trim() });
        continue;
      }
      report.iptablesChains += (script.match(/^-X /gm) ?? []).length;
    } catch (e) {
      log.warn('removing iptables leftovers failed', { tool, error: String(e) });
    }
  }
  try {
    const link = parts.ipvs === false ? undefined : await run(['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'], undefined, opts);
    if (link?.code === 0) {
      const addrs = new Set([...link.stdout.matchAll(/inet6? ([0-9a-fA-F:.]+)\//g)].map((m) => m[1]!));
      const list = addrs.size > 0 ? await tryRun(['ipvsadm', '-Ln'], undefined, opts) : undefined;
      if (list && list.code === 0) {
        for (const m of list.stdout.matchAll(/^(TCP|UDP|SCTP)\s+(\[[^\]]+\]|[\d.]+):(\d+)/gm)) {
          const addr = m[2]!.replace(/^\[|\]$/g, '');
          if (!addrs.has(addr)) continue;
          const flag = m[1] === 'TCP' ? '-t' : m[1] === 'UDP' ? '-u' : '--sctp-service';
          const res = await run(['ipvsadm', '-D', flag, `${m[2]}:${m[3]}`], undefined, opts);
          if (res.code === 0) report.ipvsServices++;
        }
      }
      const del = await run(['ip', 'link', 'del', 'kube-ipvs0'], undefined, opts);
      report.removedInterface = del.code === 0;
    }
  } catch (e) {
    log.warn('removing ipvs leftovers failed', { error: String(e) });
  }
  if (report.iptablesChains || report.ipvsServices || report.removedInterface) log.info('removed kube-proxy leftovers', { ...report });
  return report;
}
