// Incremental form of renderIpvs: keeps each service port's fragment (common fragment store), so
// a partial sync re-renders only the changed service ports and yields only what differs: ipset
// entries, kube-ipvs0 addresses, the virtual servers of those ports, and whether the chains'
// text may have changed. What it holds always equals renderIpvs of the last snapshot it saw.
import type { Snapshot } from '../../model/types.js';
import type { FragmentStore } from '../common/fragment-store.js';
import type { IptChain } from '../iptables/syntax.js';
import { IPSET_SPECS, ipsetName } from './ipsets.js';
import {
  CHAIN_INPUTS,
  DUMMY,
  newStore,
  renderContext,
  renderServicePort,
  storeChains,
  storeRuleset,
  type IpvsContext,
  type IpvsOptions,
} from './render.js';
import type { IpvsRuleset, VirtualServer } from './types.js';

export interface IpvsChange {
  /** `ipset restore` input: deletions, then additions; '' when no entry changed. */
  ipsetInput: string;
  dummyAdd: string[];
  dummyDel: string[];
  /** Virtual servers added, changed (`desired` set) or deleted (`desired` undefined), with their previous content. */
  virtualServers: Array<{ before: VirtualServer | undefined; desired: VirtualServer | undefined }>;
  /** A chain's rules, or a set's emptiness the chains test, changed: re-render the chains. */
  chainsChanged: boolean;
}

export class IpvsState {
  readonly ctx: IpvsContext;
  private readonly store: FragmentStore<VirtualServer> = newStore();

  constructor(options: IpvsOptions) {
    this.ctx = renderContext(options);
  }

  /** Renders every service port of a snapshot into this (fresh) state. */
  load(snapshot: Snapshot): this {
    this.store.update(snapshot.services.keys(), (k) => renderServicePort(k, snapshot.services.get(k)!, this.ctx), false);
    return this;
  }

  /** Re-renders the given service port keys (every known and snapshot key when undefined) and returns what changed. */
  update(snapshot: Snapshot, keys?: Iterable<string>): IpvsChange {
    const emptyBefore = new Map(IPSET_SPECS.map((s) => [s.name, this.store.items(s.name).size === 0]));
    const render = (k: string): ReturnType<typeof renderServicePort> | undefined => {
      const st = snapshot.services.get(k);
      return st ? renderServicePort(k, st, this.ctx) : undefined;
    };
    const ops = this.store.update(keys ?? new Set([...snapshot.services.keys(), ...this.store.keys()]), render);
    const family = this.ctx.family;
    const del: string[] = [];
    const add: string[] = [];
    const change: IpvsChange = { ipsetInput: '', dummyAdd: [], dummyDel: [], virtualServers: [], chainsChanged: false };
    for (const op of ops) {
      switch (op.kind) {
        case 'add-item':
        case 'delete-item':
        case 'replace-item': {
          const adding = op.kind === 'add-item';
          if (CHAIN_INPUTS.has(op.collection) && !emptyBefore.has(op.collection)) change.chainsChanged = true;
          if (op.collection === DUMMY) (adding ? change.dummyAdd : change.dummyDel).push(op.key);
          else if (emptyBefore.has(op.collection) && op.kind !== 'replace-item') {
            (adding ? add : del).push(`${adding ? 'add' : 'del'} ${ipsetName(op.collection, family)} ${op.key}`);
          }
          break;
        }
        case 'add-object':
          change.virtualServers.push({ before: undefined, desired: op.object });
          break;
        case 'replace-object':
          change.virtualServers.push({ before: op.before, desired: op.object });
          break;
        case 'delete-object':
          change.virtualServers.push({ before: op.object, desired: undefined });
          break;
        default:
          break;
      }
    }
    for (const [name, wasEmpty] of emptyBefore) if (wasEmpty !== (this.store.items(name).size === 0)) change.chainsChanged = true;
    const lines = [...del, ...add];
    change.ipsetInput = lines.length > 0 ? lines.join('\n') + '\n' : '';
    return change;
  }

  chains(): IptChain[] {
    return storeChains(this.store, this.ctx);
  }

  ruleset(): IpvsRuleset {
    return storeRuleset(this.store, this.ctx);
  }
}
