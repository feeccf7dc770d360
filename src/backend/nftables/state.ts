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

/** Claims on one element (or chain/set) by service ports; the smallest owner key wins. */
type Claims<T> = Map<string, T>;

function winner<T>(claims: Claims<T> | undefined): T | undefined {
  if (!claims || claims.size === 0) return undefined;
  let best: string | undefined;
  for (const k of claims.keys()) if (best === undefined || k < best) best = k;
  return claims.get(best!);
}

const NONE = Symbol('none');

export class RulesetState {
  readonly ctx: RenderContext;
  private readonly frags = new Map<string, Fragment>();
  private readonly sets = new Map<string, NftSet>();
  private readonly baseSetNames: string[];
  private readonly base: NftChain[];
  /** set name → element key → owner → value. Only elements with more than one owner possible are tracked here lazily. */
  private readonly claims = new Map<string, Map<string, Claims<string | undefined>>>();
  private readonly chainClaims = new Map<string, Claims<NftChain>>();
  private readonly setClaims = new Map<string, Claims<NftSet>>();
  private readonly shapeRefs = new Map<string, number>();
  private readonly shapeChains = new Map<string, NftChain>();

  constructor(config: BackendConfig) {
    this.ctx = renderContext(config);
    const sets = baseSets(this.ctx);
    for (const s of sets) this.sets.set(s.name, s);
    this.baseSetNames = sets.map((s) => s.name);
    this.base = baseChains(this.ctx);
  }

  /**
   * Re-renders the given service port keys (all keys of the snapshot when `keys` is undefined),
   * updates the ruleset and returns the ordered operations that take the previous ruleset to
   * the new one.
   */
  update(snapshot: Snapshot, keys?: Iterable<string>): NftOp[] {
    const todo = keys ? new Set(keys) : new Set([...snapshot.services.keys(), ...this.frags.keys()]);
    const elemBefore = new Map<string, Map<string, string | undefined | typeof NONE>>();
    const chainBefore = new Map<string, NftChain | undefined>();
    const setBefore = new Map<string, NftSet | undefined>();
    const shapeBefore = new Map<string, boolean>();

    const touchElem = (set: string, key: string): void => {
      let m = elemBefore.get(set);
      if (!m) elemBefore.set(set, (m = new Map()));
      if (!m.has(key)) {
        const s = this.sets.get(set)!;
        m.set(key, s.elements.has(key) ? s.elements.get(key) : NONE);
      }
    };
    for (const key of todo) {
      const old = this.frags.get(key);
      const st = snapshot.services.get(key);
      const next = st ? renderServicePort(st, this.ctx) : undefined;
      if (old) {
        for (const [set, k] of old.elements) {
          touchElem(set, k);
          this.unclaimElem(set, k, key);
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
        for (const [set, k, v] of next.elements) {
          touchElem(set, k);
          this.claimElem(set, k, key, v);
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
      const s = this.sets.get(set)!;
      for (const [k, before] of m) {
        const cl = this.claims.get(set)?.get(k);
        const has = cl !== undefined && cl.size > 0;
        const after = has ? winner(cl) : undefined;
        if (!has) {
          if (cl) this.claims.get(set)!.delete(k);
          s.elements.delete(k);
          if (before !== NONE) ops.push({ kind: 'delete-element', set, key: k });
        } else {
          s.elements.set(k, after);
          if (before === NONE) ops.push({ kind: 'add-element', set, key: k, value: after });
          else if (before !== after) ops.push({ kind: 'replace-element', set, key: k, value: after });
        }
      }
    }
    for (const [name, before] of setBefore) {
      const cl = this.setClaims.get(name);
      const after = winner(cl);
      if (!after) this.setClaims.delete(name);
      if (!before && after) ops.push({ kind: 'add-set', set: after });
      else if (before && !after) ops.push({ kind: 'delete-set', name, setKind: before.kind });
    }
    for (const [name, before] of chainBefore) {
      const cl = this.chainClaims.get(name);
      const after = winner(cl);
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
    return orderOps(ops, (n) => this.shapeChains.get(n) ?? winner(this.chainClaims.get(n)) ?? this.base.find((c) => c.name === n));
  }

  private claimElem(set: string, k: string, owner: string, v: string | undefined): void {
    let bySet = this.claims.get(set);
    if (!bySet) this.claims.set(set, (bySet = new Map()));
    let cl = bySet.get(k);
    if (!cl) bySet.set(k, (cl = new Map()));
    cl.set(owner, v);
  }

  private unclaimElem(set: string, k: string, owner: string): void {
    this.claims.get(set)?.get(k)?.delete(owner);
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
