// Reading our table back from the kernel (`nft -j list table`) without holding the whole JSON
// document: at 10,000 services it is ~13 MiB of text and several times that parsed. The output
// is split as it arrives into the table's objects, and each set's elements one by one, so at
// most one set's elements are held at a time (and none once a consumer has taken them).
import { StringDecoder } from 'node:string_decoder';
import { stream, type ExecOptions } from '../../node/exec.js';
import type { NftFamily, NftRuleset, NftSet } from './layout.js';
import { TABLE } from './layout.js';

type Json = unknown;

export interface JsonSplitHandlers {
  /** An object of the `nftables` array, a set's or map's without its elements. */
  item(item: Record<string, Json>): void;
  /** A set or map whose elements follow: its object with an empty `elem`. */
  setStart(head: Record<string, Json>): void;
  /** One element of the set last started. */
  element(e: Json): void;
}

const OPEN_OBJ = 0x7b; // {
const CLOSE_OBJ = 0x7d; // }
const OPEN_ARR = 0x5b; // [
const CLOSE_ARR = 0x5d; // ]
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

// Depths: 1 the document, 2 its `nftables` array, 3 one object of it, 4 that object's `set` or
// `map`, 5 the set's `elem` array.
const ITEM = 3;
const ELEM = 5;

/**
 * Splits `{"nftables": [ … ]}` text fed in arbitrary pieces. Only a tracking of depth and strings:
 * every piece it cuts out goes through JSON.parse, which rejects anything malformed.
 */
export class NftJsonSplitter {
  private text = '';
  private pos = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** Start of the object being cut out (depth ITEM), -1 when none. */
  private itemStart = -1;
  /** Inside a set's elements: start of the next element; -1 otherwise. */
  private elemStart = -1;
  /** A set object's text before its elements, once they started. */
  private head: string | undefined;

  constructor(private readonly on: JsonSplitHandlers) {}

  push(piece: string): void {
    this.text += piece;
    const t = this.text;
    for (let i = this.pos; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN_OBJ || c === OPEN_ARR) {
        this.depth++;
        if (this.depth === ITEM) this.itemStart = i;
        else if (this.depth === ELEM && c === OPEN_ARR && this.itemStart >= 0 && this.startsElements(t, i)) {
          this.head = t.slice(this.itemStart, i + 1);
          this.on.setStart(JSON.parse(`${this.head}]}}`) as Record<string, Json>);
          this.elemStart = i + 1;
        }
      } else if (c === CLOSE_OBJ || c === CLOSE_ARR) {
        if (this.depth === ELEM && this.elemStart >= 0) {
          this.element(t, i);
          this.elemStart = -1;
          // The rest of the object is cut from here on, after the head.
          this.itemStart = i;
        } else if (this.depth === ITEM) {
          const rest = t.slice(this.itemStart, i + 1);
          const text = this.head !== undefined ? this.head + rest : rest;
          this.head = undefined;
          this.itemStart = -1;
          this.on.item(JSON.parse(text) as Record<string, Json>);
        }
        this.depth--;
        if (this.depth < 0) throw new Error('malformed nft JSON: unbalanced brackets');
      } else if (c === COMMA && this.depth === ELEM && this.elemStart >= 0) {
        this.element(t, i);
        this.elemStart = i + 1;
      }
    }
    // Keep only what a piece still being cut needs.
    const keep = this.elemStart >= 0 ? this.elemStart : this.itemStart >= 0 ? this.itemStart : t.length;
    this.text = t.slice(keep);
    this.pos = t.length - keep;
    if (this.elemStart >= 0) this.elemStart -= keep;
    if (this.itemStart >= 0) this.itemStart -= keep;
  }

  /** Throws unless the text fed so far was whole. */
  end(): void {
    if (this.depth !== 0 || this.inString) throw new Error('nft JSON output ended early');
  }

  private element(t: string, end: number): void {
    const text = t.slice(this.elemStart, end).trim();
    if (text !== '') this.on.element(JSON.parse(text));
  }

  /** The array opening at `i` is the `elem` of a set or map object. */
  private startsElements(t: string, i: number): boolean {
    return /"elem"\s*:\s*$/.test(t.slice(Math.max(this.itemStart, i - 16), i)) && /^\{\s*"(set|map)"/.test(t.slice(this.itemStart, this.itemStart + 16));
  }
}

export function jsonAtom(x: Json): string {
  if (typeof x === 'string' || typeof x === 'number') return String(x);
  if (x && typeof x === 'object') {
    const o = x as Record<string, Json>;
    if ('concat' in o && Array.isArray(o.concat)) return o.concat.map(jsonAtom).join(' . ');
    if ('prefix' in o) {
      const p = o.prefix as { addr: string; len: number };
      return `${p.addr}/${p.len}`;
    }
    if ('range' in o && Array.isArray(o.range)) return `${jsonAtom(o.range[0])}-${jsonAtom(o.range[1])}`;
    if ('elem' in o) return jsonAtom((o.elem as { val: Json }).val);
    for (const verdict of ['goto', 'jump']) {
      if (verdict in o) return `${verdict} ${(o[verdict] as { target: string }).target}`;
    }
    for (const verdict of ['drop', 'accept', 'return', 'continue']) if (verdict in o) return verdict;
  }
  throw new Error(`unexpected element in nft JSON: ${JSON.stringify(x)}`);
}

/** Our table as read back from the kernel: sets with their elements, chains without their rules. */
export interface ReadBack {
  ruleset: NftRuleset;
  /** Number of rules in each chain. */
  ruleCounts: Map<string, number>;
}

/** What becomes of a set's elements as they are read: none is kept in the set. */
export interface SetReading {
  element(key: string, value: string | undefined): void;
  /** The set's last element was read. */
  end(): void;
}

/**
 * Called with each set as soon as its head is read; the elements go to what it returns (else
 * into `set.elements`). It may replace `set.elements` (e.g. with what they are compared to).
 */
export type SetConsumer = (set: NftSet) => SetReading | undefined;

function setShell(item: Record<string, Json>): NftSet | undefined {
  const s = (item.set ?? item.map) as { name: string; flags?: string[] } | undefined;
  if (!s) return undefined;
  const set: NftSet = { name: s.name, kind: item.map ? 'map' : 'set', decl: '', elements: new Map() };
  if (s.flags?.includes('dynamic') || s.name.startsWith('affinity-')) set.dynamic = true;
  return set;
}

/** Parses `nft -j list table` output as it arrives into a ReadBack. */
export function readBackParser(family: NftFamily, consume?: SetConsumer): { push(piece: string): void; end(): ReadBack } {
  const rs: NftRuleset = { family, table: TABLE, sets: [], chains: [] };
  const ruleCounts = new Map<string, number>();
  let current: { set: NftSet; reading: SetReading | undefined } | undefined;
  const begin = (set: NftSet): { set: NftSet; reading: SetReading | undefined } => ({ set, reading: consume?.(set) });
  const add = (e: Json): void => {
    const [k, v] = Array.isArray(e) ? [jsonAtom(e[0]), jsonAtom(e[1])] : [jsonAtom(e), undefined];
    if (current!.reading) current!.reading.element(k, v);
    else current!.set.elements.set(k, v);
  };
  const splitter = new NftJsonSplitter({
    setStart: (head) => {
      const set = setShell(head);
      current = set && begin(set);
    },
    element: add,
    item: (item) => {
      if (!current) {
        const shell = setShell(item);
        if (shell) current = begin(shell);
      }
      if (current) {
        // A set printed with its elements inline (not split out) is read the same way.
        for (const e of ((item.set ?? item.map) as { elem?: Json[] }).elem ?? []) add(e);
        current.reading?.end();
        rs.sets.push(current.set);
        current = undefined;
      }
      const c = item.chain as { name: string } | undefined;
      if (c) {
        rs.chains.push({ name: c.name, rules: [] });
        if (!ruleCounts.has(c.name)) ruleCounts.set(c.name, 0);
      }
      const r = item.rule as { chain: string } | undefined;
      if (r) ruleCounts.set(r.chain, (ruleCounts.get(r.chain) ?? 0) + 1);
    },
  });
  return {
    push: (piece) => splitter.push(piece),
    end: () => {
      splitter.end();
      return { ruleset: rs, ruleCounts };
    },
  };
}

/**
 * Reads our table back from the kernel (`nft -j list table`), or undefined when it does not
 * exist. Set declarations and rule texts are not reconstructed (nft prints rules in its own
 * normal form, not the one we wrote); each chain's rules are counted. With `consume`, each set
 * is handed over as soon as its head is read.
 */
export async function readBack(family: NftFamily, opts: ExecOptions = {}, consume?: SetConsumer): Promise<ReadBack | undefined> {
  const parser = readBackParser(family, consume);
  const decoder = new StringDecoder('utf8');
  const res = await stream(['nft', '-j', 'list', 'table', family, TABLE], undefined, (d) => parser.push(decoder.write(d)), opts);
  if (res.code !== 0) {
    if (/No such file or directory/.test(res.stderr)) return undefined;
    throw new Error(`nft list table ${family} ${TABLE} failed: ${res.stderr.trim()}`);
  }
  parser.push(decoder.end());
  return parser.end();
}

/**
 * Reads our table back from the kernel, or undefined when it does not exist. Set declarations
 * and chain rules are not reconstructed: a sync treats every existing chain as changed and
 * every existing set as compatible.
 */
export async function readTable(family: NftFamily, opts: ExecOptions = {}): Promise<NftRuleset | undefined> {
  return (await readBack(family, opts))?.ruleset;
}
