// Incremental form of `render`: keeps each service port's fragment so that a partial sync
// re-renders only the changed service ports and yields exactly the element and chain operations
// that differ. Its ruleset always equals `render(snapshot, config)` for the snapshot it last saw.
import type { BackendConfig } from '../types.js';
import type { Snapshot } from '../../model/types.js';
import { FragmentStore } from '../common/fragment-store.js';
import type { Fragment as GenericFragment, ObjectKind } from '../common/fragment.js';
import { orderOps, sameRules, type NftOp } from './diff.js';
import {
  TABLE,
  baseChains,
  baseSets,
  kernelSetOf,
  servicesChain,
  shapeChain,
  shapeTupleSet,
  shapeTuples,
  splitDispatch,
  type Fragment,
  type NftChain,
  type NftRuleset,
  type NftSet,
  type RenderContext,
} from './layout.js';
import { renderContext, renderServicePort } from './render.js';

const NFT_OBJECTS: ObjectKind<NftChain> = {
  id: (c) => c.name,
  same: sameRules,
};

function generic(frag: Fragment): GenericFragment<NftChain> {
  return { items: frag.elements, objects: frag.chains, refs: frag.shapes };
}

export class RulesetState {
  readonly ctx: RenderContext;
  private readonly store: FragmentStore<NftChain>;
  private readonly baseSetDecls: NftSet[];
  private base: NftChain[];
  private readonly shapeChains = new Map<string, NftChain>();

  constructor(config: BackendConfig) {
    this.ctx = renderContext(config);
    this.baseSetDecls = baseSets(this.ctx);
    this.store = new FragmentStore(NFT_OBJECTS, this.baseSetDecls.map((s) => s.name));
    for (const s of this.baseSetDecls) for (const [k, v] of s.elements) this.store.items(s.name).set(k, v);
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
    return this.apply(snapshot, keys ?? new Set([...snapshot.services.keys(), ...this.store.keys()]), true);
  }

  private apply(snapshot: Snapshot, keys: Iterable<string>, collect: boolean): NftOp[] {
    const render = (key: string): GenericFragment<NftChain> | undefined => {
      const st = snapshot.services.get(key);
      return st ? generic(renderServicePort(st, this.ctx)) : undefined;
    };
    const storeOps = this.store.update(keys, render, collect);
    const deleted = new Map<string, NftChain>();
    const ops: NftOp[] = [];
    let added = false;
    const dropped: string[] = [];
    for (const op of storeOps) {
      switch (op.kind) {
        case 'add-item': {
          const to = kernelSetOf(op.collection, op.value);
          ops.push({ kind: 'add-element', set: to.set, key: op.key, value: to.value });
          break;
        }
        case 'replace-item': {
          // A dispatch tuple changing shape moves between tuple sets (or to or from the map).
          const from = kernelSetOf(op.collection, op.before);
          const to = kernelSetOf(op.collection, op.value);
          if (from.set === to.set) ops.push({ kind: 'replace-element', set: to.set, key: op.key, value: to.value });
          else ops.push({ kind: 'add-element', set: to.set, key: op.key, value: to.value }, { kind: 'delete-element', set: from.set, key: op.key });
          break;
        }
        case 'delete-item':
          ops.push({ kind: 'delete-element', set: kernelSetOf(op.collection, op.value).set, key: op.key });
          break;
        case 'add-object':
          ops.push({ kind: 'add-chain', chain: op.object });
          break;
        case 'replace-object':
          ops.push({ kind: 'replace-chain', chain: op.object });
          break;
        case 'delete-object':
          deleted.set(op.object.name, op.object);
          ops.push({ kind: 'delete-chain', name: op.object.name });
          break;
        case 'add-ref': {
          const c = shapeChain(op.name, this.ctx);
          this.shapeChains.set(op.name, c);
          ops.push({ kind: 'add-set', set: shapeTupleSet(op.name, this.ctx) }, { kind: 'add-chain', chain: c });
          added = true;
          break;
        }
        case 'drop-ref': {
          const c = this.shapeChains.get(op.name);
          if (c) deleted.set(op.name, c);
          this.shapeChains.delete(op.name);
          ops.push({ kind: 'delete-chain', name: op.name }, { kind: 'delete-set', name: shapeTuples(op.name), setKind: 'set' });
          dropped.push(op.name);
          break;
        }
      }
    }
    if (!collect) {
      for (const name of this.store.refs()) if (!this.shapeChains.has(name)) this.shapeChains.set(name, shapeChain(name, this.ctx));
      this.setServicesChain([...this.shapeChains.keys()]);
      return [];
    }
    // The dispatch chain: new shapes' rules before the elements that use them, and rules of
    // shapes gone only after their elements have moved (late).
    if (added || dropped.length > 0) {
      const final = [...this.shapeChains.keys()];
      if (added) ops.push({ kind: 'replace-chain', chain: this.setServicesChain([...final, ...dropped]) });
      if (dropped.length > 0) ops.push({ kind: 'replace-chain', chain: this.setServicesChain(final), late: true });
    }
    // Deleted chains are looked up as they were, so they go before the chains they referred to.
    return orderOps(ops, (n) => {
      return this.shapeChains.get(n) ?? this.store.object(n) ?? deleted.get(n) ?? this.base.find((c) => c.name === n);
    });
  }

  /** Makes the dispatch chain hold the rules of `shapes`, and returns it. */
  private setServicesChain(shapes: string[]): NftChain {
    const chain = servicesChain(this.ctx, [...new Set(shapes)].sort());
    this.base = this.base.map((c) => (c.name === chain.name ? chain : c));
    return chain;
  }

  /** The current ruleset (shares element maps with this state, except the dispatch maps and tuple sets, built here: read, do not modify). */
  ruleset(): NftRuleset {
    const shapes = [...this.shapeChains.keys()].sort();
    const sets: NftSet[] = splitDispatch(
      this.baseSetDecls.map((s) => ({ ...s, elements: this.store.items(s.name) })),
      shapes,
      this.ctx,
    );
    return {
      family: this.ctx.f,
      table: TABLE,
      sets,
      chains: [...shapes.map((s) => this.shapeChains.get(s)!), ...this.store.objects(), ...this.base],
    };
  }

  /** Number of set elements, for choosing between an atomic reload and a chunked diff. */
  elementCount(): number {
    return this.store.itemCount();
  }
}
