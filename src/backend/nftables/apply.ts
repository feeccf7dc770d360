// Thin layer over the `nft` command: run scripts, list chains, delete tables (reading the table
// back is readback.ts).
import { helperFor, run, tryRun, type ExecOptions } from '../../node/exec.js';
import { ToolProcess, shellFor } from '../../node/tool-process.js';
import type { NftFamily } from './layout.js';
import { TABLE } from './layout.js';

export type { ExecOptions } from '../../node/exec.js';

export class NftError extends Error {
  constructor(
    message: string,
    /** nft's own error text. */
    readonly nftMessage: string,
    /** 1-based line of the script nft complained about, 0 when unknown. */
    readonly line: number,
    readonly lineText: string,
  ) {
    super(message);
    this.name = 'NftError';
  }
}

/**
 * A script as one line for nft's interactive mode, where each input line is one transaction:
 * commands joined with `;`, multi-line element blocks folded. Table blocks (full syncs) are not
 * folded: they go through `nft -f`. Also returns, per command, its first line in the script.
 */
export function foldScript(script: string): { line: string; commands: Array<{ start: number; end: number; scriptLine: number }> } | undefined {
  const cmds: Array<{ text: string; scriptLine: number }> = [];
  let open: { text: string; scriptLine: number } | undefined;
  const lines = script.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    if (open) {
      open.text += (line.startsWith(',') ? '' : ' ') + line;
      if (line === '}') {
        cmds.push(open);
        open = undefined;
      }
      continue;
    }
    if (/^(add|delete) element .*\{$/.test(line)) open = { text: line, scriptLine: i + 1 };
    else if (line.endsWith('{')) return undefined;
    else cmds.push({ text: line, scriptLine: i + 1 });
  }
  if (open || cmds.length === 0) return undefined;
  const commands: Array<{ start: number; end: number; scriptLine: number }> = [];
  let pos = 0;
  for (const c of cmds) {
    commands.push({ start: pos, end: pos + c.text.length, scriptLine: c.scriptLine });
    pos += c.text.length + 3;
  }
  return { line: cmds.map((c) => c.text).join(' ; '), commands };
}

/**
 * One long-lived `nft -i`. A new nft process per transaction costs ~15 ms on a large table:
 * start-up, and at exit the kernel makes the closing netlink socket wait for the RCU grace
 * period of the elements it just removed. The interactive process keeps its socket, so a small
 * transaction takes well under a millisecond. After each transaction line a marker command
 * that is bound to fail (listing a set of a table that never exists) tells where its output ends.
 */
class NftInteractive extends ToolProcess<string> {
  private errBuf = '';
  private seq = 0;
  /** The marker whose error block ends the transaction in flight. */
  private marker = '';

  constructor(wrap: string[]) {
    super(['nft', '-i'], wrap);
    this.child.stdout.resume();
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => {
      this.errBuf += d;
      this.settle();
    });
  }

  protected diedAnswer(): string {
    return `Error: nft -i exited\n${this.errBuf}`;
  }

  private settle(): void {
    if (!this.answering) return;
    // The marker's error block: the echoed command, then a caret line.
    const echoed = `${markerCommand(this.marker)}\n`;
    const at = this.errBuf.indexOf(echoed);
    if (at < 0) return;
    const caretEnd = this.errBuf.indexOf('\n', at + echoed.length);
    if (caretEnd < 0) return;
    const before = this.errBuf.slice(0, at).replace(/Error: [^\n]*\n$/, '');
    this.errBuf = this.errBuf.slice(caretEnd + 1);
    this.answer(before);
  }

  /** Runs one line (one transaction); resolves with nft's error output for it, empty when none. */
  run(line: string): Promise<string> {
    return this.request(
      () => {
        this.marker = `kpts-end-of-transaction-${this.seq++}`;
        this.child.stdin.write(`${line}\n${markerCommand(this.marker)}\n`);
      },
      // A kernel without the ip family (or a wedged nft) may never answer the marker.
      NFT_ANSWER_MS,
      () => `Error: nft -i did not answer within ${NFT_ANSWER_MS / 1000} s\n${this.errBuf}`,
    );
  }
}

/**
 * Lists a set of a table that never exists. Unlike `list table`, it needs no chains or rules: at
 * 20,000 chains a `list table` marker cost ~21 ms, this one 0.1 ms.
 */
const markerCommand = (marker: string): string => `list set ip ${marker} end`;

/** How long one small transaction through `nft -i` may take before the session is replaced. */
const NFT_ANSWER_MS = 15_000;

const sessions = new Map<string, NftInteractive>();
const sessionFor = (opts: ExecOptions): NftInteractive => helperFor(sessions, opts, (wrap) => new NftInteractive(wrap));

function rejected(script: string, nftMessage: string, line: number): NftError {
  const lineText = line > 0 ? (script.split('\n')[line - 1] ?? '') : '';
  return new NftError(
    `nft rejected the transaction: ${nftMessage}${line ? ` (line ${line}: ${lineText.trim()})` : ''}`,
    nftMessage,
    line,
    lineText,
  );
}

/**
 * One transaction's text: whole, or produced in pieces (a whole table: written to nft's input
 * file piece by piece, never held as one text).
 */
export type NftScript = string | { parts(): Iterable<string> };

/** Above this, nft's line editor costs more than a process start: such scripts use `nft -f`. */
const INTERACTIVE_MAX_BYTES = 64 * 1024;

/**
 * Runs one script as one transaction; `check` only validates (`nft -c`). Small scripts made of
 * single commands and element blocks (partial syncs) go through the interactive session; table
 * blocks and large chunks (full syncs) through `nft -f`.
 */
export async function applyScript(script: NftScript, opts: ExecOptions & { check?: boolean } = {}): Promise<void> {
  if (typeof script !== 'string') {
    const res = await shellFor(opts).run(['nft', ...(opts.check ? ['-c'] : []), '-f'], script.parts());
    if (res.code === 0) return;
    return fileRejected(script, res);
  }
  const folded = opts.check || script.length > INTERACTIVE_MAX_BYTES ? undefined : foldScript(script);
  if (folded) {
    const stderr = await sessionFor(opts).run(folded.line);
    const m = /Error: ([^\n]*)\n[^\n]*\n( *)[~^]/.exec(stderr) ?? /Error: ([^\n]*)/.exec(stderr);
    if (!m) return;
    const col = m[2] !== undefined ? m[2].length : -1;
    const cmd = folded.commands.find((c) => col >= c.start && col <= c.end);
    throw rejected(script, m[1]!, cmd ? cmd.scriptLine : 0);
  }
  const res = await shellFor(opts).run(['nft', ...(opts.check ? ['-c'] : []), '-f'], script);
  if (res.code === 0) return;
  fileRejected(script, res);
}

/**
 * Runs scripts that do not depend on each other as one `nft -f` each, all at once: separate
 * transactions whose parsing, most of nft's time on a large load, runs on as many cores.
 * Throws the first refusal once every one has ended.
 */
export async function applyScriptsTogether(scripts: NftScript[], opts: ExecOptions = {}): Promise<void> {
  if (scripts.length === 1) return applyScript(scripts[0]!, opts);
  const results = await shellFor(opts).runTogether(
    ['nft', '-f'],
    scripts.map((s) => (typeof s === 'string' ? s : s.parts())),
  );
  const refused = results.findIndex((r) => r.code !== 0);
  if (refused < 0) return;
  fileRejected(scripts[refused]!, results[refused]!);
}

/** Throws the NftError of a refused `nft -f`. Only a refused script is held whole, to quote the line nft names. */
function fileRejected(script: NftScript, res: { code: number; stderr: string }): never {
  const stderr = res.stderr.trim();
  const m = /^[^\n:]+:(\d+):[\d-]+: Error: ([^\n]*)/m.exec(stderr);
  const text = typeof script === 'string' ? script : [...script.parts()].join('');
  throw rejected(text, m ? m[2]! : stderr || `nft exited with ${res.code}`, m ? Number(m[1]) : 0);
}

/**
 * The names of our table's chains, without their rules: cheap at any table size (listing
 * anything with sets makes nft fetch every element). Empty when the table is absent.
 */
export async function listChainNames(family: NftFamily, opts: ExecOptions = {}): Promise<string[]> {
  const res = await run(['nft', 'list', 'chains', family], undefined, opts);
  if (res.code !== 0) throw new Error(`nft list chains ${family} failed: ${res.stderr.trim()}`);
  const names: string[] = [];
  let ours = false;
  for (const line of res.stdout.split('\n')) {
    const table = /^table (\S+) (\S+) \{/.exec(line);
    if (table) ours = table[1] === family && table[2] === TABLE;
    const chain = /^\tchain (\S+) \{/.exec(line);
    if (ours && chain) names.push(chain[1]!);
  }
  return names;
}

/** Plain-text listing of our table, '' when absent. */
export async function listTable(family: NftFamily, opts: ExecOptions = {}): Promise<string> {
  const res = await run(['nft', 'list', 'table', family, TABLE], undefined, opts);
  return res.code === 0 ? res.stdout : '';
}

/**
 * The families that have our table. `nft list flowtables` prints every table's head, and fetches
 * neither set elements (`nft list tables` does: seconds at 10,000 services) nor chains (`nft list
 * chains`: ~1 s beside the 110,000 chains of a 10,000-service iptables-nft ruleset).
 */
export async function ourTableFamilies(opts: ExecOptions = {}): Promise<NftFamily[]> {
  const listed = await tryRun(['nft', 'list', 'flowtables'], undefined, opts);
  if (listed?.code !== 0) return [];
  return (['ip', 'ip6'] as const).filter((f) => new RegExp(`^table ${f} ${TABLE} \\{$`, 'm').test(listed.stdout));
}

/** Deletes our tables in both families (absent tables are fine). */
export async function deleteTables(opts: ExecOptions = {}): Promise<void> {
  // Only the tables that exist: a kernel whose nf_tables lacks a family (or nft itself missing)
  // has none of ours, and nothing there should wait on it.
  for (const family of await ourTableFamilies(opts)) await applyScript(`delete table ${family} ${TABLE}\n`, opts);
}
