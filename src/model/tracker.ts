// ProxyModel: the state built from source events, and per-family snapshots with the
// change set since the previous snapshot of that family (built in family-snapshots.ts).
import { log } from '../log.js';
import { ConflictResolver, type Conflict } from './conflicts.js';
import { parseEndpointSlice, parsedSliceEqual, withPortEndpoints, type ParsedSlice } from './endpoints.js';
import { FamilySnapshots } from './family-snapshots.js';
import type { SourceEvent } from './k8s.js';
import { emptyNodeInfo, parseNode, topologyChanged } from './node.js';
import { metaKey, parseService, parsedServiceEqual, type ParsedService } from './service.js';
import type { IPFamily, NodeInfo, Snapshot } from './types.js';
import { clip, isRecord, type FieldProblem } from './validate.js';

export interface ProxyModelOptions {
  /** The proxy's node name: endpoints on this node are local. */
  nodeName: string;
  /** IP families to produce snapshots for (default both). */
  families?: IPFamily[];
  /** Told when an object is programmed more restrictively than asked (fail closed), once per change. */
  onWarning?: (w: ObjectWarning) => void;
}

/** An object the owner should hear about (an Event, when there is an API server). */
export interface ObjectWarning {
  kind: 'Service';
  namespace: string;
  name: string;
  uid?: string;
  reason: string;
  message: string;
}

/** Problems that close something the owner meant to open: worth an Event, not only a log line. */
const EVENT_REASONS: Record<string, string> = { 'source-ranges-deny-all': 'LoadBalancerSourceRangesUnusable' };

/**
 * Kubernetes Service semantics in one place: feed it source events with `apply`, take
 * per-family `snapshot`s. Invalid objects never throw: they are logged, counted in
 * `invalidObjects` by reason, and the previous valid version (if any) stays in effect.
 */
export class ProxyModel {
  readonly nodeName: string;
  readonly families: readonly IPFamily[];
  /** Skipped objects, by `Kind/reason`. */
  readonly invalidObjects = new Map<string, number>();
  /** Dropped fields of otherwise usable objects, by `Kind/reason`. */
  readonly droppedFields = new Map<string, number>();

  private readonly services = new Map<string, ParsedService>();
  /** `services` after cross-Service conflicts are resolved (`effective`: what is programmed). */
  private readonly conflicts = new ConflictResolver();
  /** Services changed since conflicts were last resolved. */
  private readonly conflictsPending = new Set<string>();
  private readonly slices = new Map<string, ParsedSlice>();
  /** Service key → its slices, by slice key. */
  private readonly slicesByService = new Map<string, Map<string, ParsedSlice>>();
  private nodeInfo: NodeInfo;
  private readonly familyStates = new Map<IPFamily, FamilySnapshots>();

  private readonly onWarning: ((w: ObjectWarning) => void) | undefined;

  constructor(opts: ProxyModelOptions) {
    this.onWarning = opts.onWarning;
    if (typeof opts.nodeName !== 'string') throw new Error('ProxyModel: nodeName must be a string');
    const families = opts.families ?? ['IPv4', 'IPv6'];
    if (families.length === 0 || families.some((f) => f !== 'IPv4' && f !== 'IPv6')) {
      throw new Error(`ProxyModel: invalid families ${JSON.stringify(families)}`);
    }
    this.nodeName = opts.nodeName;
    this.families = [...new Set(families)];
    this.nodeInfo = emptyNodeInfo(opts.nodeName);
    for (const f of this.families) this.familyStates.set(f, new FamilySnapshots(f));
  }

  apply(event: SourceEvent): void {
    try {
      if (!isRecord(event) || !isRecord(event.object)) {
        this.countInvalid('Event', 'invalid-event', '', 'event or object is not an object');
        return;
      }
      if (event.type !== 'ADDED' && event.type !== 'MODIFIED' && event.type !== 'DELETED') {
        this.countInvalid('Event', 'invalid-event', '', `type ${clip(event.type)}`);
        return;
      }
      switch (event.kind) {
        case 'Service':
          this.applyService(event);
          return;
        case 'EndpointSlice':
          this.applySlice(event);
          return;
        case 'Node':
          this.applyNode(event);
          return;
        default:
          this.countInvalid('Event', 'invalid-event', '', `kind ${clip((event as { kind?: unknown }).kind)}`);
      }
    } catch (err) {
      // A bug here must not take the proxy down; the object is skipped like bad input.
      this.countInvalid('Event', 'internal-error', '', err instanceof Error ? err.message : String(err));
    }
  }

  /** Marks every family's next snapshot as full (the consumer must resync everything). */
  markFull(family?: IPFamily): void {
    for (const [f, fs] of this.familyStates) if (family === undefined || f === family) fs.markFull();
  }

  node(): NodeInfo {
    return this.nodeInfo;
  }

  /**
   * Services with changes not yet handed out in a snapshot (the most behind family; only
   * `families` when given, so families nobody takes snapshots of do not count).
   */
  pendingChanges(families?: readonly IPFamily[]): { services: number; endpoints: number } {
    let services = 0;
    let endpoints = 0;
    for (const [family, fs] of this.familyStates) {
      if (families !== undefined && !families.includes(family)) continue;
      const pending = fs.pending();
      services = Math.max(services, pending.services);
      endpoints = Math.max(endpoints, pending.endpoints);
    }
    return { services, endpoints };
  }

  snapshot(family: IPFamily): Snapshot {
    const fs = this.familyStates.get(family);
    if (fs === undefined) throw new Error(`ProxyModel: family ${family} is not tracked`);
    this.resolveConflicts();
    return fs.snapshot({
      nodeName: this.nodeName,
      node: this.nodeInfo,
      services: this.conflicts.effective,
      slicesByService: this.slicesByService,
    });
  }

  private markService(serviceKey: string): void {
    for (const fs of this.familyStates.values()) fs.serviceChanged(serviceKey);
    this.conflictsPending.add(serviceKey);
  }

  // A change to one Service can win or lose a claim for another: every Service whose
  // programmable form changed is marked, whoever caused it. A standing conflict is logged once.
  private resolveConflicts(): void {
    if (this.conflictsPending.size === 0) return;
    const { previous, conflicts, before } = this.conflicts.update(this.services, this.conflictsPending);
    this.conflictsPending.clear();
    for (const [key, was] of previous) {
      const now = this.conflicts.effective.get(key);
      if (was === now || (was !== undefined && now !== undefined && parsedServiceEqual(was, now))) continue;
      for (const fs of this.familyStates.values()) fs.serviceChanged(key);
    }
    const id = (c: Conflict): string => `${c.service}|${c.reason}|${c.detail}`;
    const reported = new Set(before.map(id));
    for (const c of conflicts) {
      if (reported.has(id(c))) continue;
      const k = `Service/${c.reason}`;
      this.droppedFields.set(k, (this.droppedFields.get(k) ?? 0) + 1);
      log.warn('Ignoring a claim of a Service that another, older Service holds', { object: c.service, reason: c.reason, detail: c.detail });
    }
  }

  private markEndpoints(serviceKey: string, family: IPFamily): void {
    this.familyStates.get(family)?.endpointsChanged(serviceKey);
  }

  private applyService(event: SourceEvent): void {
    if (event.type === 'DELETED') {
      const meta = metaKey(event.object);
      if (meta === null) {
        this.countInvalid('Service', 'invalid-metadata', '', 'deleted object without namespace/name');
        return;
      }
      const key = `${meta.namespace}/${meta.name}`;
      if (this.services.delete(key)) this.markService(key);
      return;
    }
    const r = parseService(event.object);
    if (r.status === 'invalid') {
      this.countInvalid('Service', r.reason, r.key, r.detail, this.services.has(r.key));
      return;
    }
    if (r.status === 'skipped') {
      log.v(3, 'Skipping service', { service: r.key, reason: r.reason });
      if (this.services.delete(r.key)) this.markService(r.key);
      return;
    }
    this.countProblems('Service', r.service.key, r.problems);
    const prev = this.services.get(r.service.key);
    if (prev !== undefined && parsedServiceEqual(prev, r.service)) return;
    this.services.set(r.service.key, r.service);
    if (this.onWarning) {
      const uid = event.object.metadata?.uid;
      for (const p of r.problems) {
        const reason = EVENT_REASONS[p.reason];
        if (reason === undefined) continue;
        const w = { kind: 'Service' as const, namespace: r.service.namespace, name: r.service.name, reason, message: p.detail };
        this.onWarning(typeof uid === 'string' ? { ...w, uid } : w);
      }
    }
    this.markService(r.service.key);
  }

  private removeSlice(sliceKey: string): void {
    const prev = this.slices.get(sliceKey);
    if (prev === undefined) return;
    this.slices.delete(sliceKey);
    const bySlice = this.slicesByService.get(prev.serviceKey);
    bySlice?.delete(sliceKey);
    if (bySlice !== undefined && bySlice.size === 0) this.slicesByService.delete(prev.serviceKey);
    this.markEndpoints(prev.serviceKey, prev.family);
  }

  private applySlice(event: SourceEvent): void {
    if (event.type === 'DELETED') {
      const meta = metaKey(event.object);
      if (meta === null) {
        this.countInvalid('EndpointSlice', 'invalid-metadata', '', 'deleted object without namespace/name');
        return;
      }
      this.removeSlice(`${meta.namespace}/${meta.name}`);
      return;
    }
    const r = parseEndpointSlice(event.object);
    if (r.status === 'invalid') {
      this.countInvalid('EndpointSlice', r.reason, r.key, r.detail, this.slices.has(r.key));
      return;
    }
    if (r.status === 'ignored') {
      log.v(4, 'Ignoring EndpointSlice', { endpointSlice: r.key, reason: r.reason });
      this.removeSlice(r.key);
      return;
    }
    const slice = r.slice;
    this.countProblems('EndpointSlice', slice.key, r.problems);
    const prev = this.slices.get(slice.key);
    if (prev !== undefined && parsedSliceEqual(prev, slice)) return;
    // Removing first also handles a slice that moved to another service or family.
    this.removeSlice(slice.key);
    const kept = withPortEndpoints(slice, this.nodeName);
    this.slices.set(kept.key, kept);
    let bySlice = this.slicesByService.get(kept.serviceKey);
    if (bySlice === undefined) {
      bySlice = new Map();
      this.slicesByService.set(kept.serviceKey, bySlice);
    }
    bySlice.set(kept.key, kept);
    this.markEndpoints(kept.serviceKey, kept.family);
  }

  private applyNode(event: SourceEvent): void {
    const meta = isRecord(event.object.metadata) ? event.object.metadata : {};
    if (meta.name !== this.nodeName) {
      log.v(4, 'Ignoring event for another node', { node: clip(meta.name) });
      return;
    }
    if (event.type === 'DELETED') {
      // Keep the last known topology: rules must not change because the object vanished.
      log.warn('Own Node object was deleted; keeping its last known state', { node: this.nodeName });
      return;
    }
    const { info, problems } = parseNode(event.object, this.nodeName);
    this.countProblems('Node', this.nodeName, problems);
    if (topologyChanged(this.nodeInfo, info)) {
      for (const fs of this.familyStates.values()) fs.topologyChanged();
    }
    this.nodeInfo = info;
  }

  private countInvalid(kind: string, reason: string, key: string, detail: string, keptPrevious = false): void {
    const k = `${kind}/${reason}`;
    this.invalidObjects.set(k, (this.invalidObjects.get(k) ?? 0) + 1);
    log.warn(`Skipping invalid ${kind}`, {
      // Keys are bounded (namespace and name at most 253 each): printed whole, never ambiguous.
      object: key,
      reason,
      detail: clip(detail, 200),
      ...(keptPrevious ? { kept: 'previous valid version' } : {}),
    });
  }

  private countProblems(kind: string, key: string, problems: FieldProblem[]): void {
    for (const p of problems) {
      const k = `${kind}/${p.reason}`;
      this.droppedFields.set(k, (this.droppedFields.get(k) ?? 0) + 1);
      log.warn(`Ignoring invalid field of ${kind}`, { object: key, reason: p.reason, detail: clip(p.detail, 200) });
    }
  }
}
