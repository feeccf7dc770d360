// Thin layer over the iptables tools of one flavour (nft or legacy) and family: restore, save,
// the jumps from built-in chains, the canary, and which flavour the node uses.
import { run, type ExecOptions } from '../../node/exec.js';
import { collectGarbageIfGrown, GARBAGE_WHILE_TOOL_WORKS_MIB } from '../../node/memory.js';
import { shellFor } from '../../node/tool-process.js';
import type { IPFamily } from '../../model/types.js';
import { CANARY_CHAIN, CANARY_RULE_ARGS, CANARY_TABLES } from './canary.js';
import { FAMILIES, toolFor, type Flavour } from './flavour.js';
import { linesOfTables, type SavedTables } from './save.js';
import { noteOwnTool, PRINT_PID, splitPid } from './own-tools.js';

export type { ExecOptions } from '../../node/exec.js';
export { toolFor, type Flavour } from './flavour.js';
export { parseSave, type SavedTable, type SavedTables } from './save.js';

/** Seconds a restore or command waits for the xtables lock (legacy) before failing. */
const WAIT_ARG = '--wait=5';

export class IptablesRestoreError extends Error {
  constructor(
    message: string,
    readonly tool: string,
    /** The tool's own error text. */
    readonly toolMessage: string,
    /** 1-based line of the input the tool complained about, 0 when unknown. */
    readonly line: number,
    readonly lineText: string,
  ) {
    super(message);
    this.name = 'IptablesRestoreError';
  }
}

const runTool = (argv: string[], opts: ExecOptions) => shellFor(opts).run(argv, '', 'stdin');

/**
 * The failing line from iptables-restore's stderr. iptables-nft reports some errors (a jump to a
 * chain that does not exist) only when the table is committed, pointing at its COMMIT line; the
 * rule naming that chain is then the more useful line to show.
 */
function failingLine(input: string, stderr: string): number {
  const m =
    /Error occurred at line: (\d+)/.exec(stderr) ??
    /line (\d+) failed/.exec(stderr) ??
    /COMMIT expected at line (\d+)/.exec(stderr) ??
    /\bline:? (\d+)/.exec(stderr);
  let line = m ? Number(m[1]) : 0;
  const lines = input.split('\n');
  const missing = /Chain '([^']+)' does not exist/.exec(stderr)?.[1];
  if (line > 0 && missing && lines[line - 1]?.trim() === 'COMMIT') {
    let start = line - 1;
    while (start > 0 && !lines[start - 1]!.startsWith('*')) start--;
    const target = new RegExp(`\\s-[jg] ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s|$)`);
    const at = lines.slice(start, line - 1).findIndex((l) => target.test(l));
    if (at >= 0) line = start + at + 1;
  }
  return line;
}

/** The tool's message without its usage hint. */
function toolMessage(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Try `') && !l.startsWith('Error occurred at line'))
    .join('; ');
}

/** The error for a failed restore, naming the failing line of `input`. */
function restoreError(tool: string, input: string, code: number, stderr: string): IptablesRestoreError {
  const message = toolMessage(stderr) || `${tool} exited with ${code}`;
  const line = failingLine(input, stderr);
  const lineText = line > 0 ? (input.split('\n')[line - 1] ?? '') : '';
  return new IptablesRestoreError(`${tool} failed: ${message}${line ? ` (line ${line}: ${lineText.trim()})` : ''}`, tool, message, line, lineText);
}

/**
 * `<tool>-restore --noflush` with `input` on stdin. Each table of the input is committed
 * atomically: on failure the failing table keeps its previous rules, and the error carries the
 * failing line. Restores on different `lane`s run side by side: on iptables-nft most of a
 * restore's time is turning rules into nf_tables expressions, which then runs on as many cores
 * (the kernel serializes the commits; one that finds the ruleset changed since its tool read it
 * is retried by the tool). Legacy replaces the whole table at every commit: never side by side.
 */
export async function restore(input: string, family: IPFamily, flavour: Flavour, opts: ExecOptions = {}, lane = 0): Promise<void> {
  if (flavour === 'legacy' && lane > 0) throw new Error('iptables-legacy restores cannot run side by side');
  const tool = toolFor(family, flavour, 'restore');
  // Its PID tells xtables-monitor's report of the commit apart from foreign ones.
  const res = await shellFor(opts, lane).run([...PRINT_PID, tool, '--noflush', WAIT_ARG], input, 'stdin');
  const { pid } = splitPid(res.stdout);
  if (pid !== undefined) noteOwnTool(pid);
  if (res.code !== 0) throw restoreError(tool, input, res.code, res.stderr);
}

/**
 * As restore, in a process of its own: the helper shell runs one tool at a time, and a read-back
 * that a stop abandoned may hold it for seconds. The monitor cannot tell its commit from a
 * foreign one: for a proxy that is exiting.
 */
export async function restoreAlone(input: string, family: IPFamily, flavour: Flavour, opts: ExecOptions = {}): Promise<void> {
  const tool = toolFor(family, flavour, 'restore');
  const res = await run([tool, '--noflush', WAIT_ARG], input, opts);
  if (res.code !== 0) throw restoreError(tool, input, res.code, res.stderr);
}

/** iptables-save output of the given tables (all of them when omitted). */
export async function saveTables(family: IPFamily, flavour: Flavour, opts: ExecOptions = {}, tables?: readonly string[]): Promise<string> {
  let out = '';
  for (const argv of saveRuns(family, flavour, tables)) {
    const res = await runTool(argv, opts);
    if (res.code !== 0) throw saveError(argv, res);
    out += argv.length === 1 && tables ? onlyTables(res.stdout, tables) : res.stdout;
  }
  return out;
}

/**
 * The lines of the given tables (all: undefined) of iptables-save output, one at a time as they
 * are read: a read-back that compares chain by chain need not hold a 34 MB save, nor its text twice.
 */
export async function saveLines(family: IPFamily, flavour: Flavour, opts: ExecOptions, tables: readonly string[] | undefined, onLine: (line: string) => void): Promise<void> {
  let lines = 0;
  // A 10,000-service save is 440,000 lines: each is garbage once read, collected as they come.
  const each = (line: string): void => {
    onLine(line);
    if (++lines % 4096 === 0) collectGarbageIfGrown(GARBAGE_WHILE_TOOL_WORKS_MIB);
  };
  for (const argv of saveRuns(family, flavour, tables)) {
    const res = await shellFor(opts).runLines(argv, tables ? linesOfTables(tables, each) : each);
    if (res.code !== 0) throw saveError(argv, res);
  }
}

/**
 * The save commands for some tables: iptables-nft-save reads the whole ruleset whatever `-t`
 * says (2.2 s even for a small filter table beside a 10,000-service nat), so on iptables-nft
 * several tables come from one whole save, cut to them afterwards.
 */
function saveRuns(family: IPFamily, flavour: Flavour, tables: readonly string[] | undefined): string[][] {
  const tool = toolFor(family, flavour, 'save');
  if (!tables || (flavour === 'nft' && tables.length > 1)) return [[tool]];
  return tables.map((t) => [tool, '-t', t]);
}

function saveError(argv: string[], res: { code: number; stderr: string }): Error {
  return new Error(`${argv.join(' ')} failed: ${res.stderr.trim() || `exit ${res.code}`}`);
}

/** The blocks (`*table` … `COMMIT`) of the given tables in iptables-save output. */
export function onlyTables(save: string, tables: readonly string[]): string {
  // Found by searching, not by splitting into lines: a 10,000-service save is 34 MB.
  const out: string[] = [];
  for (let at = save.startsWith('*') ? 0 : save.indexOf('\n*'); at >= 0; at = save.indexOf('\n*', at)) {
    const start = save[at] === '*' ? at : at + 1;
    const nameEnd = save.indexOf('\n', start);
    if (nameEnd < 0) break;
    const commit = save.indexOf('\nCOMMIT', nameEnd - 1);
    const end = commit < 0 ? save.length : commit + '\nCOMMIT'.length;
    if (tables.includes(save.slice(start + 1, nameEnd).trim())) out.push(save.slice(start, end), '\n');
    at = end;
  }
  return out.join('');
}

/** A rule in a built-in chain that sends packets into ours, e.g. nat PREROUTING → KUBE-SERVICES. */
export interface JumpRule {
  table: string;
  chain: string;
  /** The rule as iptables-save prints it after `-A <chain> `. */
  rule: string;
}

/**
 * Makes each jump rule exist exactly once: missing ones are inserted at the top of their chain,
 * one after the other as upstream prepends them (so of two missing jumps in one chain, the later
 * one ends up first), later copies of a doubled one removed, all in one restore. The chains
 * jumped to must exist. Returns the number of rules inserted or removed (0 when all was in place).
 */
export async function ensureJumps(
  jumps: readonly JumpRule[],
  family: IPFamily,
  flavour: Flavour,
  opts: ExecOptions = {},
  /** The built-in chains as already read (a save of their tables), to avoid reading them again. */
  known?: SavedTables,
): Promise<number> {
  if (jumps.length === 0) return 0;
  // Only the built-in chains are listed (`-S CHAIN`), not whole tables: ours can be huge.
  const saved: SavedTables = known ?? new Map();
  const tool = toolFor(family, flavour, 'iptables');
  for (const key of known ? [] : new Set(jumps.map((j) => `${j.table} ${j.chain}`))) {
    const [table, chain] = key.split(' ') as [string, string];
    const res = await runTool([tool, WAIT_ARG, '-t', table, '-S', chain], opts);
    if (res.code !== 0) throw new Error(`${tool} -t ${table} -S ${chain} failed: ${res.stderr.trim() || `exit ${res.code}`}`);
    let t = saved.get(table);
    if (!t) saved.set(table, (t = { chains: new Map(), builtin: new Set() }));
    t.chains.set(chain, res.stdout.split('\n').filter((l) => l.startsWith(`-A ${chain} `)).map((l) => l.slice(chain.length + 4)));
  }
  const plans = new Map<string, { deletes: Array<{ chain: string; pos: number }>; inserts: string[] }>();
  const seen = new Set<string>();
  let changes = 0;
  for (const j of jumps) {
    const id = `${j.table} ${j.chain} ${j.rule}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const plan = plans.get(j.table) ?? { deletes: [], inserts: [] };
    plans.set(j.table, plan);
    // 1-based positions of the copies in the chain; all but the first go.
    const positions = (saved.get(j.table)?.chains.get(j.chain) ?? []).flatMap((r, i) => (r === j.rule ? [i + 1] : []));
    if (positions.length === 0) plan.inserts.push(`-I ${j.chain} 1 ${j.rule}`);
    for (const pos of positions.slice(1)) plan.deletes.push({ chain: j.chain, pos });
    changes += positions.length === 0 ? 1 : positions.length - 1;
  }
  let input = '';
  for (const [table, { deletes, inserts }] of plans) {
    if (deletes.length === 0 && inserts.length === 0) continue;
    // Deleting by position from the bottom up keeps the other positions valid.
    const dels = deletes.sort((a, b) => b.pos - a.pos).map((d) => `-D ${d.chain} ${d.pos}`);
    input += [`*${table}`, ...dels, ...inserts, 'COMMIT', ''].join('\n');
  }
  if (input) await restore(input, family, flavour, opts);
  return changes;
}

/**
 * Whether KUBE-PROXY-CANARY still holds its marker rule in mangle, nat and filter: false after a
 * table flush or a chain deletion by someone else. One `iptables -C` per table.
 */
export async function canaryAlive(family: IPFamily, flavour: Flavour, opts: ExecOptions = {}): Promise<boolean> {
  const tool = toolFor(family, flavour, 'iptables');
  for (const table of CANARY_TABLES) {
    const res = await runTool([tool, WAIT_ARG, '-t', table, '-C', CANARY_CHAIN, ...CANARY_RULE_ARGS], opts);
    if (res.code !== 0) return false;
  }
  return true;
}

/** Whether `chain` exists in `table`: one `iptables -S <chain>`, which lists that chain only. */
export async function chainExists(family: IPFamily, flavour: Flavour, table: string, chain: string, opts: ExecOptions = {}): Promise<boolean> {
  return (await runTool([toolFor(family, flavour, 'iptables'), WAIT_ARG, '-t', table, '-S', chain], opts)).code === 0;
}

const KUBELET_CHAIN_NAMES = ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY'];
const KUBELET_CHAINS = new RegExp(`^:(${KUBELET_CHAIN_NAMES.join('|')}) `, 'm');

/** Save output of both families ('' for a tool that is missing or fails). */
async function saveBoth(flavour: Flavour, opts: ExecOptions): Promise<string> {
  let out = '';
  for (const family of FAMILIES) {
    const tool = toolFor(family, flavour, 'save');
    const res = await runTool([tool], opts).catch(() => undefined);
    if (res?.code === 0) out += res.stdout;
  }
  return out;
}

const ruleCount = (save: string): number => (save.match(/^-/gm) ?? []).length;

/**
 * Which flavour the node uses, decided as upstream's container image does: the flavour holding
 * kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain (mangle, either family; nft looked at
 * first), else the one with more rules, nft on a tie.
 */
export async function detectFlavour(opts: ExecOptions = {}): Promise<{ flavour: Flavour; reason: string }> {
  // `-S CHAIN` reads one chain; iptables-nft-save reads the whole ruleset (3 s at 10,000 services).
  if (await nftChainExists(opts, 'mangle', KUBELET_CHAIN_NAMES)) return { flavour: 'nft', reason: "kubelet's chains are in iptables-nft (mangle)" };
  // Without -t: asking legacy for one table would make the kernel create it.
  const legacy = await saveBoth('legacy', opts);
  if (KUBELET_CHAINS.test(onlyTables(legacy, ['mangle']))) {
    return { flavour: 'legacy', reason: "kubelet's chains are in iptables-legacy (mangle)" };
  }
  const legacyRules = ruleCount(legacy);
  // nft wins a tie: with no legacy rule at all there is nothing to count.
  const nftRules = legacyRules === 0 ? undefined : ruleCount(await saveBoth('nft', opts));
  if (nftRules !== undefined && legacyRules > nftRules) {
    return { flavour: 'legacy', reason: `no kubelet chains; iptables-legacy has more rules (${legacyRules} vs ${nftRules})` };
  }
  return { flavour: 'nft', reason: `no kubelet chains; iptables-legacy has ${legacyRules === 0 ? 'no rules' : `no more rules (${legacyRules} vs ${nftRules})`}` };
}

/** Whether one of `chains` exists in `table` of iptables-nft, in either family. */
async function nftChainExists(opts: ExecOptions, table: string, chains: readonly string[]): Promise<boolean> {
  for (const family of FAMILIES) {
    for (const chain of chains) {
      const res = await runTool([toolFor(family, 'nft', 'iptables'), WAIT_ARG, '-t', table, '-S', chain], opts).catch(() => undefined);
      if (res?.code === 0) return true;
    }
  }
  return false;
}
