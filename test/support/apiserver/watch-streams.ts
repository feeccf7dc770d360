// The fake API server's open watches: each a stream of JSON-line events for the objects its
// namespace and selectors pick, starting from a resourceVersion, with bookmarks and a timeout.
import type http from 'node:http';
import type { KubeObject, ObjectKind } from '../../../src/model/k8s.js';
import type { HistoryEvent, ObjectStore } from './object-store.js';
import { KINDS, type Route } from './resources.js';
import { fieldsMatch, labelsMatch, parseFieldSelector, parseLabelSelector, type FieldRequirement, type LabelRequirement } from './selectors.js';
import { statusBody } from './status.js';

interface Watcher {
  kind: ObjectKind;
  namespace: string | undefined;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  res: http.ServerResponse;
  silent: boolean;
  timers: NodeJS.Timeout[];
}

export class WatchStreams {
  private readonly watchers = new Set<Watcher>();

  constructor(
    private readonly store: ObjectStore,
    private readonly bookmarkIntervalMs: number,
  ) {}

  /** Number of watch streams currently open. */
  get size(): number {
    return this.watchers.size;
  }

  /** Sends a stored change to every open watch of its kind. */
  broadcast(ev: HistoryEvent): void {
    for (const w of this.watchers) {
      if (w.kind === ev.kind) this.sendChange(w, ev);
    }
  }

  /** Destroys every open watch's connection. */
  closeAll(): void {
    for (const w of this.watchers) this.closeWatcher(w, false);
  }

  /** Open watches stop sending anything (events and bookmarks) without closing. */
  silenceAll(): void {
    for (const w of this.watchers) w.silent = true;
  }

  /** Open watches get an ERROR event with a 410 Status and end. */
  expireAll(): void {
    for (const w of this.watchers) {
      this.writeEvent(w, 'ERROR', statusBody(410, 'Expired', 'too old resource version'));
      this.closeWatcher(w, true);
    }
  }

  /** Writes a line that is not JSON into every open watch. */
  writeGarbage(): void {
    for (const w of this.watchers) {
      if (!w.silent) w.res.write('this is not {json\n');
    }
  }

  /** Answers a WATCH request: the stream stays open until the client, a timeout or a test ends it. */
  start(r: Route, q: Record<string, string>, res: http.ServerResponse): void {
    const labels = parseLabelSelector(q.labelSelector ?? '');
    const fields = parseFieldSelector(q.fieldSelector ?? '');
    const w: Watcher = { kind: r.kind, namespace: r.namespace, labels, fields, res, silent: false, timers: [] };
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const from = q.resourceVersion ?? '';
    if (from === '' || from === '0') {
      // No version: the current state as synthetic ADDED events, then live changes.
      for (const o of this.store.list(r.kind)) {
        if (this.visible(w, o)) this.writeEvent(w, 'ADDED', o);
      }
    } else {
      const want = Number(from);
      if (!Number.isInteger(want) || want < 0) {
        this.writeEvent(w, 'ERROR', statusBody(400, 'BadRequest', `invalid resourceVersion ${from}`));
        res.end();
        return;
      }
      if (want < this.store.compactedRv) {
        this.writeEvent(w, 'ERROR', statusBody(410, 'Expired', `too old resource version: ${want} (${this.store.compactedRv})`));
        res.end();
        return;
      }
      for (const ev of this.store.history) {
        if (ev.rv > want && ev.kind === r.kind) this.sendChange(w, ev);
      }
    }
    this.watchers.add(w);
    res.on('close', () => this.closeWatcher(w, false));
    const timeout = Number(q.timeoutSeconds ?? '0');
    if (timeout > 0) w.timers.push(setTimeout(() => this.closeWatcher(w, true), timeout * 1000));
    if (q.allowWatchBookmarks === 'true' || q.allowWatchBookmarks === '1') {
      w.timers.push(
        setInterval(() => {
          if (!w.silent) {
            this.writeEvent(w, 'BOOKMARK', {
              kind: r.kind,
              apiVersion: KINDS[r.kind].apiVersion,
              metadata: { resourceVersion: String(this.store.rv) },
            });
          }
        }, this.bookmarkIntervalMs),
      );
    }
  }

  private visible(w: Watcher, o: KubeObject | undefined): boolean {
    if (!o) return false;
    if (w.namespace !== undefined && o.metadata?.namespace !== w.namespace) return false;
    return labelsMatch(w.labels, o) && fieldsMatch(w.fields, o);
  }

  // An object entering or leaving a watch's selector appears as ADDED or DELETED, like the real server.
  private sendChange(w: Watcher, ev: HistoryEvent): void {
    if (w.silent) return;
    const before = ev.type !== 'ADDED' && this.visible(w, ev.prev);
    const after = ev.type !== 'DELETED' && this.visible(w, ev.object);
    if (ev.type === 'DELETED') {
      if (before) this.writeEvent(w, 'DELETED', ev.object);
    } else if (before && after) this.writeEvent(w, 'MODIFIED', ev.object);
    else if (after) this.writeEvent(w, 'ADDED', ev.object);
    else if (before) this.writeEvent(w, 'DELETED', ev.object);
  }

  private writeEvent(w: Watcher, type: string, object: unknown): void {
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  private closeWatcher(w: Watcher, graceful: boolean): void {
    if (!this.watchers.delete(w)) return;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
    if (graceful) w.res.end();
    else w.res.destroy();
  }
}
