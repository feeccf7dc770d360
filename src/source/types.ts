import type { KubeObject, ObjectKind } from '../model/k8s.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface SourceEvent {
  kind: ObjectKind;
  type: EventType;
  /** For DELETED: the last known state of the object. */
  object: KubeObject;
}

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
