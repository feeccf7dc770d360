// Start-up cleanup of what another proxy mode (or another iptables flavour) left behind: our
// KUBE-* iptables chains and the jumps to them, the IPVS mode's kube-ipvs0 dummy interface, IPVS
// virtual servers and KUBE-* ipsets, and the nftables mode's tables. Chains of other owners
// (kubelet's KUBE-FIREWALL in filter, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) are never touched.
// Failures are logged, never thrown: leftovers must not keep the proxy from starting.
import { run, tryRun, type ExecOptions } from '../../node/exec.js';
import { log } from '../../log.js';
import type { IPFamily } from '../../model/types.js';
import { restore, saveTables } from '../iptables/apply.js';
import { FAMILIES, FLAVOURS, otherFlavour, toolFor, type Flavour } from '../iptables/flavour.js';
import { deleteTables, ourTableFamilies } from '../nftables/apply.js';
import { isUserspaceChain } from '../userspace/names.js';

/** Chains only the IPVS mode creates (the nat table's KUBE-FIREWALL is one, see isKubeProxyChain). */
const IPVS_ONLY_CHAINS = new Set([
  'KUBE-LOAD-BALANCER',
  'KUBE-NODE-PORT',
  'KUBE-IPVS-FILTER',
  'KUBE-IPVS-OUT-FILTER',
  'KUBE-SOURCE-RANGES-FIREWALL',
]);
const SHARED_CHAINS = new Set([
  'KUBE-SERVICES',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-NODEPORTS',
  'KUBE-POSTROUTING',
  'KUBE-MARK-MASQ',
  'KUBE-FORWARD',
  'KUBE-PROXY-FIREWALL',
  'KUBE-PROXY-CANARY',
  // Not upstream's: our iptables mode rejects connections to a cluster IP port the Service lacks.
  'KUBE-CLUSTER-IPS',
]);
const OWN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'];

/** Whether a chain of the IPVS mode's that the iptables mode never uses. */
export function isIpvsOnlyChain(table: string, chain: string): boolean {
  // The ipvs mode's KUBE-FIREWALL lives in nat; the filter table's one is kubelet's.
  return IPVS_ONLY_CHAINS.has(chain) || (table === 'nat' && chain === 'KUBE-FIREWALL');
}

/** Whether a chain of an iptables table was created by kube-proxy (any mode). */
export function isKubeProxyChain(table: string, chain: string): boolean {
  return SHARED_CHAINS.has(chain) || OWN_PREFIXES.some((p) => chain.startsWith(p)) || isIpvsOnlyChain(table, chain) || isUserspaceChain(chain);
}

export type ChainFilter = (table: string, chain: string) => boolean;

/** A rule in a chain we keep that refers to an IPVS-mode ipset, which could not be destroyed otherwise. */
const usesKubeIpset = (rule: string): boolean => rule.includes('--match-set KUBE-');

/**
 * From `iptables-save` output, the `iptables-restore --noflush` input removing the chains isOurs
 * accepts and every jump to them from other chains, plus the rules `dropRule` accepts in the
 * chains that stay; '' when there is nothing to remove.
 */
export function iptablesCleanupScript(save: string, isOurs: ChainFilter = isKubeProxyChain, dropRule?: (rule: string) => boolean): string {
  const out: string[] = [];
  const chainsOf = new Map<string, Set<string>>();
  const lines = save.split('\n');
  let table = '';
  // First pass: which chains are ours, per table.
  for (const line of lines) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    else if (line.startsWith(':')) {
      const end = line.indexOf(' ');
      const name = end < 0 ? line.slice(1) : line.slice(1, end);
      if (isOurs(table, name)) {
        if (!chainsOf.has(table)) chainsOf.set(table, new Set());
        chainsOf.get(table)!.add(name);
      }
    }
  }
  table = '';
  let own: string[] = [];
  let ours: Set<string> | undefined;
  let dels: string[] = [];
  // A save of 10,000 services has 330,000 rules: each is looked at without being split.
  for (const line of lines) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim();
      ours = chainsOf.get(table);
      own = [...(ours ?? [])];
      dels = [];
    } else if (line.startsWith('-A ')) {
      if (ours) {
        const end = line.indexOf(' ', 3);
        if (ours.has(end < 0 ? line.slice(3) : line.slice(3, end))) continue;
        const target = /\s-[jg]\s+(\S+)/.exec(line)?.[1];
        if (target && ours.has(target)) {
          dels.push('-D' + line.slice(2));
          continue;
        }
      }
      if (dropRule?.(line)) dels.push('-D' + line.slice(2));
    } else if (line.trim() === 'COMMIT') {
      if (table && (own.length > 0 || dels.length > 0)) {
        out.push(`*${table}`, ...own.map((c) => `:${c} - [0:0]`), ...dels, ...own.map((c) => `-X ${c}`), 'COMMIT');
      }
      own = [];
      dels = [];
    }
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

export interface IptablesTools {
  family: IPFamily;
  flavour: Flavour;
}

/**
 * Removes the chains isOurs accepts (and the jumps to them) with each of the given tools, and the
 * rules dropRule accepts in the chains that stay. Returns the number of chains removed. A save
 * after which nothing was written is put in `unchangedSaves` by family, when given.
 */
export async function removeIptablesLeftovers(
  tools: readonly IptablesTools[],
  opts: ExecOptions = {},
  isOurs: ChainFilter = isKubeProxyChain,
  dropRule?: (rule: string) => boolean,
  unchangedSaves?: Map<IPFamily, string>,
): Promise<number> {
  let removed = 0;
  for (const { family, flavour } of tools) {
    const tool = toolFor(family, flavour, 'restore');
    try {
      // A flavour the node does not use has no tables; its save prints nothing.
      const save = await saveTables(family, flavour, opts);
      const script = iptablesCleanupScript(save, isOurs, dropRule);
      if (!script) {
        unchangedSaves?.set(family, save);
        continue;
      }
      await restore(script, family, flavour, opts);
      removed += (script.match(/^-X /gm) ?? []).length;
    } catch (e) {
      log.warn('removing iptables leftovers failed', { tool, error: e instanceof Error ? e.message : String(e) });
    }
  }
  return removed;
}

const allTools = (flavours: readonly Flavour[]): IptablesTools[] => flavours.flatMap((flavour) => FAMILIES.map((family) => ({ family, flavour })));

/** `--cleanup`: removes our chains from both flavours and both families. */
export function cleanupIptables(opts: ExecOptions = {}): Promise<number> {
  return removeIptablesLeftovers(allTools(FLAVOURS), opts);
}

export interface IpvsLeftovers {
  ipvsServices: number;
  removedInterface: boolean;
  ipsets: number;
}

/** The ports in the IPVS mode's NodePort sets (both families), by protocol, from `ipset save`. */
function nodePortsOf(save: string): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>([
    ['TCP', new Set()],
    ['UDP', new Set()],
  ]);
  for (const m of save.matchAll(/^add KUBE-(?:6-)?NODE-PORT-(?:LOCAL-)?(TCP|UDP) (\d+)$/gm)) out.get(m[1]!)!.add(Number(m[2]));
  return out;
}

/**
 * Removes the IPVS mode's virtual servers (those on kube-ipvs0's addresses, and those on a
 * port of its NodePort sets), kube-ipvs0 and the KUBE-* ipsets, each in one command. Rules
 * using those ipsets must be gone first (the kernel keeps a set in use).
 */
export async function removeIpvsLeftovers(opts: ExecOptions = {}): Promise<IpvsLeftovers> {
  const report: IpvsLeftovers = { ipvsServices: 0, removedInterface: false, ipsets: 0 };
  try {
    const link = await run(['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0'], undefined, opts);
    const addrs = new Set(link.code === 0 ? [...link.stdout.matchAll(/inet6? ([0-9a-fA-F:.]+)\//g)].map((m) => m[1]!) : []);
    const saved = await tryRun(['ipset', 'save'], undefined, opts);
    const setsText = saved?.code === 0 ? saved.stdout : '';
    const nodePorts = nodePortsOf(setsText);
    const list = link.code === 0 || /^add /m.test(setsText) ? await tryRun(['ipvsadm', '-Ln'], undefined, opts) : undefined;
    const deletes: string[] = [];
    for (const m of list?.code === 0 ? list.stdout.matchAll(/^(TCP|UDP|SCTP)\s+(\[[^\]]+\]|[\d.]+):(\d+)/gm) : []) {
      const addr = m[2]!.replace(/^\[|\]$/g, '');
      if (!addrs.has(addr) && !nodePorts.get(m[1]!)?.has(Number(m[3]))) continue;
      const flag = m[1] === 'TCP' ? '-t' : m[1] === 'UDP' ? '-u' : '--sctp-service';
      deletes.push(`-D ${flag} ${m[2]}:${m[3]}`);
    }
    if (deletes.length > 0) {
      const res = await run(['ipvsadm', '--restore'], deletes.join('\n') + '\n', opts);
      if (res.code === 0) report.ipvsServices = deletes.length;
      else log.warn('removing ipvs-mode virtual servers failed', { error: res.stderr.trim() });
    }
    if (link.code === 0) {
      const del = await run(['ip', 'link', 'del', 'kube-ipvs0'], undefined, opts);
      report.removedInterface = del.code === 0;
    }
    const names = [...setsText.matchAll(/^create (KUBE-\S+) /gm)].map((m) => m[1]!);
    if (names.length > 0) {
      const res = await run(['ipset', 'restore'], names.map((n) => `destroy ${n}`).join('\n') + '\n', opts);
      if (res.code === 0) report.ipsets = names.length;
      else log.warn('removing ipvs-mode ipsets failed', { error: res.stderr.trim() });
    }
  } catch (e) {
    log.warn('removing ipvs leftovers failed', { error: String(e) });
  }
  return report;
}

export interface LeftoverReport extends IpvsLeftovers {
  iptablesChains: number;
  nftablesTables?: boolean;
}

function logReport(report: LeftoverReport): LeftoverReport {
  if (report.iptablesChains || report.ipvsServices || report.removedInterface || report.ipsets || report.nftablesTables) {
    log.info('removed kube-proxy leftovers', { ...report });
  }
  return report;
}

/**
 * nftables mode: removes the iptables (both flavours) and IPVS modes' leftovers; `parts` picks
 * one of the two.
 */
export async function removeLeftovers(opts: ExecOptions = {}, parts: { iptables?: boolean; ipvs?: boolean } = {}): Promise<LeftoverReport> {
  const iptablesChains = parts.iptables === false ? 0 : await cleanupIptables(opts);
  const ipvs = parts.ipvs === false ? { ipvsServices: 0, removedInterface: false, ipsets: 0 } : await removeIpvsLeftovers(opts);
  return logReport({ iptablesChains, ...ipvs });
}

/**
 * iptables mode with the node's `flavour`: removes our chains from the other flavour, the IPVS
 * mode's own chains and its ipset rules from this one (the chains both modes share stay: the next
 * full sync rewrites them), the IPVS leftovers and the nftables mode's tables.
 */
export async function removeLeftoversForIptables(
  flavour: Flavour,
  opts: ExecOptions = {},
): Promise<LeftoverReport & { unchangedSaves: ReadonlyMap<IPFamily, string> }> {
  let iptablesChains = await removeIptablesLeftovers(allTools([otherFlavour(flavour)]), opts);
  const otherModes: ChainFilter = (table, chain) => isIpvsOnlyChain(table, chain) || isUserspaceChain(chain);
  // The whole save of the flavour in use, when nothing had to be removed, is what the backend's
  // first sync would read again (~3 s at 10,000 services on iptables-nft).
  const unchangedSaves = new Map<IPFamily, string>();
  iptablesChains += await removeIptablesLeftovers(allTools([flavour]), opts, otherModes, usesKubeIpset, unchangedSaves);
  const ipvs = await removeIpvsLeftovers(opts);
  const nftablesTables = await removeNftablesTables(opts);
  return { ...logReport({ iptablesChains, ...ipvs, nftablesTables }), unchangedSaves };
}

/** Deletes the nftables mode's tables when present; true when there were some. */
async function removeNftablesTables(opts: ExecOptions): Promise<boolean> {
  try {
    if ((await ourTableFamilies(opts)).length > 0) {
      await deleteTables(opts);
      return true;
    }
  } catch (e) {
    log.warn('removing the nftables-mode tables failed', { error: e instanceof Error ? e.message : String(e) });
  }
  return false;
}

/**
 * IPVS mode with the node's `flavour`: our chains from the other flavour, the other modes'
 * chains from this one (`isOwn` names the IPVS mode's, which stay), the nftables mode's tables.
 */
export async function removeLeftoversForIpvs(flavour: Flavour, isOwn: ChainFilter, opts: ExecOptions = {}): Promise<LeftoverReport> {
  let iptablesChains = await removeIptablesLeftovers(allTools([otherFlavour(flavour)]), opts);
  iptablesChains += await removeIptablesLeftovers(allTools([flavour]), opts, (table, chain) => isKubeProxyChain(table, chain) && !isOwn(table, chain));
  const nftablesTables = await removeNftablesTables(opts);
  return logReport({ iptablesChains, ipvsServices: 0, removedInterface: false, ipsets: 0, nftablesTables });
}

/**
 * userspace mode with the node's `flavour`: every kube-proxy chain but its own four (both
 * flavours), the IPVS leftovers and the nftables mode's tables.
 */
export async function removeLeftoversForUserspace(flavour: Flavour, opts: ExecOptions = {}): Promise<LeftoverReport> {
  let iptablesChains = await removeIptablesLeftovers(allTools([otherFlavour(flavour)]), opts);
  const notOurs: ChainFilter = (table, chain) => isKubeProxyChain(table, chain) && !isUserspaceChain(chain);
  iptablesChains += await removeIptablesLeftovers(allTools([flavour]), opts, notOurs, usesKubeIpset);
  const ipvs = await removeIpvsLeftovers(opts);
  const nftablesTables = await removeNftablesTables(opts);
  return logReport({ iptablesChains, ...ipvs, nftablesTables });
}

/**
 * `--cleanup --dry-run`: what a cleanup would remove, one line each, found with read-only
 * commands only (listing tables, chains, interfaces and sets changes nothing).
 */
export async function listLeftovers(opts: ExecOptions = {}): Promise<string[]> {
  const found: string[] = [];
  for (const family of await ourTableFamilies(opts)) found.push(`nftables table ${family} kube-proxy`);
  for (const { family, flavour } of allTools(FLAVOURS)) {
    let script: string;
    try {
      script = iptablesCleanupScript(await saveTables(family, flavour, opts));
    } catch {
      continue; // this flavour's tools are missing: it has nothing of ours
    }
    let table = '';
    for (const line of script.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      else if (line.startsWith('-X ')) found.push(`${toolFor(family, flavour, 'iptables')} chain ${table} ${line.slice(3)}`);
      else if (line.startsWith('-D ')) found.push(`${toolFor(family, flavour, 'iptables')} rule -t ${table} ${line}`);
    }
  }
  const link = await tryRun(['ip', '-o', 'link', 'show', 'dev', 'kube-ipvs0'], undefined, opts);
  if (link?.code === 0) found.push('interface kube-ipvs0 (and the IPVS virtual servers on its addresses)');
  const sets = await tryRun(['ipset', 'list', '-n'], undefined, opts);
  for (const name of sets?.code === 0 ? sets.stdout.split('\n').filter((n) => n.startsWith('KUBE-')) : []) found.push(`ipset ${name}`);
  return found;
}
