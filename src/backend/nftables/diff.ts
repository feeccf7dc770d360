// Element-level differences between two rulesets, their safe ordering, and chunking into
// `nft -f` transactions. Pure.
import { sameStrings } from '../../model/service.js';
import {
  SET_ORDER,
  TABLE,
  chainHeader,
  isDispatchSet,
  setOrder,
  chainRefs,
  elementText,
  type NftChain,
  type NftFamily,
  type NftRuleset,
  type NftSet,
} from './layout.js';

export type NftOp =
  | { kind: 'add-set'; set: NftSet }
  | { kind: 'delete-set'; name: string; setKind: 'set' | 'map' }
  | { kind: 'add-chain'; chain: NftChain }
  /**
   * Flush and refill an existing chain; `late`: after the element operations (a dispatch rule
   * going away stays until the elements it serves have moved elsewhere).
   */
  | { kind: 'replace-chain'; chain: NftChain; late?: boolean }
  | { kind: 'delete-chain'; name: string }
  | { kind: 'add-element'; set: string; key: string; value?: string }
  /** Same key, new value: delete and add within one transaction. */
  | { kind: 'replace-element'; set: string; key: string; value?: string }
  | { kind: 'delete-element'; set: string; key: string };

export interface DiffOptions {
  /** Chains whose rules are unknown (read back from the kernel): replace every kept chain. */
  replaceAllChains?: boolean;
}

/** Operations turning `prev` into `next`, in safe order (see orderOps). */
export function diff(prev: NftRuleset, next: NftRuleset, opts: DiffOptions = {}): NftOp[] {
  const ops: NftOp[] = [];
  const prevSets = new Map(prev.sets.map((s) => [s.name, s]));
  const nextSets = new Map(next.sets.map((s) => [s.name, s]));
  for (const s of next.sets) {
    const p = prevSets.get(s.name);
    if (!p) ops.push({ kind: 'add-set', set: s });
    // The same map: elements already compared as they were read (see ElementComparer).
    if (!s.dynamic && p?.elements !== s.elements) diffElements(p?.elements ?? new Map<string, string | undefined>(), s, ops);
  }
  for (const p of prev.sets) if (!nextSets.has(p.name)) ops.push({ kind: 'delete-set', name: p.name, setKind: p.kind });
  const prevChains = new Map(prev.chains.map((c) => [c.name, c]));
  const nextChains = new Map(next.chains.map((c) => [c.name, c]));
  for (const c of next.chains) {
    const p = prevChains.get(c.name);
    if (!p) ops.push({ kind: 'add-chain', chain: c });
    else if (opts.replaceAllChains || !sameRules(p, c)) ops.push({ kind: 'replace-chain', chain: c });
  }
  for (const p of prev.chains) if (!nextChains.has(p.name)) ops.push({ kind: 'delete-chain', name: p.name });
  return orderOps(ops, (n) => nextChains.get(n) ?? prevChains.get(n));
}

/** Number of operations `diff` yields from an empty table to `rs`, without building them. */
export function opCountFromScratch(rs: NftRuleset): number {
  let n = rs.sets.length + rs.chains.length;
  for (const s of rs.sets) if (!s.dynamic) n += s.elements.size;
  return n;
}

/** Appends the element operations turning `before` into the elements of `next` (unordered). */
export function diffElements(before: ReadonlyMap<string, string | undefined>, next: NftSet, ops: NftOp[]): void {
  const compare = new ElementComparer(next, ops);
  for (const [k, v] of before) compare.element(k, v);
  compare.end();
}

/**
 * diffElements for elements that arrive one at a time (read from a file or from nft), without
 * holding them: only the keys that `next` also has are kept until `end`, and only when some of
 * `next`'s keys never came are they looked for. Each key comes once, as a set lists it once.
 */
export class ElementComparer {
  private readonly found: string[] = [];

  constructor(
    private readonly next: NftSet,
    private readonly ops: NftOp[],
  ) {}

  element(key: string, value: string | undefined): void {
    const want = this.next.elements;
    if (!want.has(key)) {
      this.ops.push({ kind: 'delete-element', set: this.next.name, key });
      return;
    }
    this.found.push(key);
    const v = want.get(key);
    if (v !== value) this.ops.push({ kind: 'replace-element', set: this.next.name, key, value: v });
  }

  /** The set's elements are all read: the ones it lacks are added. */
  end(): void {
    const want = this.next.elements;
    if (this.found.length === want.size) return;
    const found = new Set(this.found);
    for (const [k, v] of want) if (!found.has(k)) this.ops.push({ kind: 'add-element', set: this.next.name, key: k, value: v });
  }
}

/** Whether two chains have the same header and rules. */
export function sameRules(a: NftChain, b: NftChain): boolean {
  return sameStrings(a.rules, b.rules) && chainHeader(a) === chainHeader(b);
}

/** setOrder, with sets it does not rank (the affinity set, leftovers of an older layout) after every other set. */
function setRank(name: string): number {
  const i = setOrder(name);
  return i >= 0 ? i : SET_ORDER.length + 1;
}

/**
 * Orders operations so that every intermediate state (each transaction of a chunked sync) is
 * consistent: sets and chains exist before anything refers to them; endpoint data is added
 * before the verdict element that makes a tuple live and deleted after it is gone; firewall
 * allow-lists go in before and out after their firewall-ips element; chains and sets are
 * deleted only once nothing points at them.
 */
export function orderOps(ops: NftOp[], lookupChain: (name: string) => NftChain | undefined): NftOp[] {
  const height = new Map<string, number>();
  const h = (name: string, depth = 0): number => {
    const known = height.get(name);
    if (known !== undefined) return known;
    const c = lookupChain(name);
    let v = 0;
    if (c && depth < 64) for (const r of chainRefs(c)) v = Math.max(v, 1 + h(r, depth + 1));
    height.set(name, v);
    return v;
  };
  const phase = (op: NftOp): number => {
    switch (op.kind) {
      case 'add-set':
        return 0;
      case 'add-chain':
        return 1;
      case 'replace-chain':
        return op.late ? 5.5 : 2;
      case 'add-element':
      case 'replace-element':
        return isDispatchSet(op.set) ? 4 : 3;
      case 'delete-element':
        return isDispatchSet(op.set) ? 4 : 5;
      case 'delete-chain':
        return 6;
      case 'delete-set':
        return 7;
    }
  };
  const within = (op: NftOp): number => {
    switch (op.kind) {
      case 'add-chain':
      case 'replace-chain':
        return h(op.chain.name);
      case 'delete-chain':
        return -h(op.name);
      case 'add-element':
      case 'replace-element':
        return setRank(op.set) * 3 + (op.kind === 'add-element' ? 0 : 1);
      case 'delete-element':
        // Data deletions run in reverse set order (firewall-ips before firewall-allow).
        return isDispatchSet(op.set) ? setRank(op.set) * 3 + 2 : -setRank(op.set);
      default:
        return 0;
    }
  };
  return ops
    .map((op, i) => ({ op, i, p: phase(op), w: within(op) }))
    .sort((a, b) => a.p - b.p || a.w - b.w || a.i - b.i)
    .map((x) => x.op);
}

/** Operations counted against the element budget of one transaction. */
export function opCost(op: NftOp): number {
  switch (op.kind) {
    case 'add-chain':
    case 'replace-chain':
      return 1 + op.chain.rules.length;
    case 'replace-element':
      return 2;
    default:
      return 1;
  }
}

export interface ScriptTarget {
  family: NftFamily;
  table: string;
}

/**
 * Splits ordered operations into `nft -f` scripts of at most `budget` elements/rules each (an
 * operation larger than the budget gets a script of its own), preserving order. Consecutive
 * element operations on one set become one command.
 */
export function opsToScripts(ops: NftOp[], budget = 20000, target: ScriptTarget = { family: 'ip', table: TABLE }): string[] {
  const chunks: NftOp[][] = [];
  let cur: NftOp[] = [];
  let used = 0;
  for (const op of ops) {
    const c = opCost(op);
    if (cur.length > 0 && used + c > budget) {
      chunks.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(op);
    used += c;
  }
  if (cur.length > 0) chunks.push(cur);
  return chunks.map((c) => chunkScript(c, target));
}

function chunkScript(ops: NftOp[], t: ScriptTarget): string {
  const out: string[] = [];
  const tbl = `${t.family} ${t.table}`;
  const elementBlock = (verb: 'add' | 'delete', set: string, items: string[]): void => {
    out.push(`${verb} element ${tbl} ${set} {`);
    items.forEach((it, i) => out.push(`${i === 0 ? '\t' : '\t,'}${it}`));
    out.push('}');
  };
  for (let i = 0; i < ops.length; ) {
    const op = ops[i]!;
    if (op.kind === 'add-element' || op.kind === 'delete-element' || op.kind === 'replace-element') {
      let j = i;
      const run: NftOp[] = [];
      while (j < ops.length && ops[j]!.kind === op.kind && (ops[j] as { set: string }).set === op.set) run.push(ops[j++]!);
      if (op.kind === 'delete-element' || op.kind === 'replace-element') {
        elementBlock('delete', op.set, run.map((r) => (r as { key: string }).key));
      }
      if (op.kind !== 'delete-element') {
        elementBlock('add', op.set, run.map((r) => { const e = r as { key: string; value?: string }; return elementText(e.key, e.value); }));
      }
      i = j;
      continue;
    }
    switch (op.kind) {
      case 'add-set':
        out.push(`add ${op.set.kind} ${tbl} ${op.set.name} { ${op.set.decl}; }`);
        break;
      case 'delete-set':
        out.push(`delete ${op.setKind} ${tbl} ${op.name}`);
        break;
      case 'add-chain':
      case 'replace-chain': {
        const hdr = chainHeader(op.chain);
        out.push(`add chain ${tbl} ${op.chain.name}${hdr ? ` { ${hdr} }` : ''}`);
        if (op.kind === 'replace-chain') out.push(`flush chain ${tbl} ${op.chain.name}`);
        for (const r of op.chain.rules) out.push(`add rule ${tbl} ${op.chain.name} ${r}`);
        break;
      }
      case 'delete-chain':
        out.push(`delete chain ${tbl} ${op.name}`);
        break;
    }
    i++;
  }
  return out.join('\n') + '\n';
}
