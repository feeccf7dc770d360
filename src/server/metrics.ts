// Prometheus metrics with upstream kube-proxy's names, types, labels and buckets (subsystem
// kubeproxy), plus this proxy's own (invalid objects, repairs). Where upstream labels a metric
// with ip_family, the label is the family the figure is about, so a dual-stack node's IPv4 and
// IPv6 syncs are not mixed.
// Served on metricsBindAddress at /metrics, with /healthz and /proxyMode as upstream.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets, linearBuckets } from 'prom-client';
import { modeDescriptor } from '../backend/modes.js';
import type { IPFamily, Snapshot } from '../model/types.js';
import type { CarriedTraffic } from '../backend/types.js';
import type { SourceEvent } from '../source/types.js';
import { log } from '../log.js';
import { notFound, serve, type Handler, type RunningServer } from './http.js';
import type { HealthCounters } from './health.js';

/** EndpointSlice annotation: when the endpoints controller saw the change behind this version. */
export const LAST_CHANGE_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);
// 0 (upstream's bucket merge starts with it), 0.25 s and 0.5 s, then every second to 59 s,
// every 5 s to 115 s, every 30 s to 5 min.
const PROGRAMMING_BUCKETS = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

/** Live state the gauges read at scrape time; every part is optional. */
export interface MetricsSources {
  runner?: { readonly lastQueuedMs: number };
  model?: {
    pendingChanges(): { services: number; endpoints: number };
    readonly invalidObjects: ReadonlyMap<string, number>;
  };
  /** The snapshots of the last sync. */
  snapshots?: () => Iterable<Snapshot>;
  /** The IP families the proxy syncs (their per-family series are served from 0). */
  families?: () => Iterable<IPFamily>;
  /** What each family's in-process proxy carried (userspace mode, localhost NodePorts). */
  carriedTraffic?: () => Iterable<{ family: IPFamily; traffic: CarriedTraffic }>;
}

export interface ProxyMetricsOptions {
  /** The effective proxy mode, for /proxyMode. */
  mode: string;
  sources?: MetricsSources;
  /** Node.js process metrics (default true). */
  processMetrics?: boolean;
  /** Wall clock in ms, for timestamps and programming latency. */
  now?: () => number;
}

/** Services whose Local policy leaves them without usable endpoints, as upstream counts them. */
export function noLocalEndpoints(snapshot: Snapshot): { internal: number; external: number } {
  let internal = 0;
  let external = 0;
  for (const s of snapshot.services.values()) {
    // No endpoints at all is a reject, not a Local-policy drop.
    if (!s.hasAnyEndpoints) continue;
    if (s.info.internalPolicyLocal && s.localEndpoints.length === 0) internal++;
    if (s.info.externalPolicyLocal && s.localEndpoints.length === 0) external++;
  }
  return { internal, external };
}

/** The IP family of an EndpointSlice's addresses; FQDN slices have none. */
function sliceFamily(e: SourceEvent): IPFamily | undefined {
  const type = (e.object as { addressType?: unknown } | undefined)?.addressType;
  return type === 'IPv4' || type === 'IPv6' ? type : undefined;
}

/**
 * The registry and the recording side. Its `event`, `syncStarted`, `familySynced` and
 * `backendFailed` methods are what a Proxy observer calls; `healthz`/`livez` count health
 * server answers.
 */
export class ProxyMetrics implements HealthCounters {
  readonly registry = new Registry();
  private currentMode: string;
  private readonly now: () => number;
  private readonly startedMs: number;
  private readonly families: () => Iterable<IPFamily>;
  /** Trigger times (and the slice's family) of endpoint changes not yet programmed. */
  private pendingTriggers: Array<{ t: number; family: IPFamily }> = [];

  private readonly syncDuration: Histogram<'ip_family'>;
  private readonly fullSyncDuration: Histogram<'ip_family'>;
  private readonly partialSyncDuration: Histogram<'ip_family'>;
  private readonly programming: Histogram<'ip_family'>;
  private readonly lastSync: Gauge<'ip_family'>;
  private readonly endpointChanges: Counter;
  private readonly serviceChanges: Counter;
  /** Each mode's failed-sync counter, when upstream has one for it (a reload may switch modes). */
  private readonly syncFailures = new Map<string, Counter<'ip_family'> | undefined>();
  private readonly conntrackDeleted: Counter<'ip_family'>;
  private readonly conntrackDuration: Histogram<'ip_family'>;
  private readonly healthzTotal: Counter<'code'>;
  private readonly repairs: Counter<'mode'>;
  private readonly livezTotal: Counter<'code'>;

  constructor(opts: ProxyMetricsOptions) {
    this.currentMode = opts.mode;
    this.now = opts.now ?? Date.now;
    this.startedMs = this.now();
    const registers = [this.registry];
    const src = opts.sources ?? {};
    const families = (this.families = src.families ?? ((): IPFamily[] => []));
    const histogram = (name: string, help: string, buckets: number[]): Histogram<'ip_family'> =>
      new Histogram({ name: `kubeproxy_${name}`, help, buckets, labelNames: ['ip_family'], registers });
    const counter = (name: string, help: string): Counter => new Counter({ name: `kubeproxy_${name}`, help, registers });

    this.syncDuration = histogram('sync_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds', SYNC_BUCKETS);
    this.fullSyncDuration = histogram('sync_full_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for full resyncs', SYNC_BUCKETS);
    this.partialSyncDuration = histogram('sync_partial_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for partial resyncs', SYNC_BUCKETS);
    this.programming = histogram('network_programming_duration_seconds', 'In Cluster Network Programming Latency in seconds', PROGRAMMING_BUCKETS);
    this.lastSync = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      labelNames: ['ip_family'],
      registers,
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      labelNames: ['ip_family'],
      registers,
      collect() {
        // One runner syncs every family: a queued sync is queued for each.
        if (src.runner) for (const f of families()) this.set({ ip_family: f }, src.runner.lastQueuedMs / 1000);
      },
    });
    const carried = src.carriedTraffic ?? ((): Array<{ family: IPFamily; traffic: CarriedTraffic }> => []);
    const carriedLabels = ['ip_family', 'purpose'] as const;
    const fromCarried = (field: 'accepted' | 'refused' | 'activeConnections' | 'udpSessions') =>
      function (this: Gauge<'ip_family' | 'purpose'> | Counter<'ip_family' | 'purpose'>): void {
        this.reset();
        for (const { family, traffic } of carried()) {
          const labels = { ip_family: family, purpose: traffic.purpose };
          if (this instanceof Gauge) this.set(labels, traffic[field]);
          else this.inc(labels, traffic[field]);
        }
      };
    new Counter({ name: 'kubeproxy_inprocess_proxy_connections_total', help: 'TCP connections and UDP sessions the proxy process carried itself', labelNames: carriedLabels, registers, collect: fromCarried('accepted') });
    new Counter({ name: 'kubeproxy_inprocess_proxy_refused_total', help: 'Clients the proxy process turned away after every endpoint it tried failed', labelNames: carriedLabels, registers, collect: fromCarried('refused') });
    new Gauge({ name: 'kubeproxy_inprocess_proxy_active_connections', help: 'TCP connections the proxy process carries now', labelNames: carriedLabels, registers, collect: fromCarried('activeConnections') });
    new Gauge({ name: 'kubeproxy_inprocess_proxy_udp_sessions', help: 'UDP sessions the proxy process carries now', labelNames: carriedLabels, registers, collect: fromCarried('udpSessions') });
    new Counter({
      name: 'kubeproxy_inprocess_proxy_bytes_total',
      help: 'Bytes the proxy process carried, from clients (in) and back to them (out)',
      labelNames: [...carriedLabels, 'direction'],
      registers,
      collect() {
        this.reset();
        for (const { family, traffic } of carried()) {
          this.inc({ ip_family: family, purpose: traffic.purpose, direction: 'in' }, traffic.bytesIn);
          this.inc({ ip_family: family, purpose: traffic.purpose, direction: 'out' }, traffic.bytesOut);
        }
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      help: 'Pending proxy rules Endpoint changes',
      registers,
      collect() {
        if (src.model) this.set(src.model.pendingChanges().endpoints);
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
      help: 'Pending proxy rules Service changes',
      registers,
      collect() {
        if (src.model) this.set(src.model.pendingChanges().services);
      },
    });
    this.endpointChanges = counter('sync_proxy_rules_endpoint_changes_total', 'Cumulative proxy rules Endpoint changes');
    this.serviceChanges = counter('sync_proxy_rules_service_changes_total', 'Cumulative proxy rules Service changes');
    this.addFailureCounter(opts.mode);
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      help: 'Number of services with a Local traffic policy and no endpoints',
      labelNames: ['ip_family', 'traffic_policy'],
      registers,
      collect() {
        if (!src.snapshots) return;
        this.reset();
        for (const snap of src.snapshots()) {
          const n = noLocalEndpoints(snap);
          this.set({ ip_family: snap.family, traffic_policy: 'internal' }, n.internal);
          this.set({ ip_family: snap.family, traffic_policy: 'external' }, n.external);
        }
      },
    });
    this.healthzTotal = new Counter({ name: 'kubeproxy_proxy_healthz_total', help: 'Cumulative proxy healthz HTTP status', labelNames: ['code'], registers });
    this.livezTotal = new Counter({ name: 'kubeproxy_proxy_livez_total', help: 'Cumulative proxy livez HTTP status', labelNames: ['code'], registers });
    new Counter({
      name: 'kubeproxy_invalid_objects_total',
      help: 'API objects skipped as invalid, by kind and reason',
      labelNames: ['kind', 'reason'],
      registers,
      collect() {
        if (!src.model) return;
        this.reset();
        for (const [key, count] of src.model.invalidObjects) {
          const slash = key.indexOf('/');
          this.inc({ kind: key.slice(0, slash), reason: key.slice(slash + 1) }, count);
        }
      },
    });
    this.repairs = new Counter({
      name: 'kubeproxy_sync_proxy_rules_repairs_total',
      help: 'Kernel rules (elements, rules, chains, sets, tables) found differing from the rules last written and rewritten, by mode',
      labelNames: ['mode'],
      registers,
    });
    this.repairs.inc({ mode: opts.mode }, 0);
    this.conntrackDeleted = new Counter({
      name: 'kubeproxy_conntrack_reconciler_deleted_entries_total',
      help: 'Cumulative conntrack flows deleted by conntrack reconciler',
      labelNames: ['ip_family'],
      registers,
      collect() {
        for (const f of families()) this.inc({ ip_family: f }, 0);
      },
    });
    this.conntrackDuration = histogram('conntrack_reconciler_sync_duration_seconds', 'How long a conntrack reconciler pass over one IP family took', SYNC_BUCKETS);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A source event: counts changes and remembers when the endpoint change was triggered. */
  event(e: SourceEvent): void {
    if (e.kind === 'Service') this.serviceChanges.inc();
    if (e.kind !== 'EndpointSlice') return;
    this.endpointChanges.inc();
    const raw = e.object?.metadata?.annotations?.[LAST_CHANGE_TRIGGER_TIME];
    const t = typeof raw === 'string' ? Date.parse(raw) : NaN;
    const family = sliceFamily(e);
    // As upstream, changes from before this proxy started (the initial list) are not counted.
    if (family && Number.isFinite(t) && t > this.startedMs) this.pendingTriggers.push({ t, family });
  }

  /**
   * A sync is taking its snapshots: the endpoint changes seen so far are in it. Returns the
   * sync's completion: on success they are programmed; on failure they wait for the retry.
   */
  syncStarted(): (ok: boolean) => void {
    const taken = this.pendingTriggers;
    this.pendingTriggers = [];
    return (ok) => {
      if (!ok) {
        this.pendingTriggers = taken.concat(this.pendingTriggers);
        return;
      }
      const now = this.now();
      // A trigger time ahead of this clock is skew between nodes, not latency.
      for (const { t, family } of taken) if (now >= t) this.programming.observe({ ip_family: family }, (now - t) / 1000);
    };
  }

  /** One family's sync attempt took `seconds` (failed ones too, as upstream); full is null when it failed. */
  familySynced(family: IPFamily, full: boolean | null, seconds: number): void {
    this.syncDuration.observe({ ip_family: family }, seconds);
    if (full === null) return;
    this.lastSync.set({ ip_family: family }, this.now() / 1000);
    (full ? this.fullSyncDuration : this.partialSyncDuration).observe({ ip_family: family }, seconds);
  }

  /** One conntrack reconciler pass over a family's table took `seconds` and deleted `deleted` entries. */
  conntrackReconciled(family: IPFamily, deleted: number, seconds: number): void {
    this.conntrackDeleted.inc({ ip_family: family }, deleted);
    this.conntrackDuration.observe({ ip_family: family }, seconds);
  }

  /** The effective proxy mode, for /proxyMode. */
  get mode(): string {
    return this.currentMode;
  }

  /** The configuration now runs another mode: /proxyMode and the mode's own counters follow. */
  setMode(mode: string): void {
    this.currentMode = mode;
    this.addFailureCounter(mode);
    this.repairs.inc({ mode }, 0);
  }

  private addFailureCounter(mode: string): void {
    if (this.syncFailures.has(mode)) return;
    const metric = modeDescriptor(mode)?.syncFailureMetric;
    const existing = metric && this.registry.getSingleMetric(metric.name);
    const families = this.families;
    const create = (): Counter<'ip_family'> =>
      new Counter({
        ...metric!,
        labelNames: ['ip_family'],
        registers: [this.registry],
        collect() {
          for (const f of families()) this.inc({ ip_family: f }, 0);
        },
      });
    this.syncFailures.set(mode, metric && ((existing as Counter<'ip_family'> | undefined) ?? create()));
  }

  /** A backend's sync threw; only the configured mode's backends count. */
  backendFailed(mode: string, family: IPFamily): void {
    if (mode === this.currentMode) this.syncFailures.get(mode)?.inc({ ip_family: family });
  }

  /** A backend's verification repaired `items` differing kernel rules. */
  kernelRepaired(mode: string, _family: IPFamily, items: number): void {
    this.repairs.inc({ mode }, items);
  }

  healthz(code: number): void {
    this.healthzTotal.inc({ code: String(code) });
  }

  livez(code: number): void {
    this.livezTotal.inc({ code: String(code) });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServerOptions {
  hardFail: boolean;
  retryMs?: number;
  /** More paths served on the same (local-only) address, e.g. /debug/* and /configz. */
  routes?: Record<string, Handler>;
}

/** /metrics (Prometheus text), /healthz ("ok") and /proxyMode on `address`. */
export function startMetricsServer(address: string, metrics: ProxyMetrics, opts: MetricsServerOptions): Promise<RunningServer> {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    const plain = (body: string): void => {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end(body);
    };
    const route = path !== undefined ? opts.routes?.[path] : undefined;
    if (route) route(req, res);
    else if (path === '/healthz') plain('ok');
    else if (path === '/proxyMode') plain(metrics.mode);
    else if (path === '/metrics') {
      metrics.text().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          log.error('collecting metrics failed', { error: err instanceof Error ? err.message : String(err) });
          res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
          res.end('collecting metrics failed\n');
        },
      );
    } else notFound(res);
  };
  const serveOpts = { name: 'metrics server', hardFail: opts.hardFail, ...(opts.retryMs !== undefined ? { retryMs: opts.retryMs } : {}) };
  return serve(address, handler, serveOpts);
}
