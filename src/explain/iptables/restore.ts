// iptables-restore input (the text iptables-save prints) read into tables and chains, as the
// kernel would hold them after restoring into empty tables. Rules stay text here; their
// grammar is read when a trace reaches them (rule.ts), so a rule nothing reaches cannot
// stop a trace.
import { IptParseError, tokenize } from './rule.js';

export type IptTableName = 'raw' | 'mangle' | 'nat' | 'filter' | 'security';

/** The built-in chains of each table. */
export const BUILTIN_CHAINS: Readonly<Record<IptTableName, readonly string[]>> = {
  raw: ['PREROUTING', 'OUTPUT'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  security: ['INPUT', 'FORWARD', 'OUTPUT'],
};

export interface RestoreChain {
  name: string;
  builtin: boolean;
  /** Built-in chains only. */
  policy?: 'ACCEPT' | 'DROP';
  /** Rule specifications: what follows `-A CHAIN`, as written. */
  rules: string[];
}

export interface RestoreTable {
  name: IptTableName;
  chains: Map<string, RestoreChain>;
}

export type RestoreInput = Map<IptTableName, RestoreTable>;

function isTableName(t: string): t is IptTableName {
  return t in BUILTIN_CHAINS;
}

function emptyTable(name: IptTableName): RestoreTable {
  const chains = new Map<string, RestoreChain>();
  for (const c of BUILTIN_CHAINS[name]) chains.set(c, { name: c, builtin: true, policy: 'ACCEPT', rules: [] });
  return { name, chains };
}

/**
 * Reads restore input. Understands table blocks (`*nat` … `COMMIT`), chain lines
 * (`:NAME POLICY [p:b]`), `-A`, `-I`, `-D`, `-N`, `-X`, `-F`, optional `[p:b]` counters and
 * `#` comments. Throws IptParseError naming the line.
 */
export function parseRestoreInput(text: string): RestoreInput {
  const tables: RestoreInput = new Map();
  let cur: RestoreTable | undefined;
  const lines = text.split('\n');
  lines.forEach((raw, idx) => {
    const line = raw.trim();
    const fail = (msg: string): never => {
      throw new IptParseError(`line ${idx + 1} "${line}": ${msg}`);
    };
    if (line === '' || line.startsWith('#')) return;
    if (line.startsWith('*')) {
      if (cur) fail(`table ${cur.name} has no COMMIT`);
      const name = line.slice(1);
      if (!isTableName(name)) fail(`unknown table '${name}'`);
      cur = tables.get(name as IptTableName) ?? emptyTable(name as IptTableName);
      tables.set(cur.name, cur);
      return;
    }
    if (!cur) return fail('outside a table block');
    const table = cur;
    if (line === 'COMMIT') {
      cur = undefined;
      return;
    }
    const chainOf = (name: string | undefined): RestoreChain => {
      const c = name === undefined ? undefined : table.chains.get(name);
      if (!c) return fail(`no chain '${name ?? ''}' in table ${table.name}`);
      return c;
    };
    if (line.startsWith(':')) {
      const m = /^:(\S+)\s+(\S+)(?:\s+\[\d+:\d+\])?$/.exec(line);
      if (!m) return fail('bad chain line');
      const [, name, policy] = m as unknown as [string, string, string];
      const existing = table.chains.get(name);
      if (existing?.builtin) {
        if (policy !== 'ACCEPT' && policy !== 'DROP') fail(`bad policy '${policy}' for built-in chain ${name}`);
        existing.policy = policy as 'ACCEPT' | 'DROP';
        return;
      }
      if (policy !== '-') fail(`user chain ${name} cannot have policy '${policy}'`);
      // Declaring a chain creates it, or flushes it when it exists (restore --noflush semantics).
      table.chains.set(name, { name, builtin: false, rules: [] });
      return;
    }
    let words: ReturnType<typeof tokenize> = [];
    try {
      words = tokenize(line);
    } catch (e) {
      if (e instanceof IptParseError) fail(e.message);
      throw e;
    }
    if (/^\[\d+:\d+\]$/.test(words[0]?.text ?? '')) words = words.slice(1);
    const cmd = words[0]?.text;
    const rest = (from: number): string => (words[from] ? line.slice(words[from]!.start) : '');
    switch (cmd) {
      case '-A': case '--append':
        chainOf(words[1]?.text).rules.push(rest(2));
        return;
      case '-I': case '--insert': {
        const c = chainOf(words[1]?.text);
        const hasPos = /^\d+$/.test(words[2]?.text ?? '');
        const pos = hasPos ? Number(words[2]!.text) : 1;
        if (pos < 1 || pos > c.rules.length + 1) fail(`no position ${pos} in chain ${c.name}`);
        c.rules.splice(pos - 1, 0, rest(hasPos ? 3 : 2));
        return;
      }
      case '-D': case '--delete': {
        const c = chainOf(words[1]?.text);
        const spec = rest(2);
        const at = /^\d+$/.test(spec) ? Number(spec) - 1 : c.rules.findIndex((r) => sameRule(r, spec));
        if (at < 0 || at >= c.rules.length) fail(`no such rule in chain ${c.name}`);
        c.rules.splice(at, 1);
        return;
      }
      case '-N': case '--new-chain': {
        const name = words[1]?.text;
        if (!name || words.length > 2) fail('-N needs one chain name');
        if (table.chains.has(name!)) fail(`chain ${name} already exists`);
        table.chains.set(name!, { name: name!, builtin: false, rules: [] });
        return;
      }
      case '-F': case '--flush':
        if (words.length > 2) fail('-F takes at most one chain');
        for (const c of words[1] ? [chainOf(words[1].text)] : table.chains.values()) c.rules = [];
        return;
      case '-X': case '--delete-chain': {
        if (words.length > 2) fail('-X takes at most one chain');
        const victims = words[1] ? [chainOf(words[1].text)] : [...table.chains.values()].filter((c) => !c.builtin);
        for (const v of victims) {
          if (v.builtin) fail(`cannot delete built-in chain ${v.name}`);
          table.chains.delete(v.name);
        }
        return;
      }
    }
    fail(`unsupported command '${cmd ?? ''}'`);
  });
  if (cur) throw new IptParseError(`table ${(cur as RestoreTable).name} has no COMMIT`);
  return tables;
}

/** Rules are deleted by their words, however they were spaced or quoted. */
function sameRule(a: string, b: string): boolean {
  const wa = tokenize(a).map((t) => t.text);
  const wb = tokenize(b).map((t) => t.text);
  return wa.length === wb.length && wa.every((w, i) => w === wb[i]);
}
