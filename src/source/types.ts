import type { ObjectKind, SourceEvent } from '../model/k8s.js';

export type { EventType, SourceEvent } from '../model/k8s.js';

export interface SourceHandler {
  /** Called strictly in order, one event at a time. */
  onEvent(event: SourceEvent): void;
  /** Called once per kind when its initial list has been delivered. */
  onSynced(kind: ObjectKind): void;
}

/**
 * Where Services, EndpointSlices and the own Node come from: the API server reflector
 * (src/source/apiserver.ts) or a manifests directory (src/source/manifests.ts).
 */
export interface Source {
  start(handler: SourceHandler): Promise<void>;
  stop(): Promise<void>;
}
