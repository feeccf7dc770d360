// Posts core/v1 Events about objects the proxy refuses to program as asked, so that the
// owner sees why on `kubectl describe`, not only the node's log. Best effort: a failure is
// logged and dropped; posting never blocks or fails a sync.
import { log } from '../log.js';
import type { ObjectWarning } from '../model/tracker.js';
import type { ApiRequester } from './kubeclient.js';

export class EventRecorder {
  constructor(
    private readonly client: ApiRequester,
    private readonly nodeName: string,
  ) {}

  warn(w: ObjectWarning): void {
    void this.post(w);
  }

  private async post(w: ObjectWarning): Promise<void> {
    const now = new Date().toISOString();
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${w.name}.`, namespace: w.namespace },
      involvedObject: { apiVersion: 'v1', kind: w.kind, namespace: w.namespace, name: w.name, ...(w.uid ? { uid: w.uid } : {}) },
      reason: w.reason,
      message: w.message,
      type: 'Warning',
      source: { component: 'kube-proxy', host: this.nodeName },
      reportingComponent: 'kube-proxy',
      reportingInstance: this.nodeName,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      const res = await this.client.request(`/api/v1/namespaces/${encodeURIComponent(w.namespace)}/events`, {
        method: 'POST',
        body: event,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      await res.body.text().catch(() => '');
      if (res.status !== 201 && res.status !== 200) log.warn('posting an Event failed', { object: `${w.namespace}/${w.name}`, status: res.status });
    } catch (err) {
      log.warn('posting an Event failed', { object: `${w.namespace}/${w.name}`, error: err instanceof Error ? err.message : String(err) });
    }
  }
}
