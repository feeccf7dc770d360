// The API server source: one list/watch reflector per kind (Services, EndpointSlices, the
// own Node). Each remembers what it has delivered so that a relist can be turned into the
// exact ADDED/MODIFIED/DELETED events the consumer missed, and so that connection trouble
// never loses state: it is logged and retried with backoff, forever.
import type { KubeObject, ObjectKind } from '../model/k8s.js';
import { log } from '../log.js';
import type { EventType, Source, SourceHandler } from './types.js';
import { ApiError, describe, responseError } from './api-errors.js';
import { Backoff } from './backoff.js';
import type { ApiRequester, KubeResponse } from './kubeclient.js';
import { listObjects, type ListRequest } from './list-pages.js';
import { objectKey, tombstone, type ListTarget } from './list-sync.js';
import { WatchDecoder, type WatchEvent } from './watch-decoder.js';

/** Objects that name a non-default proxy, or headless Services, are not ours. */
export const PROXY_LABEL_SELECTOR = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';

export interface ApiServerSourceOptions {
  client: ApiRequester;
  nodeName: string;
  /** Watches ask the server to end after this many seconds, jittered up to twice as long. Default 300. */
  minWatchTimeoutSeconds?: number;
  /** First retry delay after a failure, doubled per consecutive failure, with jitter. Default 800. */
  backoffInitialMs?: number;
  /** Retry delay ceiling. Default 30000. */
  backoffMaxMs?: number;
  /** A list, or a watch still waiting for its response headers, that receives nothing for this long is abandoned. Default 30000. */
  requestTimeoutMs?: number;
  /**
   * A watch that delivers nothing, not even a bookmark, for this long has stalled (a NAT or
   * load balancer on the path may have dropped it without a word): it is replaced and the
   * cache relisted. The API server sends watches that ask for them a bookmark about once a
   * minute, so the default, 75000, stays clear of healthy quiet watches.
   */
  watchStallTimeoutMs?: number;
  /** LIST page size. Default 500. */
  pageSize?: number;
}

interface ResourceSpec {
  kind: ObjectKind;
  apiVersion: string;
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export class ApiServerSource implements Source {
  private readonly reflectors: Reflector[] = [];
  private running: Promise<void>[] = [];
  private started = false;

  constructor(private readonly opts: ApiServerSourceOptions) {
    if (!opts.nodeName) throw new Error('ApiServerSource needs the node name');
  }

  async start(handler: SourceHandler): Promise<void> {
    if (this.started) throw new Error('ApiServerSource already started');
    this.started = true;
    const specs: ResourceSpec[] = [
      { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', labelSelector: PROXY_LABEL_SELECTOR },
      {
        kind: 'EndpointSlice',
        apiVersion: 'discovery.k8s.io/v1',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        labelSelector: PROXY_LABEL_SELECTOR,
      },
      { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', fieldSelector: `metadata.name=${this.opts.nodeName}` },
    ];
    for (const spec of specs) {
      const r = new Reflector(spec, this.opts, handler);
      this.reflectors.push(r);
      this.running.push(r.run());
    }
  }

  /** Wall-clock time (ms) each kind last received anything from the API server (data, events, bookmarks). */
  lastActivity(): Map<ObjectKind, number> {
    return new Map(this.reflectors.map((r) => [r.kind, r.lastActivityMs]));
  }

  async stop(): Promise<void> {
    for (const r of this.reflectors) r.stop();
    await Promise.all(this.running);
    this.running = [];
  }
}

class Reflector implements ListTarget {
  /** Key → tombstone of each object delivered and not deleted. */
  readonly store = new Map<string, KubeObject>();
  private resourceVersion = '';
  private needList = true;
  private synced = false;
  /** The last failure was a 410: another one in a row waits like any other failure. */
  private lastGone = false;
  private stopped = false;
  /** Starts at creation, so a source that never hears anything shows its age. */
  lastActivityMs = Date.now();
  private current: AbortController | undefined;
  private wake: (() => void) | undefined;
  private readonly minWatchTimeout: number;
  private readonly backoff: Backoff;
  private readonly requestTimeoutMs: number;
  private readonly stallMs: number;
  private readonly listRequest: ListRequest;

  constructor(
    private readonly spec: ResourceSpec,
    private readonly opts: ApiServerSourceOptions,
    private readonly handler: SourceHandler,
  ) {
    this.minWatchTimeout = opts.minWatchTimeoutSeconds ?? 300;
    this.backoff = new Backoff({ initialMs: opts.backoffInitialMs ?? 800, maxMs: opts.backoffMaxMs ?? 30_000 });
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.stallMs = opts.watchStallTimeoutMs ?? 75_000;
    this.listRequest = {
      labelSelector: spec.labelSelector,
      fieldSelector: spec.fieldSelector,
      pageSize: opts.pageSize ?? 500,
      call: (query, what, consume) => this.call(query, what, consume),
      stopped: () => this.stopped,
    };
  }

  get kind(): ObjectKind {
    return this.spec.kind;
  }

  stop(): void {
    this.stopped = true;
    this.current?.abort();
    this.wake?.();
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.needList) await this.list();
        await this.watch();
      } catch (err) {
        if (this.stopped) break;
        await this.sleep(this.failed(err));
      }
    }
  }

  // Logs a failure and returns how long to wait before the next attempt.
  private failed(err: unknown): number {
    const e = err instanceof ApiError ? err : new ApiError(describe(err));
    if (e.stalled) {
      this.needList = true;
      this.lastGone = false;
      // Pooled idle connections went through the same dead path: start on fresh ones.
      this.opts.client.resetConnections?.();
      log.warn('Watch stalled: nothing received, not even a bookmark; replacing it and relisting', {
        kind: this.spec.kind,
        silentForSeconds: Math.round(this.stallMs / 1000),
      });
      return 0;
    }
    if (e.gone) {
      this.needList = true;
      // Routine after etcd compaction or an API server restart, so not a warning.
      log.info('Resource version expired, relisting', { kind: this.spec.kind, reason: e.message });
      // Waiting would only delay catching up: relist at once, unless relists keep answering 410.
      if (!this.lastGone) {
        this.lastGone = true;
        return 0;
      }
    } else {
      this.lastGone = false;
    }
    const delay = this.backoff.next(e.retryAfterMs);
    if (!e.gone) {
      log.warn(this.needList ? 'List failed, will retry' : 'Watch failed, will resume', {
        kind: this.spec.kind,
        reason: e.message,
        retryInMs: Math.round(delay),
        failures: this.backoff.consecutiveFailures,
      });
    }
    return delay;
  }

  private succeeded(): void {
    this.backoff.reset();
    this.lastGone = false;
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      this.wake = done;
      function done(): void {
        clearTimeout(t);
        resolve();
      }
    }).then(() => {
      this.wake = undefined;
    });
  }

  // One request with an inactivity timer: `requestTimeoutMs` until the headers arrive and
  // between chunks of a list; `stallMs` between chunks of a watch, whose expiry means a stall.
  private async call<T>(
    query: Record<string, string | undefined>,
    what: string,
    consume: (res: KubeResponse, touch: () => void) => Promise<T>,
    watching = false,
  ): Promise<T> {
    const ac = new AbortController();
    this.current = ac;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number, error: () => ApiError): void => {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(error()), ms);
    };
    const touch = (): void => {
      this.lastActivityMs = Date.now();
      if (watching) arm(this.stallMs, () => new ApiError(`${what}: stalled, nothing received for ${this.stallMs}ms`, undefined, false, undefined, true));
      else arm(this.requestTimeoutMs, () => new ApiError(`${what}: no data from the API server for ${this.requestTimeoutMs}ms`));
    };
    arm(this.requestTimeoutMs, () => new ApiError(`${what}: no response from the API server within ${this.requestTimeoutMs}ms`));
    try {
      const res = await this.opts.client.request(this.spec.path, {
        query,
        signal: ac.signal,
        idleTimeoutMs: 0,
      });
      touch();
      if (res.status !== 200) throw await responseError(res, what);
      return await consume(res, touch);
    } catch (err) {
      if (ac.signal.aborted && ac.signal.reason instanceof ApiError) throw ac.signal.reason;
      throw err instanceof ApiError ? err : new ApiError(`${what}: ${describe(err)}`);
    } finally {
      clearTimeout(timer);
      // Ends the connection if the body was left unread (error paths).
      ac.abort();
      if (this.current === ac) this.current = undefined;
    }
  }

  private async list(): Promise<void> {
    const listed = await listObjects(this, this.listRequest, !this.synced);
    if (listed === undefined) return;
    const { resourceVersion, objects, changed } = listed;
    this.resourceVersion = resourceVersion;
    this.needList = false;
    this.succeeded();
    log.v(2, 'Listed', { kind: this.spec.kind, objects, changed, resourceVersion });
    if (!this.synced) {
      this.synced = true;
      try {
        this.handler.onSynced(this.spec.kind);
      } catch (err) {
        log.error('Source handler failed on sync', { kind: this.spec.kind, err: describe(err) });
      }
    }
  }

  private async watch(): Promise<void> {
    const timeoutSeconds = Math.max(1, Math.floor(this.minWatchTimeout * (1 + Math.random())));
    const query = {
      watch: 'true',
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
      labelSelector: this.spec.labelSelector,
      fieldSelector: this.spec.fieldSelector,
    };
    const started = Date.now();
    let events = 0;
    await this.call(query, `watch ${this.spec.kind}`, async (res, touch) => {
      const dec = new WatchDecoder(this.spec.kind, () => this.stopped, (ev) => {
        this.handleEvent(ev);
        events++;
        this.succeeded();
      });
      for await (const chunk of res.body) {
        touch();
        dec.write(chunk as Buffer);
      }
      const last = dec.end();
      if (last !== undefined) {
        this.handleEvent(last);
        events++;
      }
    }, true);
    // A watch the server closes at once without a word would otherwise be reopened in a tight loop.
    if (events === 0 && !this.stopped && Date.now() - started < (timeoutSeconds * 1000) / 2) {
      throw new ApiError(`watch ${this.spec.kind}: closed by the server before its timeout`);
    }
  }

  private handleEvent(ev: WatchEvent): void {
    const obj = ev.object;
    switch (ev.type) {
      case 'BOOKMARK': {
        const rv = obj.metadata?.resourceVersion;
        if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
        return;
      }
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        this.apply(ev.type, obj);
        return;
      default:
        log.warn('Skipping watch event of unknown type', { kind: this.spec.kind, type: ev.type });
    }
  }

  private apply(type: EventType, raw: KubeObject): void {
    const rv = raw.metadata?.resourceVersion;
    const key = objectKey(raw);
    if (!key) {
      log.warn('Skipping object without a name', { kind: this.spec.kind, type });
    } else if (type === 'DELETED') {
      if (this.store.delete(key)) this.emit('DELETED', this.complete(raw));
    } else {
      const o = this.complete(raw);
      const had = this.store.has(key);
      this.store.set(key, tombstone(o));
      this.emit(had ? 'MODIFIED' : 'ADDED', o);
    }
    if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
  }

  // List items arrive without kind/apiVersion; give every object both, whatever its route.
  // The object was just decoded and is ours: set in place rather than copied (20,000 copies
  // in a 10,000-service start).
  complete(o: KubeObject): KubeObject {
    o.kind = this.spec.kind;
    o.apiVersion = this.spec.apiVersion;
    return o;
  }

  emit(type: EventType, object: KubeObject): void {
    log.v(2, 'Received change', () => ({
      kind: this.spec.kind,
      type,
      namespace: object.metadata?.namespace,
      name: object.metadata?.name,
      resourceVersion: object.metadata?.resourceVersion,
    }));
    try {
      this.handler.onEvent({ kind: this.spec.kind, type, object });
    } catch (err) {
      log.error('Source handler failed on an event', { kind: this.spec.kind, type, err: describe(err) });
    }
  }
}
