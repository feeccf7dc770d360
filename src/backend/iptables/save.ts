// Reading `iptables-save` output. Pure.

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
  // A line at a time by searching, without an array of all lines: a 10,000-service save has
  // 440,000 of them.
  for (let start = 0; start < text.length; ) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end).trimEnd();
    start = end + 1;
    if (line.startsWith('*')) {
      current = { chains: new Map(), builtin: new Set() };
      tables.set(line.slice(1).trim(), current);
    } else if (!current || line === 'COMMIT') {
      continue;
    } else if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ');
      if (!name) continue;
      if (!current.chains.has(name)) current.chains.set(name, []);
      if (policy && policy !== '-') current.builtin.add(name);
    } else if (line.startsWith('-A ')) {
      const space = line.indexOf(' ', 3);
      const chain = space < 0 ? line.slice(3) : line.slice(3, space);
      const rule = space < 0 ? '' : line.slice(space + 1);
      const rules = current.chains.get(chain);
      if (rules) rules.push(rule);
      else current.chains.set(chain, [rule]);
    }
  }
  return tables;
}
