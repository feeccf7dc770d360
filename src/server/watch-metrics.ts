// How fresh the API server connection is, per watched resource: a number that climbs past a
// minute means the watch is stalled (the API server sends bookmarks about once a minute).
import { Gauge, type Registry } from 'prom-client';
import type { ObjectKind } from '../model/k8s.js';

/** Adds kubeproxy_watch_seconds_since_last_event{resource} to `registry`, read at scrape time. */
export function registerWatchFreshness(
  registry: Registry,
  source: { lastActivity(): Map<ObjectKind, number> },
  now: () => number = Date.now,
): void {
  new Gauge({
    name: 'kubeproxy_watch_seconds_since_last_event',
    help: 'Seconds since anything (object, event or bookmark) arrived from the API server, by resource',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      for (const [kind, ms] of source.lastActivity()) this.set({ resource: kind }, Math.max(0, (now() - ms) / 1000));
    },
  });
}
