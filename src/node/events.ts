// Events about this node (events.k8s.io/v1), as upstream kube-proxy records them: regarding the
// own Node, in the default namespace (a Node has none), from reporting controller kube-proxy.
// An event that repeats within the series window is not created again: the first one gets a
// series (count, last observed time) patched onto it.
import { log } from '../log.js';

/** What the recorder needs from an API client (KubeClient has it). */
export interface EventApi {
  request(
    path: string,
    opts: { method: string; body: unknown; contentType?: string },
  ): Promise<{ status: number; body: { text(): Promise<string> } }>;
}

export type EventType = 'Normal' | 'Warning';

const EVENTS_PATH = '/apis/events.k8s.io/v1/namespaces/default/events';
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
}

export class NodeEventRecorder {
  private readonly sent = new Map<string, Sent>();

  constructor(
    private readonly api: EventApi,
    private readonly nodeName: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records an event; failures are logged, never thrown (events are advisory). */
  async record(type: EventType, reason: string, action: string, note: string): Promise<void> {
    const key = [type, reason, action, note].join('\0');
    const at = this.now();
    const prev = this.sent.get(key);
    try {
      if (prev && at - prev.firstAt < SERIES_WINDOW_MS) {
        prev.count++;
        const patch = { series: { count: prev.count, lastObservedTime: microTime(new Date(at)) } };
        await this.send('PATCH', `${EVENTS_PATH}/${prev.name}`, patch, 'application/merge-patch+json');
        return;
      }
      const name = `${this.nodeName}.${(BigInt(at) * 1_000_000n).toString(16)}`;
      await this.send('POST', EVENTS_PATH, this.event(name, type, reason, action, note, at));
      this.sent.set(key, { name, count: 1, firstAt: at });
    } catch (e) {
      log.warn('recording an event failed', { reason, error: (e as Error).message });
    }
  }

  private event(name: string, type: EventType, reason: string, action: string, note: string, at: number): Record<string, unknown> {
    return {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace: 'default' },
      eventTime: microTime(new Date(at)),
      reportingController: 'kube-proxy',
      reportingInstance: `kube-proxy-${this.nodeName}`,
      action,
      reason,
      regarding: { kind: 'Node', apiVersion: 'v1', name: this.nodeName, uid: this.nodeName },
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
