// Incremental form of `render`: keeps each service port's fragment so that a partial sync
// re-renders only the changed service ports and yields exactly the element and chain operations
// that differ. Its ruleset always equals `render(snapshot, config)` for the snapshot it last saw.
import type { BackendConfig } from '../types.js';
import type { Snapshot } from '../../model/types.js';
import { orderOps, type NftOp } from './diff.js';
import {
  TABLE,
  baseChains,
  baseSets,
  renderContext,
  renderServicePort,
  shapeChain,
  type Fragment,
  type NftChain,
  type NftRuleset,
  type NftSet,
  type RenderContext,
} from './render.js';

/** Claims on one chain or set by service ports; the smallest owner key wins. */
type Claims<T> = Map<string, T>;

function winner<T>(claims: Claims<T> | undefined): T | undefined {
  if (!claims || claims.size === 0) return undefined;
  let best: string | undefined;
  for (const k of claims.keys()) if (best === undefined || k < best) best = k;
  return claims.get(best!);
}

/**
 * Owner of one element: the owning service port key, or, in the rare case of several service
 * ports producing the same element, each claimant with its value.
 */
type Owner = string | Map<string, string | undefined>;

const NONE = Symbol('none');
type Before = string | undefined | typeof NONE;

export class RulesetState {
  readonly ctx: RenderContext;
  private readonly frags = new Map<string, Fragment>();
  private readonly sets = new Map<string, NftSet>();
  private readonly baseSetNames: string[];
  private readonly base: NftChain[];
  private readonly owners = new Map<string, Map<string, Owner>>();
  private readonly chainClaims = new Map<string, Claims<NftChain>>();
  private readonly setClaims = new Map<string, Claims<NftSet>>();
  private readonly shapeRefs = new Map<string, number>();
  private readonly shapeChains = new Map<string, NftChain>();

  constructor(config: BackendConfig) {
    this.ctx = renderContext(config);
    const sets = baseSets(this.ctx);
    for (const s of sets) {
      this.sets.set(s.name, s);
      this.owners.set(s.name, new Map());
    }
    this.baseSetNames = sets.map((s) => s.name);
    this.base = baseChains(this.ctx);
  }

  /** Renders every service port of a snapshot into a fresh state (no operations collected). */
  load(snapshot: Snapshot): void {
    this.apply(snapshot, snapshot.services.keys(), false);
  }

  /**
   * Re-renders the given service port keys (all known and snapshot keys when `keys` is
   * undefined), updates the ruleset and returns the ordered operations that take the previous
   * ruleset to the new one.
   */
  update(snapshot: Snapshot, keys?: Iterable<string>): NftOp[] {
    return this.apply(snapshot, keys ?? new Set([...snapshot.services.keys(), ...this.frags.keys()]), true);
  }

  private apply(snapshot: Snapshot, keys: Iterable<string>, collect: boolean): NftOp[] {
    const elemBefore = new Map<string, Map<string, Before>>();
    const chainBefore = new Map<string, NftChain | undefined>();
    const setBefore = new Map<string, NftSet | undefined>();
    const shapeBefore = new Map<string, boolean>();
    const touch = (set: string, k: string): void => {
      let m = elemBefore.get(set);
      if (!m) elemBefore.set(set, (m = new Map()));
      if (!m.has(k)) {
        const els = this.sets.get(set)!.elements;
        m.set(k, els.has(k) ? els.get(k) : NONE);
      }
    };
    const seen = new Set<string>();
    for (const key of keys) {
      if (seen.has(key)) continue;
      seen.add(key);
      const old = this.frags.get(key);
      const st = snapshot.services.get(key);
      const next = st ? renderServicePort(st, this.ctx) : undefined;
      if (old) {
        const els = old.elements;
        for (let i = 0; i < els.length; i += 3) {
          if (collect) touch(els[i]!, els[i + 1]!);
          this.unclaim(els[i]!, els[i + 1]!, key);
        }
        for (const c of old.chains) {
          if (!chainBefore.has(c.name)) chainBefore.set(c.name, winner(this.chainClaims.get(c.name)));
          this.chainClaims.get(c.name)?.delete(key);
        }
        for (const s of old.sets) {
          if (!setBefore.has(s.name)) setBefore.set(s.name, winner(this.setClaims.get(s.name)));
          this.setClaims.get(s.name)?.delete(key);
        }
        for (const sh of old.shapes) {
          if (!shapeBefore.has(sh)) shapeBefore.set(sh, (this.shapeRefs.get(sh) ?? 0) > 0);
          this.shapeRefs.set(sh, (this.shapeRefs.get(sh) ?? 0) - 1);
        }
      }
      if (next) {
        const els = next.elements;
        for (let i = 0; i < els.length; i += 3) {
          if (collect) touch(els[i]!, els[i + 1]!);
          this.claim(els[i]!, els[i + 1]!, key, els[i + 2]);
        }
        for (const c of next.chains) {
          if (!chainBefore.has(c.name)) chainBefore.set(c.name, winner(this.chainClaims.get(c.name)));
          let cl = this.chainClaims.get(c.name);
          if (!cl) this.chainClaims.set(c.name, (cl = new Map()));
          cl.set(key, c);
        }
        for (const s of next.sets) {
          if (!setBefore.has(s.name)) setBefore.set(s.name, winner(this.setClaims.get(s.name)));
          let cl = this.setClaims.get(s.name);
          if (!cl) this.setClaims.set(s.name, (cl = new Map()));
          cl.set(key, s);
        }
        for (const sh of next.shapes) {
          if (!shapeBefore.has(sh)) shapeBefore.set(sh, (this.shapeRefs.get(sh) ?? 0) > 0);
          this.shapeRefs.set(sh, (this.shapeRefs.get(sh) ?? 0) + 1);
        }
        this.frags.set(key, next);
      } else {
        this.frags.delete(key);
      }
    }

    const ops: NftOp[] = [];
    for (const [set, m] of elemBefore) {
      const els = this.sets.get(set)!.elements;
      for (const [k, before] of m) {
        if (!els.has(k)) {
          if (before !== NONE) ops.push({ kind: 'delete-element', set, key: k });
          continue;
        }
        const after = els.get(k);
        if (before === NONE) ops.push({ kind: 'add-element', set, key: k, value: after });
        else if (before !== after) ops.push({ kind: 'replace-element', set, key: k, value: after });
      }
    }
    for (const [name, before] of setBefore) {
      const after = winner(this.setClaims.get(name));
      if (!after) this.setClaims.delete(name);
      if (!before && after) ops.push({ kind: 'add-set', set: after });
      else if (before && !after) ops.push({ kind: 'delete-set', name, setKind: before.kind });
    }
    for (const [name, before] of chainBefore) {
      const after = winner(this.chainClaims.get(name));
      if (!after) this.chainClaims.delete(name);
      if (!before && after) ops.push({ kind: 'add-chain', chain: after });
      else if (before && !after) ops.push({ kind: 'delete-chain', name });
      else if (before && after && !sameRules(before, after)) ops.push({ kind: 'replace-chain', chain: after });
    }
    for (const [name, before] of shapeBefore) {
      const after = (this.shapeRefs.get(name) ?? 0) > 0;
      if (!after) this.shapeRefs.delete(name);
      if (!before && after) {
        const c = shapeChain(name, this.ctx);
        this.shapeChains.set(name, c);
        ops.push({ kind: 'add-chain', chain: c });
      } else if (before && !after) {
        this.shapeChains.delete(name);
        ops.push({ kind: 'delete-chain', name });
      }
    }
    if (!collect) return [];
    // Deleted chains are looked up as they were, so they go before the chains they referred to.
    return orderOps(
      ops,
      (n) => this.shapeChains.get(n) ?? winner(this.chainClaims.get(n)) ?? chainBefore.get(n) ?? this.base.find((c) => c.name === n),
    );
  }

  private claim(set: string, k: string, owner: string, v: string | undefined): void {
    const bySet = this.owners.get(set)!;
    const els = this.sets.get(set)!.elements;
    const cur = bySet.get(k);
    if (cur === undefined || cur === owner) {
      bySet.set(k, owner);
      els.set(k, v);
      return;
    }
    let m: Map<string, string | undefined>;
    if (typeof cur === 'string') {
      m = new Map([[cur, els.get(k)]]);
      bySet.set(k, m);
    } else {
      m = cur;
    }
    m.set(owner, v);
    els.set(k, winner(m));
  }

  private unclaim(set: string, k: string, owner: string): void {
    const bySet = this.owners.get(set)!;
    const els = this.sets.get(set)!.elements;
    const cur = bySet.get(k);
    if (cur === undefined) return;
    if (typeof cur === 'string') {
      if (cur === owner) {
        bySet.delete(k);
        els.delete(k);
      }
      return;
    }
    cur.delete(owner);
    if (cur.size === 1) {
      const [o, v] = cur.entries().next().value as [string, string | undefined];
      bySet.set(k, o);
      els.set(k, v);
    } else {
      els.set(k, winner(cur));
    }
  }

  /** The current ruleset (shares element maps with this state: read, do not modify). */
  ruleset(): NftRuleset {
    const extraSets: NftSet[] = [];
    for (const cl of this.setClaims.values()) {
      const s = winner(cl);
      if (s) extraSets.push(s);
    }
    const extraChains: NftChain[] = [];
    for (const cl of this.chainClaims.values()) {
      const c = winner(cl);
      if (c) extraChains.push(c);
    }
    return {
      family: this.ctx.f,
      table: TABLE,
      sets: [...this.baseSetNames.map((n) => this.sets.get(n)!), ...extraSets],
      chains: [...this.shapeChains.values(), ...extraChains, ...this.base],
    };
  }

  /** Number of set elements, for choosing between an atomic reload and a chunked diff. */
  elementCount(): number {
    let n = 0;
    for (const s of this.sets.values()) n += s.elements.size;
    return n;
  }
}

function sameRules(a: NftChain, b: NftChain): boolean {
  return a.rules.length === b.rules.length && a.rules.every((r, i) => r === b.rules[i]);
}
