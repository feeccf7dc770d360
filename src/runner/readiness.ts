// Which object kinds have delivered their initial list. The first sync must wait for
// Services and EndpointSlices: syncing earlier would program a partial view and drop
// traffic to services not listed yet. The Node is optional (topology works without it).
import type { ObjectKind } from '../model/k8s.js';
import type { SourceHandler } from '../source/types.js';

const REQUIRED: readonly ObjectKind[] = ['Service', 'EndpointSlice'];

export class Readiness {
  private readonly synced = new Set<ObjectKind>();
  private readonly callbacks: Array<() => void> = [];

  constructor(private readonly required: readonly ObjectKind[] = REQUIRED) {}

  markSynced(kind: ObjectKind): void {
    const wasReady = this.ready();
    this.synced.add(kind);
    if (!wasReady && this.ready()) {
      for (const cb of this.callbacks.splice(0)) cb();
    }
  }

  isSynced(kind: ObjectKind): boolean {
    return this.synced.has(kind);
  }

  syncedKinds(): ObjectKind[] {
    return [...this.synced];
  }

  /** True once every required kind has synced. */
  ready(): boolean {
    return this.required.every((k) => this.synced.has(k));
  }

  /** Calls cb once when ready (right away if already ready). */
  onReady(cb: () => void): void {
    if (this.ready()) cb();
    else this.callbacks.push(cb);
  }

  whenReady(): Promise<void> {
    return new Promise((resolve) => this.onReady(resolve));
  }

  /** A handler that records onSynced here before passing everything on to inner. */
  track(inner: SourceHandler): SourceHandler {
    return {
      onEvent: (event) => inner.onEvent(event),
      onSynced: (kind) => {
        inner.onSynced(kind);
        this.markSynced(kind);
      },
    };
  }
}
