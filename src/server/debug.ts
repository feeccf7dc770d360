// Debug pages on the metrics address (local-only by default, like upstream's /configz):
//   /debug/services  each service port, the endpoints chosen for cluster and local traffic,
//                    and why each other endpoint was not chosen
//   /debug/rules     what each backend has programmed now (its describe())
//   /debug/syncs     the last syncs: when, full or partial, duration, the objects behind them
//   /configz         the running configuration, as upstream serves it
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KubeProxyConfiguration } from '../config/types.js';
import type { Endpoint, IPFamily, ServicePortState, Snapshot } from '../model/types.js';
import type { SourceEvent } from '../source/types.js';
import { sendJSON, type Handler } from './http.js';

export interface SyncRecord {
  /** ISO time the sync started. */
  at: string;
  durationMs: number;
  ok: boolean;
  /** Per family: whether everything was replaced (null when that family's sync failed). */
  families: Array<{ family: IPFamily; full: boolean | null; ms: number }>;
  /** Objects whose changes this sync picked up, as `Kind ns/name (TYPE)`. */
  causes: string[];
  /** Changes past the listed causes, when there were many. */
  moreCauses: number;
}

const MAX_CAUSES = 50;

/** Keeps the last syncs; a proxy observer (see Proxy.observe). */
export class SyncHistory {
  private readonly records: SyncRecord[] = [];
  private pending: string[] = [];
  private pendingMore = 0;
  private current: SyncRecord | null = null;

  constructor(
    private readonly keep = 50,
    private readonly now: () => number = Date.now,
  ) {}

  event(e: SourceEvent): void {
    // Past the listed causes only a count is kept: an initial list is tens of thousands of
    // events, and naming each cost ~20 ms at 10,000 Services.
    if (this.pending.length >= MAX_CAUSES) {
      this.pendingMore++;
      return;
    }
    const m = e.object.metadata ?? {};
    const name = m.namespace ? `${m.namespace}/${m.name}` : String(m.name);
    const cause = `${e.kind} ${name} (${e.type})`;
    if (!this.pending.includes(cause)) this.pending.push(cause);
  }

  syncStarted(): (ok: boolean) => void {
    const started = this.now();
    const rec: SyncRecord = {
      at: new Date(started).toISOString(),
      durationMs: 0,
      ok: false,
      families: [],
      causes: this.pending,
      moreCauses: this.pendingMore,
    };
    this.pending = [];
    this.pendingMore = 0;
    this.current = rec;
    return (ok) => {
      rec.ok = ok;
      rec.durationMs = this.now() - started;
      if (this.current === rec) this.current = null;
      // A failed sync is retried: its causes stay pending for the next one.
      if (!ok) {
        const carried = [...rec.causes, ...this.pending.filter((c) => !rec.causes.includes(c))];
        this.pending = carried.slice(0, MAX_CAUSES);
        this.pendingMore += rec.moreCauses + carried.length - this.pending.length;
      }
      this.records.push(rec);
      if (this.records.length > this.keep) this.records.shift();
    };
  }

  familySynced(family: IPFamily, full: boolean | null, seconds: number): void {
    this.current?.families.push({ family, full, ms: Math.round(seconds * 1000) });
  }

  /** Newest first. */
  list(): SyncRecord[] {
    return [...this.records].reverse();
  }
}

export interface EndpointView {
  endpoint: string;
  node: string;
  zone: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

export interface ServicePortView {
  name: string;
  family: IPFamily;
  protocol: string;
  clusterIP: string;
  port: number;
  nodePort: number;
  externalIPs: string[];
  loadBalancerIPs: string[];
  internalTrafficPolicy: 'Cluster' | 'Local';
  externalTrafficPolicy: 'Cluster' | 'Local';
  clusterEndpoints: string[];
  localEndpoints: string[];
  /** Endpoints in neither list, with the reason. */
  notChosen: Array<EndpointView & { reason: string }>;
  /** Endpoints used for cluster traffic but not for Local-policy traffic, with the reason. */
  notLocal: Array<{ endpoint: string; reason: string }>;
}

const hostPort = (e: Endpoint): string => `${e.ip.includes(':') ? `[${e.ip}]` : e.ip}:${e.port}`;

/** Why an endpoint of a service port carries none of its traffic. */
export function whyNotChosen(e: Endpoint, s: ServicePortState, node: { zone: string; name: string }): string {
  const anyReady = s.endpoints.some((x) => x.ready);
  if (e.terminating && !e.serving) return 'terminating and no longer serving';
  if (e.terminating && anyReady) return 'terminating: used only while no endpoint is ready';
  if (!e.ready && !e.serving) return 'not ready';
  if (e.hintsForZones.length > 0 && node.zone !== '' && !e.hintsForZones.includes(node.zone)) {
    return `topology hints send it traffic from zones ${e.hintsForZones.join(',')} only (this node is in ${node.zone})`;
  }
  if (e.hintsForNodes.length > 0 && !e.hintsForNodes.includes(node.name)) {
    return `topology hints send it traffic from nodes ${e.hintsForNodes.join(',')} only`;
  }
  if (s.info.internalPolicyLocal && !e.isLocal) return `internalTrafficPolicy Local and the endpoint is on node ${e.nodeName || '(unknown)'}`;
  return 'not selected by the endpoint selection (topology or traffic policy)';
}

export function servicePortViews(snapshots: Iterable<Snapshot>): ServicePortView[] {
  const out: ServicePortView[] = [];
  for (const snap of snapshots) {
    for (const key of [...snap.services.keys()].sort()) {
      const s = snap.services.get(key)!;
      const i = s.info;
      const chosen = new Set([...s.clusterEndpoints, ...s.localEndpoints].map(hostPort));
      const local = new Set(s.localEndpoints.map(hostPort));
      out.push({
        name: i.name,
        family: snap.family,
        protocol: i.protocol,
        clusterIP: i.clusterIP,
        port: i.port,
        nodePort: i.nodePort,
        externalIPs: i.externalIPs,
        loadBalancerIPs: i.loadBalancerIPs,
        internalTrafficPolicy: i.internalPolicyLocal ? 'Local' : 'Cluster',
        externalTrafficPolicy: i.externalPolicyLocal ? 'Local' : 'Cluster',
        clusterEndpoints: s.clusterEndpoints.map(hostPort),
        localEndpoints: s.localEndpoints.map(hostPort),
        notChosen: s.endpoints
          .filter((e) => !chosen.has(hostPort(e)))
          .map((e) => ({
            endpoint: hostPort(e),
            node: e.nodeName,
            zone: e.zone,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            reason: whyNotChosen(e, s, snap.node),
          })),
        notLocal:
          i.externalPolicyLocal || i.internalPolicyLocal
            ? s.clusterEndpoints
                .filter((e) => !local.has(hostPort(e)))
                .map((e) => ({
                  endpoint: hostPort(e),
                  reason: e.isLocal ? 'not ready for local traffic' : `on node ${e.nodeName || '(unknown)'}, not this node`,
                }))
            : [],
      });
    }
  }
  return out;
}

/** What the debug pages read; every part is live (read at request time). */
export interface DebugSources {
  snapshots(): Iterable<Snapshot>;
  /** Per family, the backend's describe() ('': nothing programmed yet; undefined: the backend cannot list them). */
  rules(): Array<{ family: IPFamily; mode: string; text: string | undefined }>;
  syncs: SyncHistory;
  config(): KubeProxyConfiguration;
  /** `explain` on the proxy's own state, with the command line's arguments. */
  explain?(argv: string[]): Promise<{ code: number; out: string; err: string }>;
}

const text = (res: ServerResponse, body: string): void => {
  res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.end(body);
};

/** The debug routes, for startMetricsServer's `routes`. */
export function debugRoutes(src: DebugSources): Record<string, Handler> {
  const json = (body: () => unknown) => (_req: IncomingMessage, res: ServerResponse) => sendJSON(res, 200, JSON.stringify(body(), null, 2) + '\n');
  return {
    '/debug/services': json(() => servicePortViews(src.snapshots())),
    '/debug/syncs': json(() => src.syncs.list()),
    '/configz': json(() => ({ 'kubeproxy.config.k8s.io': src.config() })),
    '/debug/explain': (req, res) => {
      if (!src.explain) return text(res, 'explain is not available in this process\n');
      const argv = new URL(req.url ?? '/', 'http://localhost').searchParams.getAll('arg');
      void src.explain(argv).then(
        (r) => {
          res.writeHead(r.code === 0 ? 200 : r.code === 2 ? 400 : 422, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', 'X-Exit-Code': String(r.code) });
          res.end(r.out + r.err);
        },
        (e: unknown) => {
          res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Exit-Code': '1' });
          res.end(`explain: failed: ${e instanceof Error ? e.message : String(e)}\n`);
        },
      );
    },
    '/debug/rules': (_req, res) => {
      const parts = src.rules().map(
        (r) => `# ${r.family} (${r.mode})\n${r.text === undefined ? '(this backend cannot list its rules)\n' : r.text || '(nothing programmed yet)\n'}`,
      );
      text(res, parts.length ? parts.join('\n') : '(no sync yet)\n');
    },
  };
}
