// Events (events.k8s.io/v1), as upstream kube-proxy records them, from reporting controller
// kube-proxy: about the own Node (in the default namespace, a Node has none), and about objects
// the proxy refuses to program as asked (a Service failed closed), so that the owner sees why on
// `kubectl describe`, not only in the node's log. An event that repeats within the series window
// is not created again: the first one gets a series (count, last observed time) patched onto it.
import { log } from '../log.js';
import type { ObjectWarning } from '../model/tracker.js';

/** What the recorder needs from an API client (KubeClient has it). */
export interface EventApi {
  request(
    path: string,
    opts: { method: string; body: unknown; contentType?: string },
  ): Promise<{ status: number; body: { text(): Promise<string> } }>;
}

export type EventType = 'Normal' | 'Warning';

const eventsPath = (namespace: string): string => `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`;

/** The object an event is about. */
export interface Regarding {
  kind: string;
  apiVersion: string;
  namespace?: string;
  name: string;
  uid?: string;
}
/** Upstream's events library groups repeats seen within 6 minutes into a series. */
export const SERIES_WINDOW_MS = 6 * 60 * 1000;

/** RFC 3339 with microseconds, as MicroTime is written. */
function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

interface Sent {
  name: string;
  count: number;
  firstAt: number;
  /** Settles once the Event exists (rejects when creating it failed). */
  created: Promise<void>;
}

export class EventRecorder {
  private readonly sent = new Map<string, Sent>();

  constructor(
    private readonly api: EventApi,
    private readonly nodeName: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** A Warning about an object the model would not program as asked (fire and forget). */
  warn(w: ObjectWarning): void {
    const regarding: Regarding = { kind: w.kind, apiVersion: 'v1', namespace: w.namespace, name: w.name, ...(w.uid ? { uid: w.uid } : {}) };
    void this.record('Warning', w.reason, 'Programming', w.message, regarding);
  }

  /**
   * Records an event about `regarding` (default: the own Node); failures are logged, never
   * thrown (events are advisory).
   */
  async record(type: EventType, reason: string, action: string, note: string, regarding?: Regarding): Promise<void> {
    const about: Regarding = regarding ?? { kind: 'Node', apiVersion: 'v1', name: this.nodeName, uid: this.nodeName };
    const namespace = about.namespace ?? 'default';
    const key = [type, reason, action, note, about.kind, namespace, about.name].join('\0');
    const at = this.now();
    const prev = this.sent.get(key);
    try {
      if (prev && at - prev.firstAt < SERIES_WINDOW_MS) {
        prev.count++;
        const patch = { series: { count: prev.count, lastObservedTime: microTime(new Date(at)) } };
        // A repeat that comes while the Event is still being created patches it once it exists.
        await prev.created;
        await this.send('PATCH', `${eventsPath(namespace)}/${prev.name}`, patch, 'application/merge-patch+json');
        return;
      }
      const name = `${about.name}.${(BigInt(at) * 1_000_000n).toString(16)}`;
      const created = this.send('POST', eventsPath(namespace), this.event(name, namespace, about, type, reason, action, note, at));
      const entry = { name, count: 1, firstAt: at, created };
      this.sent.set(key, entry);
      await created.catch((e: unknown) => {
        if (this.sent.get(key) === entry) this.sent.delete(key);
        throw e;
      });
    } catch (e) {
      log.warn('recording an event failed', { reason, error: (e as Error).message });
    }
  }

  private event(name: string, namespace: string, regarding: Regarding, type: EventType, reason: string, action: string, note: string, at: number): Record<string, unknown> {
    return {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: microTime(new Date(at)),
      reportingController: 'kube-proxy',
      reportingInstance: `kube-proxy-${this.nodeName}`,
      action,
      reason,
      regarding,
      note,
      type,
    };
  }

  private async send(method: string, path: string, body: unknown, contentType?: string): Promise<void> {
    const res = await this.api.request(path, { method, body, ...(contentType ? { contentType } : {}) });
    const text = await res.body.text();
    if (res.status >= 300) throw new Error(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
}
