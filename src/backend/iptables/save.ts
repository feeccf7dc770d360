// Reading `iptables-save` output. Pure.
import { textDigest } from '../common/hash.js';
import { flat } from '../common/fragment.js';
import { isServicePortChain } from './names.js';

/** One table of a save: chain name → its rules, each as the text after `-A <chain> `, in order. */
export interface SavedTable {
  chains: Map<string, string[]>;
  /** Built-in chains (those with a policy), e.g. PREROUTING. */
  builtin: Set<string>;
}

/** Table name → its chains, in the order the save lists them. */
export type SavedTables = Map<string, SavedTable>;

/**
 * Parses iptables-save output (any flavour). Comments and counters are ignored; rules of a chain
 * the save did not declare are kept under that name all the same.
 */
export function parseSave(text: string): SavedTables {
  const tables: SavedTables = new Map();
  let current: SavedTable | undefined;
  forEachLine(text, (raw) => {
    const l = readLine(raw);
    if (l?.kind === 'table') {
      current = { chains: new Map(), builtin: new Set() };
      tables.set(l.name, current);
    } else if (!current || !l || l.kind === 'commit') {
      return;
    } else if (l.kind === 'chain') {
      if (!current.chains.has(l.name)) current.chains.set(l.name, []);
      if (l.builtin) current.builtin.add(l.name);
    } else {
      const rules = current.chains.get(l.chain);
      if (rules) rules.push(l.rule);
      else current.chains.set(l.chain, [l.rule]);
    }
  });
  return tables;
}

/** What one line of a save says; undefined for comments and anything else. */
type SaveLine =
  | { kind: 'table'; name: string }
  | { kind: 'commit' }
  | { kind: 'chain'; name: string; builtin: boolean }
  | { kind: 'rule'; chain: string; rule: string };

function readLine(raw: string): SaveLine | undefined {
  const line = raw.trimEnd();
  if (line.startsWith('*')) return { kind: 'table', name: line.slice(1).trim() };
  if (line === 'COMMIT') return { kind: 'commit' };
  if (line.startsWith(':')) {
    const [name, policy] = line.slice(1).split(' ');
    return name ? { kind: 'chain', name, builtin: !!policy && policy !== '-' } : undefined;
  }
  if (!line.startsWith('-A ')) return undefined;
  const space = line.indexOf(' ', 3);
  return space < 0 ? { kind: 'rule', chain: line.slice(3), rule: '' } : { kind: 'rule', chain: line.slice(3, space), rule: line.slice(space + 1) };
}

/** Each line of `text`, found by searching: no array of all lines (a 10,000-service save has 440,000). */
export function forEachLine(text: string, onLine: (line: string) => void): void {
  for (let start = 0; start < text.length; ) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    onLine(text.slice(start, end));
    start = end + 1;
  }
}

/** The tables the iptables mode writes to. */
export const IPTABLES_MODE_TABLES: readonly string[] = ['nat', 'filter', 'mangle'];

/**
 * The chains a comparison with the kernel keeps whole (`table/chain`): all but those a service
 * port owns, which are many (110,000 at 10,000 services × 10 endpoints) and compared by digest.
 */
export function keptWhole(id: string): boolean {
  const slash = id.indexOf('/');
  return !isServicePortChain(id.slice(0, slash), id.slice(slash + 1));
}

/** Passes on the lines of the given tables only (a `*table` line starts a table's block). */
export function linesOfTables(tables: readonly string[], onLine: (line: string) => void): (line: string) => void {
  let wanted = false;
  return (line) => {
    if (line.startsWith('*')) wanted = tables.includes(line.slice(1).trim());
    if (wanted) onLine(line);
  };
}

/** One chain of a save as read, with the rules that followed its other rules' lines. */
export interface SavedChain {
  table: string;
  name: string;
  rules: string[];
  builtin: boolean;
}

/**
 * Reads iptables-save output a line at a time and hands out each chain once its rules are
 * complete, so that a 34 MB save need not be held whole, nor its 440,000 rules at once. A chain
 * whose rules come in several runs (iptables-save prints a chain's rules together, so this is not
 * expected) is handed out once per run: the consumer, which knows what it has seen, decides.
 */
export class SaveReader {
  private table: string | undefined;
  /**
   * Chains declared whose rules have not come yet. Nothing else is kept of the names: a chain
   * name is a slice of its line, so keeping every name seen would keep a line per chain alive to
   * the end of the table (~29 MiB at 10,000 services × 10 endpoints).
   */
  private waiting = new Set<string>();
  /** The built-in chains (a handful per table). */
  private builtin = new Set<string>();
  private current: { name: string; rules: string[] } | undefined;

  constructor(private readonly onChain: (c: SavedChain) => void) {}

  line(raw: string): void {
    const l = readLine(raw);
    if (l?.kind === 'table') {
      this.endTable();
      this.table = l.name;
    } else if (this.table === undefined || !l) {
      return;
    } else if (l.kind === 'commit') {
      this.endTable();
    } else if (l.kind === 'chain') {
      this.waiting.add(l.name);
      if (l.builtin) this.builtin.add(l.name);
    } else {
      if (this.current?.name !== l.chain) {
        this.endChain();
        this.current = { name: l.chain, rules: [] };
      }
      this.current.rules.push(l.rule);
    }
  }

  /** The end of the output: a table left open is ended as if committed. */
  end(): void {
    this.endTable();
  }

  private endChain(): void {
    const c = this.current;
    if (!c) return;
    this.current = undefined;
    this.waiting.delete(c.name);
    this.onChain({ table: this.table!, name: c.name, rules: c.rules, builtin: this.builtin.has(c.name) });
  }

  private endTable(): void {
    this.endChain();
    if (this.table !== undefined) {
      for (const name of this.waiting) this.onChain({ table: this.table, name, rules: [], builtin: this.builtin.has(name) });
    }
    this.table = undefined;
    this.waiting = new Set();
    this.builtin = new Set();
  }
}

/**
 * The chains of a save as a restart compares its render with them: built-in chains and those
 * `whole` picks with their rules, every other chain as a digest of its rules. A 10,000-service
 * save is 34 MB, and its parse held 440,000 strings and their source; the digests of its 30,000
 * chains take ~3 MB.
 */
export interface KernelChains {
  /** `table/chain` → rules, for the chains kept whole. */
  whole: Map<string, string[]>;
  /** `table/chain` → rulesDigest(rules), for the others. */
  digests: Map<string, number>;
  /** `table/chain` of the built-in chains. */
  builtin: Set<string>;
  /**
   * From a checkpoint: the service ports whose chains it holds, by key, each with the digest of
   * what its chains were rendered from (renderInputsDigest), under a context (contextDigest).
   */
  rendered?: { context: number; inputs: Map<string, number> };
}

/**
 * A chain's rules, in order, as a number (textDigest): all 110,000 chains of a restart at 10,000
 * services pass for unchanged when one changed with odds of about 1 in 4 × 10^10.
 */
export function rulesDigest(rules: readonly string[]): number {
  // One-shot hash of the joined text: a hash object per chain, fed rule by rule, cost 2.5× as
  // much over the 110,000 chains of 10,000 services. The count tells [] from [''].
  return textDigest(`${rules.length}\n${rules.join('\n')}`);
}

/** Never a digest: a chain whose rules came in several runs equals no rendering. */
const UNTRUSTED = -1;

/** Builds KernelChains from save lines fed to `line`; `done` ends the output and returns them. */
export function kernelChainsReader(whole: (id: string) => boolean): { line(line: string): void; done(): KernelChains } {
  const k: KernelChains = { whole: new Map(), digests: new Map(), builtin: new Set() };
  const reader = new SaveReader((c) => {
    // Flat: built of slices of the save's lines, a kept id would keep its whole line.
    const id = flat(`${c.table}/${c.name}`);
    if (c.builtin) k.builtin.add(id);
    if (c.builtin || whole(id)) k.whole.set(id, [...(k.whole.get(id) ?? []), ...c.rules]);
    else k.digests.set(id, k.digests.has(id) ? UNTRUSTED : rulesDigest(c.rules));
  });
  return {
    line: (l) => reader.line(l),
    done: () => {
      reader.end();
      return k;
    },
  };
}

/**
 * The built-in chains of KernelChains, as parseSave would give them; undefined when it has none
 * (a checkpoint holds only our chains; a node without tables has none to read): the caller lists
 * them.
 */
export function builtinTables(k: KernelChains): SavedTables | undefined {
  if (k.builtin.size === 0) return undefined;
  const out: SavedTables = new Map();
  for (const id of k.builtin) {
    const slash = id.indexOf('/');
    const table = id.slice(0, slash);
    let t = out.get(table);
    if (!t) out.set(table, (t = { chains: new Map(), builtin: new Set() }));
    t.chains.set(id.slice(slash + 1), k.whole.get(id) ?? []);
    t.builtin.add(id.slice(slash + 1));
  }
  return out;
}
