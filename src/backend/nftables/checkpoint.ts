// A restart without reading the table back. Reading a 10,000-service table from the kernel costs
// nft seconds of CPU; a proxy that stops cleanly instead leaves what it last wrote in a file and
// a marker chain `checkpoint-<token>` in the table. The next start trusts the file only when the
// marker with the same token is in the kernel (one cheap `nft list chains`), uses the file as the
// kernel's content for its first diff, and removes the marker in that first transaction. The file
// is consumed at once, so a checkpoint is trusted at most once; the first verification after such
// a start reads the table back to catch what was changed while no proxy was watching.
import { takeCheckpointFile, writeCheckpointFile } from '../common/checkpoint-file.js';
import type { SetReading } from './readback.js';
import type { NftChain, NftRuleset, NftSet } from './layout.js';

// One line per value: a head, then each set's head followed by one line per element, then the
// chains. Read a line at a time, a 30,000-service checkpoint never exists as one string or one
// parsed tree (as a single JSON document it cost the starting proxy ~200 MiB at its peak).
// Heads and chains are JSON objects; an element is its key, a tab and its value (no tab without
// a value), or, when the text could be mistaken for another line, a JSON array as in format 2.
// Parsing 220,000 elements as JSON was most of a 10,000-service restart's reading. From format 4
// a set's head also gives its elements' count, digest and bytes: a reader whose set has the same
// count and digest skips them unread (comparing them was most of the reading in format 3).
const FORMAT = 4;
const READABLE_FORMATS = [2, 3, FORMAT];
export const MARKER_PREFIX = 'checkpoint-';

interface Head {
  format: number;
  token: string;
  family: NftRuleset['family'];
  table: string;
}

/** What a set's head says of its elements (format 4 on). */
export interface ElementsSummary {
  count: number;
  digest: string;
  /** Bytes of its element lines. */
  bytes: number;
}

type Line = ({ set: Omit<NftSet, 'elements'> } & Partial<ElementsSummary>) | { chain: NftChain };

// The two running hashes of the element being digested (no pair allocated per element).
const running = new Int32Array(2);

/** Mixes a text and then a separator no text holds into `running`. */
function mixText(text: string): void {
  let h1 = running[0]!;
  let h2 = running[1]!;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = (Math.imul(h2, 33) ^ c) | 0;
  }
  running[0] = Math.imul(h1 ^ 0x10000, 0x01000193);
  running[1] = (Math.imul(h2, 33) ^ 0x10000) | 0;
}

/**
 * A digest of a set's elements that does not depend on their order (a restarted proxy fills its
 * maps in another order than the one that stopped): two 32-bit hashes of each element, summed.
 */
export function elementsDigest(elements: ReadonlyMap<string, string | undefined>): string {
  let a = 0;
  let b = 0;
  for (const [k, v] of elements) {
    running[0] = 0x811c9dc5;
    running[1] = 5381;
    // The key, then for a map the value.
    mixText(k);
    if (v !== undefined) mixText(v);
    a = (a + (running[0]! >>> 0)) >>> 0;
    b = (b + (running[1]! >>> 0)) >>> 0;
  }
  return `${a.toString(16).padStart(8, '0')}${b.toString(16).padStart(8, '0')}`;
}

export interface Checkpoint {
  token: string;
  ruleset: NftRuleset;
}

export type ChainConsumer = (chain: NftChain) => NftChain;

/** Returned by a set consumer for a set whose elements, by their summary, are those it holds. */
export const SAME_ELEMENTS = Symbol('same elements');

/**
 * As a read-back's SetConsumer, with what the head says of the elements (absent before format
 * 4). SAME_ELEMENTS, given a summary, skips them unread; the set is then left with the elements
 * the consumer gave it.
 */
export type CheckpointSetConsumer = (set: NftSet, summary: ElementsSummary | undefined) => SetReading | undefined | typeof SAME_ELEMENTS;

function summaryOf(line: Partial<ElementsSummary>): ElementsSummary | undefined {
  const { count, digest, bytes } = line;
  return typeof count === 'number' && typeof digest === 'string' && typeof bytes === 'number' ? { count, digest, bytes } : undefined;
}

export const markerChain = (token: string): string => `${MARKER_PREFIX}${token}`;

/** Writes the checkpoint atomically, as it is produced (at 10,000 services, whole it cost 50 MiB). */
export function writeCheckpoint(path: string, cp: Checkpoint): void {
  writeCheckpointFile(path, checkpointLines(cp));
}

/** The checkpoint's lines, a piece at a time. */
function* checkpointLines(cp: Checkpoint): Generator<string> {
  const rs = cp.ruleset;
  const head: Head = { format: FORMAT, token: cp.token, family: rs.family, table: rs.table };
  yield `${JSON.stringify(head)}\n`;
  for (const set of rs.sets) {
    const decl: Omit<NftSet, 'elements'> = { name: set.name, kind: set.kind, decl: set.decl, ...(set.dynamic ? { dynamic: true } : {}) };
    if (set.dynamic) {
      yield `${JSON.stringify({ set: decl })}\n`;
      continue;
    }
    let bytes = 0;
    for (const [k, v] of set.elements) bytes += Buffer.byteLength(elementLine(k, v));
    const summary: ElementsSummary = { count: set.elements.size, digest: elementsDigest(set.elements), bytes };
    yield `${JSON.stringify({ set: decl, ...summary })}\n`;
    for (const [k, v] of set.elements) yield elementLine(k, v);
  }
  for (const chain of rs.chains) yield `${JSON.stringify({ chain })}\n`;
}

// A tab or line break inside, or a first character that opens JSON, would make the text ambiguous.
const NOT_PLAIN = /[\t\n\r]|^[[{]|^$/;

function elementLine(key: string, value: string | undefined): string {
  if (NOT_PLAIN.test(key) || (value !== undefined && /[\t\n\r]/.test(value))) return `${JSON.stringify(value === undefined ? [key] : [key, value])}\n`;
  return value === undefined ? `${key}\n` : `${key}\t${value}\n`;
}

/**
 * Reads and removes the checkpoint; undefined when there is none or it is unreadable (a start
 * then reads the kernel as usual). Each set is handed to `consume` as its head is read, which may
 * take its elements one at a time (see SetConsumer); each chain to `consumeChain`, whose return
 * value is kept instead (e.g. an equal chain already held).
 */
export function takeCheckpoint(path: string, consume?: CheckpointSetConsumer, consumeChain?: ChainConsumer): Checkpoint | { error: string } | undefined {
  return takeCheckpointFile(path, (lines) => {
    const first = lines.next();
    return readCheckpoint(first.done ? undefined : first.value, lines, consume, consumeChain);
  });
}

function readCheckpoint(
  first: string | undefined,
  lines: Iterator<string, void, number | undefined>,
  consume?: CheckpointSetConsumer,
  consumeChain?: ChainConsumer,
): Checkpoint | { error: string } {
  const head = first === undefined ? undefined : (JSON.parse(first) as Partial<Head>);
  if (!READABLE_FORMATS.includes(head?.format as number) || typeof head!.token !== 'string' || typeof head!.family !== 'string' || typeof head!.table !== 'string') {
    return { error: 'unknown checkpoint format' };
  }
  const ruleset: NftRuleset = { family: head!.family, table: head!.table, sets: [], chains: [] };
  let set: NftSet | undefined;
  let reading: SetReading | undefined;
  const setRead = (): void => {
    reading?.end();
    set = reading = undefined;
  };
  let skip: number | undefined;
  for (let next = lines.next(); !next.done; next = lines.next(skip)) {
    skip = undefined;
    const text = next.value;
    const open = text.charCodeAt(0);
    if (open !== 123 /* { */) {
      if (!set) return { error: 'unreadable checkpoint: an element outside a set' };
      let key: string;
      let value: string | undefined;
      if (open === 91 /* [ */) {
        [key, value] = JSON.parse(text) as [string] | [string, string];
      } else if (text === '') {
        return { error: 'unreadable checkpoint: an empty line' };
      } else {
        const tab = text.indexOf('\t');
        key = tab < 0 ? text : text.slice(0, tab);
        value = tab < 0 ? undefined : text.slice(tab + 1);
      }
      if (reading) reading.element(key, value);
      else set.elements.set(key, value);
      continue;
    }
    setRead();
    const line = JSON.parse(text) as Line;
    if ('set' in line) {
      set = { ...line.set, elements: new Map() };
      const summary = summaryOf(line);
      const took = consume?.(set, summary);
      ruleset.sets.push(set);
      if (took === SAME_ELEMENTS) {
        if (!summary) return { error: 'unreadable checkpoint: elements skipped without a summary' };
        skip = summary.bytes;
        set = undefined;
      } else {
        reading = took;
      }
    } else {
      ruleset.chains.push(consumeChain ? consumeChain(line.chain) : line.chain);
    }
  }
  setRead();
  return { token: head!.token, ruleset };
}
