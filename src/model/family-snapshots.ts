// One IP family's side of ProxyModel: what changed since its last snapshot, its programmed
// service port states, and the snapshot and change set built from them. Kept apart from the
// model, which feeds every family the same objects and tells each what changed.
import { endpointsForPort, type ParsedSlice } from './endpoints.js';
import { collectStale, servicePortStateEqual } from './port-changes.js';
import type { ParsedService } from './service.js';
import { SnapshotView } from './snapshot-map.js';
import { categorizeEndpoints } from './topology.js';
import { servicePortKey, type ChangeSet, type IPFamily, type NodeInfo, type ServicePortState, type Snapshot } from './types.js';

/** What a snapshot is built from: the model's objects at the time it is taken. */
export interface SnapshotInputs {
  nodeName: string;
  node: NodeInfo;
  /** Services as programmed, after cross-Service conflicts are resolved. */
  services: ReadonlyMap<string, ParsedService>;
  /** Service key → its slices, by slice key. */
  slicesByService: ReadonlyMap<string, ReadonlyMap<string, ParsedSlice>>;
}

export class FamilySnapshots {
  private generation = 0;
  private full = true;
  /** The node's topology changed: report every service port as changed. */
  private allChanged = false;
  /** Services whose Service object changed since the last snapshot. */
  private readonly dirtyServices = new Set<string>();
  /** Services whose EndpointSlices changed since the last snapshot. */
  private readonly dirtyEndpoints = new Set<string>();
  private readonly states = new Map<string, ServicePortState>();
  /** The latest snapshot's view of `states`: told before any of them changes. */
  private view: SnapshotView<ServicePortState> | null = null;
  /** Service key → keys of its ports in `states`. */
  private readonly portKeys = new Map<string, string[]>();

  constructor(readonly family: IPFamily) {}

  /** The next snapshot is full (the consumer must resync everything). */
  markFull(): void {
    this.full = true;
  }

  serviceChanged(serviceKey: string): void {
    this.dirtyServices.add(serviceKey);
  }

  endpointsChanged(serviceKey: string): void {
    this.dirtyEndpoints.add(serviceKey);
  }

  topologyChanged(): void {
    this.allChanged = true;
  }

  /** Services with changes not yet handed out in a snapshot. */
  pending(): { services: number; endpoints: number } {
    return { services: this.dirtyServices.size, endpoints: this.dirtyEndpoints.size };
  }

  snapshot(inputs: SnapshotInputs): Snapshot {
    const family = this.family;
    this.generation += 1;
    const changes: ChangeSet = {
      full: this.full,
      changed: new Set(),
      deleted: new Set(),
      staleEndpoints: [],
      staleServiceIPs: [],
    };
    const staleIPsSeen = new Set<string>();
    let todo: Iterable<string>;
    if (this.allChanged) {
      todo = new Set([...this.portKeys.keys(), ...inputs.services.keys(), ...this.dirtyEndpoints]);
    } else {
      todo = new Set([...this.dirtyServices, ...this.dirtyEndpoints]);
    }
    for (const serviceKey of todo) this.refreshService(inputs, serviceKey, changes, staleIPsSeen);
    this.dirtyServices.clear();
    this.dirtyEndpoints.clear();
    this.full = false;
    this.allChanged = false;
    // Not a copy, yet it does not change under a consumer that keeps it (see snapshot-map.ts).
    const view = new SnapshotView(this.states, this.states.size);
    this.view?.follow(view);
    this.view = view;
    return { family, generation: this.generation, node: inputs.node, services: view, changes };
  }

  private refreshService(inputs: SnapshotInputs, serviceKey: string, changes: ChangeSet, staleIPsSeen: Set<string>): void {
    const fresh = buildStates(inputs, this.family, serviceKey);
    const oldKeys = this.portKeys.get(serviceKey) ?? [];
    const newKeys: string[] = [];
    for (const state of fresh) {
      const key = servicePortKey(state.info);
      newKeys.push(key);
      const old = this.states.get(key);
      if (old !== undefined && servicePortStateEqual(old, state)) {
        if (this.allChanged) changes.changed.add(key);
        continue;
      }
      changes.changed.add(key);
      this.view?.save(key);
      this.states.set(key, state);
      collectStale(old, state, changes, staleIPsSeen);
    }
    for (const key of oldKeys) {
      if (newKeys.includes(key)) continue;
      const old = this.states.get(key);
      this.view?.save(key);
      this.states.delete(key);
      changes.deleted.add(key);
      collectStale(old, undefined, changes, staleIPsSeen);
    }
    if (newKeys.length > 0) this.portKeys.set(serviceKey, newKeys);
    else this.portKeys.delete(serviceKey);
  }
}

function buildStates(inputs: SnapshotInputs, family: IPFamily, serviceKey: string): ServicePortState[] {
  const infos = inputs.services.get(serviceKey)?.ports[family] ?? [];
  if (infos.length === 0) return [];
  const bySlice = inputs.slicesByService.get(serviceKey);
  const slices: ParsedSlice[] = [];
  if (bySlice !== undefined) {
    for (const s of bySlice.values()) if (s.family === family) slices.push(s);
    // Deterministic merge order, whatever order the slices arrived in.
    slices.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
  const perPort = infos.map((info) => endpointsForPort(slices, info.portName, info.protocol, inputs.nodeName));
  // Like upstream's health check, count distinct local ready pod IPs over all ports.
  const localReady = new Set<string>();
  for (const eps of perPort) for (const ep of eps) if (ep.isLocal && ep.ready) localReady.add(ep.ip);
  return infos.map((info, i) => {
    const endpoints = perPort[i]!;
    const cat = categorizeEndpoints(endpoints, info, inputs.nodeName, inputs.node.zone);
    return {
      info,
      endpoints,
      clusterEndpoints: cat.clusterEndpoints,
      localEndpoints: cat.localEndpoints,
      allReachableEndpoints: cat.allReachableEndpoints,
      hasAnyEndpoints: cat.hasAnyEndpoints,
      localReadyCount: localReady.size,
    };
  });
}
