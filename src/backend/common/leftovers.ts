// Start-up cleanup of what another proxy mode (or another iptables flavour) left behind: our
// KUBE-* iptables chains and the jumps to them, the IPVS mode's kube-ipvs0 dummy interface, IPVS
// virtual servers and KUBE-* ipsets, and the nftables mode's tables. Chains of other owners
// (kubelet's KUBE-FIREWALL in filter, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) are never touched.
// Failures are logged, never thrown: leftovers must not keep the proxy from starting.
import { run, tryRun, type ExecOptions } from '../../node/exec.js';
import { log } from '../../log.js';
import type { IPFamily } from '../../model/types.js';
import { restore, saveLines, saveTables } from '../iptables/apply.js';
import { FAMILIES, FLAVOURS, otherFlavour, toolFor, type Flavour } from '../iptables/flavour.js';
import { CHECKPOINT_MARKER_PREFIX, SERVICE_PORT_CHAIN_PREFIXES } from '../iptables/names.js';
import { forEachLine, IPTABLES_MODE_TABLES, kernelChainsReader, keptWhole, linesOfTables, type KernelChains } from '../iptables/save.js';
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

/** Whether a chain of the IPVS mode's that the iptables mode never uses. */
export function isIpvsOnlyChain(table: string, chain: string): boolean {
  // The ipvs mode's KUBE-FIREWALL lives in nat; the filter table's one is kubelet's.
  return IPVS_ONLY_CHAINS.has(chain) || (table === 'nat' && chain === 'KUBE-FIREWALL');
}

/** Whether a chain of an iptables table was created by kube-proxy (any mode). */
export function isKubeProxyChain(table: string, chain: string): boolean {
  return (
    SHARED_CHAINS.has(chain) ||
    SERVICE_PORT_CHAIN_PREFIXES.some((p) => chain.startsWith(p)) ||
    chain.startsWith(CHECKPOINT_MARKER_PREFIX) ||
    isIpvsOnlyChain(table, chain) ||
    isUserspaceChain(chain)
  );
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
  const scan = new CleanupScan(isOurs, dropRule);
  forEachLine(save, (l) => scan.line(l));
  return scan.script();
}

/**
 * iptablesCleanupScript over save lines given one at a time, in one pass: iptables-save prints a
 * table's chains (`:name …`) before its rules. A save of 10,000 services has 330,000 rules: each
 * is looked at without being split, and only in tables that have chains to remove.
 */
class CleanupScan {
  private readonly out: string[] = [];
  private table = '';
  private ours = new Set<string>();
  private dels: string[] = [];

  constructor(
    private readonly isOurs: ChainFilter,
    private readonly dropRule?: (rule: string) => boolean,
  ) {}

  line(line: string): void {
    if (line.startsWith('-A ')) {
      if (this.ours.size > 0) {
        const end = line.indexOf(' ', 3);
        if (this.ours.has(end < 0 ? line.slice(3) : line.slice(3, end))) return;
        const target = /\s-[jg]\s+(\S+)/.exec(line)?.[1];
        if (target && this.ours.has(target)) {
          this.dels.push('-D' + line.slice(2));
          return;
        }
      }
      if (this.dropRule?.(line)) this.dels.push('-D' + line.slice(2));
    } else if (line.startsWith(':')) {
      const end = line.indexOf(' ');
      const name = end < 0 ? line.slice(1) : line.slice(1, end);
      if (this.isOurs(this.table, name)) this.ours.add(name);
    } else if (line.startsWith('*')) {
      this.table = line.slice(1).trim();
      this.ours = new Set();
      this.dels = [];
    } else if (line.trim() === 'COMMIT') {
      const own = [...this.ours];
      if (this.table && (own.length > 0 || this.dels.length > 0)) {
        this.out.push(`*${this.table}`, ...own.map((c) => `:${c} - [0:0]`), ...this.dels, ...own.map((c) => `-X ${c}`), 'COMMIT');
      }
      this.ours = new Set();
      this.dels = [];
    }
  }

  script(): string {
    return this.out.length > 0 ? this.out.join('\n') + '\n' : '';
  }
}

export interface IptablesTools {
  family: IPFamily;
  flavour: Flavour;
}

/**
 * Removes the chains isOurs accepts (and the jumps to them) with each of the given tools, and the
 * rules dropRule accepts in the chains that stay. Returns the number of chains removed. With
 * `unchanged`, the iptables mode's tables as read (see kernelChainsReader) are put there by
 * family where nothing was removed: what the backend's first sync compares with. The save is
 * read a line at a time: at 10,000 services it is 34 MB.
 */
export async function removeIptablesLeftovers(
  tools: readonly IptablesTools[],
  opts: ExecOptions = {},
  isOurs: ChainFilter = isKubeProxyChain,
  dropRule?: (rule: string) => boolean,
  unchanged?: Map<IPFamily, KernelChains>,
): Promise<number> {
  let removed = 0;
  for (const { family, flavour } of tools) {
    const tool = toolFor(family, flavour, 'restore');
    try {
      const scan = new CleanupScan(isOurs, dropRule);
      const kernel = unchanged ? kernelChainsReader(keptWhole) : undefined;
      const ourTables = kernel ? linesOfTables(IPTABLES_MODE_TABLES, kernel.line) : undefined;
      // A flavour the node does not use has no tables; its save prints nothing.
      await saveLines(family, flavour, opts, undefined, (line) => {
        scan.line(line);
        ourTables?.(line);
      });
      const script = scan.script();
      if (!script) {
        if (kernel) unchanged!.set(family, kernel.done());
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
 * full sync rewrites them), the IPVS leftovers and the nftables mode's tables. The families in
 * `checkpointed` are not read in this flavour: a clean stop's checkpoint, whose marker any other
 * mode's start-up would have removed with our chains, says what they hold.
 */
export async function removeLeftoversForIptables(
  flavour: Flavour,
  opts: ExecOptions = {},
  checkpointed: ReadonlySet<IPFamily> = new Set(),
): Promise<LeftoverReport & { unchanged: ReadonlyMap<IPFamily, KernelChains> }> {
  let iptablesChains = await removeIptablesLeftovers(allTools([otherFlavour(flavour)]), opts);
  const otherModes: ChainFilter = (table, chain) => isIpvsOnlyChain(table, chain) || isUserspaceChain(chain);
  // What the save of the flavour in use shows of our tables, when nothing had to be removed, is
  // what the backend's first sync would read again (~3 s at 10,000 services on iptables-nft).
  const unchanged = new Map<IPFamily, KernelChains>();
  const unread = allTools([flavour]).filter((t) => !checkpointed.has(t.family));
  iptablesChains += await removeIptablesLeftovers(unread, opts, otherModes, usesKubeIpset, unchanged);
  const ipvs = await removeIpvsLeftovers(opts);
  const nftablesTables = await removeNftablesTables(opts);
  return { ...logReport({ iptablesChains, ...ipvs, nftablesTables }), unchanged };
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
