// A whole ruleset as `nft -f` text (pure): one transaction replacing the table, a new table in
// parts that may be sent together, and the human-readable listing of dry-run and describe.
import { gathered } from '../../node/pieces.js';
import { chainHeader, elementText, isDispatchSet, orderChains, setOrder, type NftChain, type NftRuleset } from './layout.js';

/** The chains as `chain x { … }` blocks inside a table block, referenced chains first. */
function chainBlocks(chains: NftChain[]): string[] {
  const out: string[] = [];
  for (const c of orderChains(chains)) {
    out.push(`\tchain ${c.name} {`);
    const h = chainHeader(c);
    if (h) out.push(`\t\t${h}`);
    for (const r of c.rules) out.push(`\t\t${r}`);
    out.push('\t}');
  }
  return out;
}

/**
 * One atomic transaction replacing the whole table: `add table` + `delete table` (so it also
 * works when the table is absent), the table's sets and chains, then the elements, data first.
 * Produced in pieces of about 256 KiB, so a large table is never held as one text (see `toNftScript`).
 */
export function nftScriptParts(rs: NftRuleset): Generator<string> {
  return gathered(wholeTableLines(rs));
}

function* wholeTableLines(rs: NftRuleset): Generator<string> {
  yield* tableBlockLines(rs);
  yield* elementLines(rs, () => true, 0, 1);
}

/**
 * A new table in 1 + 2 × `parts` transactions, for a table that is not in the kernel: its
 * structure first (sets and chains, no elements), then the data elements in `parts` scripts
 * that may be sent together, then likewise the elements that make tuples live, so a Service
 * answers only once its endpoints are in. nft's parsing, most of a large load, then runs on
 * as many cores.
 */
export function newTableSteps(rs: NftRuleset, parts: number): { structure: () => Generator<string>; data: Array<() => Generator<string>>; dispatch: Array<() => Generator<string>> } {
  // A part with no element would be an empty script: no transaction at all.
  const split = (which: (set: string) => boolean): Array<() => Generator<string>> =>
    Array.from({ length: parts }, (_, part) => part)
      .filter((part) =>
        rs.sets.some((s) => {
          const { from, to } = shareOf(s.elements.size, part, parts);
          return !s.dynamic && which(s.name) && to > from;
        }),
      )
      .map((part) => () => gathered(elementLines(rs, which, part, parts)));
  return {
    structure: () => gathered(tableBlockLines(rs)),
    data: split((set) => !isDispatchSet(set)),
    dispatch: split(isDispatchSet),
  };
}

function* tableBlockLines(rs: NftRuleset): Generator<string> {
  yield `add table ${rs.family} ${rs.table}\ndelete table ${rs.family} ${rs.table}\ntable ${rs.family} ${rs.table} {\n`;
  for (const s of rs.sets) yield `\t${s.kind} ${s.name} { ${s.decl}; }\n`;
  for (const l of chainBlocks(rs.chains)) yield `${l}\n`;
  yield '}\n';
}

/** Element indexes [from, to) of share `part` of `parts` of a set of `size` elements. */
function shareOf(size: number, part: number, parts: number): { from: number; to: number } {
  return { from: Math.floor((size * part) / parts), to: Math.floor((size * (part + 1)) / parts) };
}

/** `add element` blocks of the sets `which` takes, data first; of each set, share `part` of `parts` (contiguous). */
function* elementLines(rs: NftRuleset, which: (set: string) => boolean, part: number, parts: number): Generator<string> {
  for (const s of [...rs.sets].sort((a, b) => setOrder(a.name) - setOrder(b.name))) {
    if (s.dynamic || s.elements.size === 0 || !which(s.name)) continue;
    const { from, to } = shareOf(s.elements.size, part, parts);
    if (from === to) continue;
    yield `add element ${rs.family} ${rs.table} ${s.name} {\n`;
    let i = 0;
    for (const [k, v] of s.elements) {
      if (i >= to) break;
      if (i >= from) yield `${i === from ? '\t' : '\t,'}${elementText(k, v)}\n`;
      i++;
    }
    yield '}\n';
  }
}

/** The whole-table transaction as one text. */
export function toNftScript(rs: NftRuleset): string {
  return [...nftScriptParts(rs)].join('');
}

/** Human-readable listing (dry-run, describe): the table block with elements inline. */
export function describeRuleset(rs: NftRuleset): string {
  const out: string[] = [`table ${rs.family} ${rs.table} {`];
  for (const s of rs.sets) {
    out.push(`\t${s.kind} ${s.name} {`, `\t\t${s.decl.split('; ').join('\n\t\t')}`);
    if (!s.dynamic && s.elements.size > 0) {
      const els = [...s.elements].map(([k, v]) => elementText(k, v));
      out.push(`\t\telements = { ${els.join(',\n\t\t\t     ')} }`);
    }
    out.push('\t}');
  }
  out.push(...chainBlocks(rs.chains));
  out.push('}');
  return out.join('\n') + '\n';
}

