// What the iptables backend last wrote: each service port's fragment (its own chains and its
// rules in the shared dispatch chains) and the fixed chains they are assembled into, with the
// full sync's restore input in transactions and the chain-by-chain comparison with a read-back.
import type { IPFamily, Snapshot } from '../../model/types.js';
import { FragmentStore } from '../common/fragment-store.js';
import type { ObjectKind, StoreOp } from '../common/fragment.js';
import { sameStrings } from '../../model/service.js';
import { collectGarbageIfGrown, GARBAGE_WHILE_TOOL_WORKS_MIB } from '../../node/memory.js';
import { rulesDigest, type KernelChains } from './save.js';
import { DISPATCH_CHAINS } from './base.js';
import { opsToRestore } from './restore.js';
import { baseChains, contextDigest, renderInputsDigest, renderServicePort, toRestoreInput, toRestorePieces, type IptChain, type IptContext } from './render.js';

/** Edits of one dispatch chain a restart writes in place of rewriting it. */
const MAX_EDITS = 1000;

/** Service ports rendered between two turns of the event loop by renderAhead(): ~25 ms. */
const AHEAD_GROUP = 200;

const IPT_CHAINS: ObjectKind<IptChain> = {
  // Service ports own nat chains only (KUBE-SVC-…, KUBE-SEP-…): their name is their id, which
  // spares 100,000 strings `nat/KUBE-SEP-…` at 10,000 services × 10 endpoints.
  id: (c) => (c.table === 'nat' ? c.name : `${c.table}/${c.name}`),
  // Each read of `rules` renders a service port's chain: sameStrings reads each once.
  same: (a, b) => sameStrings(a.rules, b.rules),
};

/** Each service port's contribution, and the fixed chains they are assembled into. */
export class IptState {
  readonly store: FragmentStore<IptChain>;
  readonly base: IptChain[];
  private readonly baseById: Map<string, IptChain>;
  /** Service ports renderAhead() put in the store, which the full sync need not render again. */
  private readonly ahead = new Set<string>();

  constructor(readonly ctx: IptContext) {
    this.base = baseChains(ctx);
    this.baseById = new Map(this.base.map((c) => [`${c.table}/${c.name}`, c]));
    this.store = new FragmentStore(IPT_CHAINS, this.base.map((c) => `${c.table}/${c.name}`));
  }

  /**
   * Renders service ports, in the order a full sync writes them, until `until` settles: the first
   * sync renders while the start-up's processes run (its save of a 10,000-service ruleset alone
   * takes seconds). The event loop turns between groups, so that the start-up goes on.
   */
  async renderAhead(snapshot: Snapshot, until: Promise<unknown>): Promise<void> {
    let settled = false;
    const settle = (): void => void (settled = true);
    until.then(settle, settle);
    const keys = [...snapshot.services.keys()].sort();
    for (let i = 0; i < keys.length; i += AHEAD_GROUP) {
      await new Promise((resolve) => setImmediate(resolve));
      if (settled) return;
      // Rendering leaves garbage that V8 let pile up to a restart's peak, while the start-up's
      // tool, not this render, is what the sync waits for.
      collectGarbageIfGrown(GARBAGE_WHILE_TOOL_WORKS_MIB);
      const group = keys.slice(i, i + AHEAD_GROUP);
      this.load(snapshot, group);
      for (const k of group) this.ahead.add(k);
    }
  }

  /** Renders into the store the service ports of `keys` that renderAhead() did not. */
  renderRest(snapshot: Snapshot, keys: string[]): void {
    this.load(snapshot, this.ahead.size === 0 ? keys : keys.filter((k) => !this.ahead.delete(k)));
  }

  /** Renders service ports of the snapshot into the store, as a load from scratch (no operations). */
  private load(snapshot: Snapshot, keys: string[]): void {
    this.store.update(keys, (k) => renderServicePort(snapshot.services.get(k)!, this.ctx), false);
  }

  /** The fixed chains, the shared ones holding the service rules before their fixed tail. */
  sharedChains(): IptChain[] {
    return this.base.map((c) => ({ ...c, rules: [...this.store.items(`${c.table}/${c.name}`).keys(), ...c.rules] }));
  }

  /** The whole ruleset. */
  chains(): IptChain[] {
    return [...this.sharedChains(), ...this.store.objects()];
  }

  /** Whether the ruleset has chain `name` of `table` (without listing the ruleset). */
  has(table: string, name: string): boolean {
    const id = `${table}/${name}`;
    return this.baseById.has(id) || this.store.object(table === 'nat' ? name : id) !== undefined;
  }

  /**
   * Whether the kernel (as saved) holds chain `c` as this state renders it: a shared chain's
   * service rules in any order (partial syncs insert them at its top), its fixed tail last.
   */
  held(kernel: KernelChains, c: IptChain): boolean {
    const id = `${c.table}/${c.name}`;
    const rules = kernel.whole.get(id);
    if (rules) return this.heldAs(c, rules);
    const digest = kernel.digests.get(id);
    return digest !== undefined && !this.baseById.has(id) && digest === rulesDigest(c.rules);
  }

  /**
   * The item operations that take a shared chain as the kernel holds it (`kernel`: read back, or
   * a checkpoint's, whose order need not be the kernel's) to this state's, when its fixed tail is
   * in place: the service rules it has too many deleted, the missing ones added, as a partial
   * sync writes them (opsToRestore). Undefined for a chain without a fixed tail or whose tail
   * differs.
   */
  itemOpsTo(c: IptChain, kernel: readonly string[]): Array<StoreOp<IptChain>> | undefined {
    const collection = `${c.table}/${c.name}`;
    const base = this.baseById.get(collection);
    if (!base) return undefined;
    const head = kernel.length - base.rules.length;
    if (head < 0 || !base.rules.every((r, i) => kernel[head + i] === r)) return undefined;
    const wanted = new Map<string, number>();
    for (const r of this.store.items(collection).keys()) wanted.set(r, (wanted.get(r) ?? 0) + 1);
    const ops: Array<StoreOp<IptChain>> = [];
    for (let i = 0; i < head; i++) {
      const left = wanted.get(kernel[i]!) ?? 0;
      if (left > 0) wanted.set(kernel[i]!, left - 1);
      else ops.push({ kind: 'delete-item', collection, key: kernel[i]!, value: undefined });
    }
    for (const [r, n] of wanted) for (let k = 0; k < n; k++) ops.push({ kind: 'add-item', collection, key: r, value: undefined });
    return ops;
  }

  /**
   * Of service port keys, those whose chains must be compared with `kernel`: all but the ports a
   * checkpoint says were rendered from what `snapshot` renders them from, under this context,
   * whose chains are held unread (rendering and hashing 110,000 chains took ~1.5 s).
   */
  private unsure(snapshot: Snapshot, kernel: KernelChains | undefined): (keys: string[]) => string[] {
    const rendered = kernel?.rendered?.context === contextDigest(this.ctx) ? kernel.rendered.inputs : undefined;
    return (keys) => (rendered ? keys.filter((k) => rendered.get(k) !== renderInputsDigest(snapshot.services.get(k)!)) : keys);
  }

  /** The chains a full sync writes over `kernel` in one transaction (legacy): those it does not hold. */
  chainsToWrite(snapshot: Snapshot, kernel: KernelChains): IptChain[] {
    const owned = [...this.store.ownedObjects(this.unsure(snapshot, kernel)([...this.store.keys()]))].flat();
    return [...this.sharedChains(), ...owned].filter((c) => !this.held(kernel, c));
  }

  /** Whether the kernel holds chain `c` as this state renders it, from its rules as read (`kernel`). */
  heldAs(c: IptChain, kernel: readonly string[]): boolean {
    if (!this.baseById.has(`${c.table}/${c.name}`)) return sameStrings(kernel, c.rules);
    // A shared chain: its fixed tail in place and nothing to edit in its service rules.
    return this.itemOpsTo(c, kernel)?.length === 0;
  }

  /**
   * The full restore as several transactions, rendered as they are written (a group renders
   * while the previous one is being restored): iptables-nft's restore time grows much faster
   * than linearly with the size of one transaction (see docs/iptables-layout.md). First the
   * fixed chains that cannot refer to a service (KUBE-MARK-MASQ, which service chains jump to,
   * and the like); then the service ports in key order, each group's own chains in one
   * transaction of about `budget` lines (whole services at once, so a restart over existing
   * rules never leaves one half-written); last the dispatch chains, which make the services
   * reachable, and the deletion of `stale()` chains. With `saved`, the kernel's rules as read,
   * chains it already holds as rendered are left out (a restart over our own rules writes
   * only what changed meanwhile). The groups refer to no chain of another group: they come
   * `together` at a time, as an array, to be written side by side.
   */
  async *chunkedInputs(
    family: IPFamily,
    snapshot: Snapshot,
    budget: number,
    stale: () => Promise<Array<{ table: IptChain['table']; name: string }>>,
    saved?: KernelChains,
    together = 1,
  ): AsyncGenerator<string | string[]> {
    const missing = (c: IptChain): boolean => !saved || !this.held(saved, c);
    const unsure = this.unsure(snapshot, saved);
    const shared = this.sharedChains();
    const late = new Set<string>(DISPATCH_CHAINS);
    for (let grew = true; grew; ) {
      grew = false;
      for (const c of shared) {
        const id = `${c.table}/${c.name}`;
        if (!late.has(id) && c.rules.some((r) => [...late].some((l) => l.startsWith(`${c.table}/`) && r.endsWith(` -j ${l.slice(c.table.length + 1)}`)))) {
          late.add(id);
          grew = true;
        }
      }
    }
    const early = shared.filter((c) => !late.has(`${c.table}/${c.name}`) && missing(c));
    if (early.length > 0) yield toRestoreInput({ family, chains: early });
    let group: string[] = [];
    let lines = 0;
    let batch: string[] = [];
    const flush = (): void => {
      this.renderRest(snapshot, group);
      const chains = [...this.store.ownedObjects(unsure(group))].flat().filter(missing);
      group = [];
      lines = 0;
      // A group the kernel already holds (a restart) is not written, so no restore gives the
      // collector its moment: the render's garbage would pile up to the restart's peak.
      if (chains.length === 0) collectGarbageIfGrown(GARBAGE_WHILE_TOOL_WORKS_MIB);
      const input = toRestoreInput({ family, chains });
      if (input.trim() !== '') batch.push(input);
    };
    const takeBatch = (): string[] => {
      const out = batch;
      batch = [];
      return out;
    };
    for (const key of [...snapshot.services.keys()].sort()) {
      const st = snapshot.services.get(key)!;
      // A service port's size: its endpoint chains (3 lines each) and its own chains.
      lines += 8 + 3 * (st.clusterEndpoints.length + st.localEndpoints.length);
      group.push(key);
      if (lines >= budget) flush();
      if (batch.length >= together) yield takeBatch();
    }
    if (group.length > 0) flush();
    if (batch.length > 0) yield takeBatch();
    const gone = await stale();
    const dispatch = this.sharedChains().filter((c) => late.has(`${c.table}/${c.name}`) && missing(c));
    if (dispatch.length + gone.length === 0) return;
    // Chains the kernel lacks can be filled over several transactions; one it holds is
    // replaced in one, so that none of its services goes missing meanwhile. Half the budget of
    // rules each: 44,000 KUBE-SERVICES rules took 5.4 s in pieces of 10,000, 3.7 s of 5,000 and
    // 3.2 s of 2,500 (by hand, iptables-nft 1.8.9).
    const absent = (c: IptChain): boolean => saved !== undefined && !saved.whole.has(`${c.table}/${c.name}`) && !saved.digests.has(`${c.table}/${c.name}`);
    if (dispatch.every(absent)) {
      yield* toRestorePieces({ family, chains: dispatch }, gone, Math.ceil(budget / 2));
      return;
    }
    // A chain the kernel holds with a few rules more or less (services changed while no proxy
    // ran) is edited in place: rewritten whole, 44,000 rules took 33.8 s. Past MAX_EDITS it is
    // rewritten: each deletion searches the chain.
    const edits: Array<StoreOp<IptChain>> = [];
    const whole: IptChain[] = [];
    for (const c of dispatch) {
      const rules = saved?.whole.get(`${c.table}/${c.name}`);
      const ops = rules ? this.itemOpsTo(c, rules) : undefined;
      if (ops === undefined || ops.length > MAX_EDITS) whole.push(c);
      else edits.push(...ops);
    }
    if (edits.length > 0) yield opsToRestore(edits);
    if (whole.length + gone.length > 0) yield toRestoreInput({ family, chains: whole }, gone);
  }
}

