// Health as upstream reports it: the proxier health server (/healthz, /livez on
// healthzBindAddress) and one health-check node port per LoadBalancer Service with
// externalTrafficPolicy Local, which load balancers probe to find nodes with local endpoints.
import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import { createServer } from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MODES, nodePortIPsOf, type ProxyMode } from '../backend/modes.js';
import type { BackendConfig } from '../backend/types.js';
import { log } from '../log.js';
import type { ServicePortState, Snapshot } from '../model/types.js';
import type { SourceEvent } from '../source/types.js';
import { closeServer, listen, notFound, sendJSON, serve, type RunningServer } from './http.js';

/** The taint the cluster autoscaler puts on a node it is about to delete. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** What health is judged on; SyncRunner has exactly these fields. */
export interface SyncState {
  /** Oldest sync request not yet covered by a successful sync (ms); 0 when none is pending. */
  readonly pendingSinceMs: number;
  /** Time of the last successful sync (ms); 0 before the first one. */
  readonly lastSyncMs: number;
}

/** Counts responses by status code (proxy_healthz_total / proxy_livez_total). */
export interface HealthCounters {
  healthz(code: number): void;
  livez(code: number): void;
}

/** A node being deleted, or tainted for deletion by the autoscaler, should get no new traffic. */
export function nodeEligible(node: unknown): boolean {
  if (typeof node !== 'object' || node === null) return true;
  const o = node as { metadata?: { deletionTimestamp?: unknown }; spec?: { taints?: unknown } };
  if (o.metadata?.deletionTimestamp) return false;
  const taints = o.spec?.taints;
  if (!Array.isArray(taints)) return true;
  return !taints.some((t) => typeof t === 'object' && t !== null && (t as { key?: unknown }).key === TO_BE_DELETED_TAINT);
}

/** RFC 3339 in UTC; 0 is Go's zero time, which upstream prints for "never". */
function rfc3339(ms: number): string {
  return new Date(ms === 0 ? -62135596800000 : ms).toISOString();
}

export interface ProxierHealthOptions {
  state: SyncState;
  /** Upstream: twice the sync period. */
  healthTimeoutMs: number;
  /** Only this Node's events change eligibility. */
  nodeName: string;
  /** Must be the clock the SyncState's times come from. */
  now?: () => number;
  /** False while the kernel is known to hold rules other than the ones written, not yet repaired. */
  kernelInSync?: () => boolean;
}

/**
 * Upstream's proxier health: healthy unless a queued update has waited healthTimeout or
 * longer without a successful sync, and (our addition) unless the kernel is known to hold
 * wrong rules. /healthz also requires the node to be eligible and, unlike upstream, a first
 * successful sync: a node that has programmed nothing must not get load-balancer traffic.
 * /livez requires neither, so a proxy waiting for an unreachable API server is not
 * restarted in a loop. An API server outage alone changes nothing: the rules in place stay
 * right, and failing every node's check at once would drain the whole cluster.
 */
export class ProxierHealth {
  /** True until an event for the own Node says otherwise, as upstream. */
  nodeEligible = true;
  private readonly now: () => number;
  private healthTimeoutMs = 0;

  constructor(private readonly opts: ProxierHealthOptions) {
    this.setHealthTimeout(opts.healthTimeoutMs);
    this.now = opts.now ?? (() => performance.timeOrigin + performance.now());
  }

  /** A reloaded configuration brings another sync period (upstream: twice it). */
  setHealthTimeout(ms: number): void {
    if (!(ms > 0)) throw new Error('ProxierHealth: healthTimeoutMs must be > 0');
    this.healthTimeoutMs = ms;
  }

  isHealthy(): boolean {
    const pending = this.opts.state.pendingSinceMs;
    const syncing = pending === 0 || this.now() - pending < this.healthTimeoutMs;
    return syncing && (this.opts.kernelInSync?.() ?? true);
  }

  /** Whether rules have been programmed at least once. */
  everSynced(): boolean {
    return this.opts.state.lastSyncMs > 0;
  }

  /** Source events: the own Node's updates (and deletion) decide eligibility. */
  event(e: SourceEvent): void {
    if (e.kind !== 'Node' || e.object?.metadata?.name !== this.opts.nodeName) return;
    const eligible = nodeEligible(e.object);
    if (eligible !== this.nodeEligible) log.info('node eligibility changed', { node: this.opts.nodeName, eligible });
    this.nodeEligible = eligible;
  }

  /** Status and body of /healthz (withNode) or /livez. */
  report(withNode: boolean): { code: number; body: string } {
    const healthy = this.isHealthy() && (!withNode || (this.nodeEligible && this.everSynced()));
    const now = this.now();
    // As upstream: a healthy answer reports "now", an unhealthy one the last successful sync.
    const lastUpdated = rfc3339(healthy ? now : this.opts.state.lastSyncMs);
    const node = withNode ? `, "nodeEligible": ${this.nodeEligible}` : '';
    return {
      code: healthy ? 200 : 503,
      body: `{"lastUpdated": ${JSON.stringify(lastUpdated)},"currentTime": ${JSON.stringify(rfc3339(now))}${node}}`,
    };
  }
}

export interface HealthServerOptions {
  health: ProxierHealth;
  counters?: HealthCounters;
  hardFail: boolean;
  retryMs?: number;
}

/** The proxier health server: /healthz and /livez on `address` (host:port; port 0 picks one). */
export function startHealthServer(address: string, opts: HealthServerOptions): Promise<RunningServer> {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      notFound(res);
      return;
    }
    const { code, body } = opts.health.report(path === '/healthz');
    if (path === '/healthz') opts.counters?.healthz(code);
    else opts.counters?.livez(code);
    sendJSON(res, code, body);
  };
  const serveOpts = { name: 'healthz server', hardFail: opts.hardFail, ...(opts.retryMs !== undefined ? { retryMs: opts.retryMs } : {}) };
  return serve(address, handler, serveOpts);
}

/**
 * Where health-check node ports listen: where the mode's NodePorts answer, over every
 * family; null means every address.
 */
export function healthCheckHosts(configs: BackendConfig[], mode: ProxyMode): string[] | null {
  const hosts = nodePortIPsOf(MODES[mode], configs);
  if (hosts?.length === 0) {
    log.warn('no node IP matches nodePortAddresses; health check node ports listen on every address');
    return null;
  }
  return hosts;
}

interface ServiceCheck {
  namespace: string;
  name: string;
  port: number;
  localEndpoints: number;
  servers: Server[];
}

type HealthCheckNeed = { namespace: string; name: string; port: number; localEndpoints: number };

/** A service port's health-check need, or undefined when it has none. */
function needOf(state: ServicePortState): HealthCheckNeed | undefined {
  const info = state.info;
  if (info.type !== 'LoadBalancer' || !info.externalPolicyLocal || info.healthCheckNodePort === 0) return undefined;
  return { namespace: info.namespace, name: info.serviceName, port: info.healthCheckNodePort, localEndpoints: state.localReadyCount };
}

/** Merges per-port needs into per-service ones. */
function mergeNeeds(needs: Iterable<HealthCheckNeed>): Map<string, HealthCheckNeed> {
  const out = new Map<string, HealthCheckNeed>();
  for (const n of needs) {
    const key = `${n.namespace}/${n.name}`;
    const prev = out.get(key);
    // The count is per service (distinct pod IPs over its ports); each family sees the same pods.
    out.set(key, { ...n, localEndpoints: Math.max(prev?.localEndpoints ?? 0, n.localEndpoints) });
  }
  return out;
}

/** What the health-check node ports need from the snapshots: service → port and local endpoints. */
export function healthCheckServices(snapshots: Iterable<Snapshot>): Map<string, HealthCheckNeed> {
  const needs: HealthCheckNeed[] = [];
  for (const snap of snapshots) {
    for (const state of snap.services.values()) {
      const n = needOf(state);
      if (n !== undefined) needs.push(n);
    }
  }
  return mergeNeeds(needs);
}

/**
 * Health-check needs per family, kept up to date from each snapshot's change set, so a sync
 * costs time for what changed; a full snapshot, or one that does not follow the last one seen,
 * is read whole.
 */
class HealthCheckIndex {
  private readonly families = new Map<string, { generation: number; needs: Map<string, HealthCheckNeed> }>();

  update(snapshots: Iterable<Snapshot>): Map<string, HealthCheckNeed> {
    const seen = new Set<string>();
    for (const snap of snapshots) {
      seen.add(snap.family);
      const known = this.families.get(snap.family);
      if (known?.generation === snap.generation) continue;
      if (known === undefined || snap.changes.full || snap.generation !== known.generation + 1) {
        const needs = new Map<string, HealthCheckNeed>();
        for (const [key, state] of snap.services) {
          const n = needOf(state);
          if (n !== undefined) needs.set(key, n);
        }
        this.families.set(snap.family, { generation: snap.generation, needs });
        continue;
      }
      known.generation = snap.generation;
      for (const key of snap.changes.deleted) known.needs.delete(key);
      for (const key of snap.changes.changed) {
        const state = snap.services.get(key);
        const n = state === undefined ? undefined : needOf(state);
        if (n === undefined) known.needs.delete(key);
        else known.needs.set(key, n);
      }
    }
    for (const f of [...this.families.keys()]) if (!seen.has(f)) this.families.delete(f);
    return mergeNeeds([...this.families.values()].flatMap((f) => [...f.needs.values()]));
  }
}

const OPEN_PER_TURN = 32;

/**
 * One HTTP server per Service needing a health check, on its healthCheckNodePort: 200 while
 * it has local ready endpoints and the proxy is healthy, 503 otherwise. Servers open and
 * close as `update` is called with each sync's snapshots; a port that cannot be bound is
 * logged and retried on the next update.
 */
export class ServiceHealthServers {
  private readonly checks = new Map<string, ServiceCheck>();
  private readonly index = new HealthCheckIndex();
  private hostsKey = '';
  /** Updates run one at a time, in call order. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly health: { isHealthy(): boolean }) {}

  /** Current ports by `namespace/name`, for tests and logs. */
  ports(): Map<string, number> {
    return new Map([...this.checks].map(([k, c]) => [k, c.port]));
  }

  update(snapshots: Iterable<Snapshot>, hosts: string[] | null): Promise<void> {
    // The snapshots are read now: they may be replaced before a queued update runs.
    const wanted = this.index.update(snapshots);
    this.queue = this.queue.then(() => this.apply(wanted, hosts));
    return this.queue;
  }

  private async apply(wanted: Map<string, HealthCheckNeed>, hosts: string[] | null): Promise<void> {
    if (this.closed) return;
    const hostsKey = hosts === null ? '*' : hosts.join(',');
    const hostsChanged = hostsKey !== this.hostsKey;
    this.hostsKey = hostsKey;
    for (const [key, check] of this.checks) {
      const w = wanted.get(key);
      if (w === undefined || w.port !== check.port || hostsChanged) {
        log.v(2, 'closing health check node port', { service: key, port: check.port });
        this.checks.delete(key);
        await Promise.all(check.servers.map(closeServer));
      }
    }
    let opened = 0;
    for (const [key, w] of wanted) {
      const existing = this.checks.get(key);
      if (existing) {
        existing.localEndpoints = w.localEndpoints;
        continue;
      }
      // A listen completes within the same turn of the event loop, so hundreds of ports (a
      // first sync with many Local LoadBalancers) opened back to back held up the next sync's
      // I/O for ~100 ms; a turn now and then lets it through.
      if (++opened % OPEN_PER_TURN === 0) await nextTurn();
      const check: ServiceCheck = { ...w, servers: [] };
      try {
        for (const host of hosts ?? [undefined]) {
          const server = createServer((req, res) => this.answer(check, req, res));
          check.servers.push(server);
          await listen(server, host, w.port);
        }
      } catch (err) {
        log.error('failed to start health check node port', {
          service: key,
          port: w.port,
          error: err instanceof Error ? err.message : String(err),
        });
        await Promise.all(check.servers.map(closeServer));
        continue;
      }
      log.v(2, 'opened health check node port', { service: key, port: w.port });
      this.checks.set(key, check);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const all = [...this.checks.values()];
    this.checks.clear();
    await Promise.all(all.flatMap((c) => c.servers.map(closeServer)));
  }

  private answer(check: ServiceCheck, _req: IncomingMessage, res: ServerResponse): void {
    const healthy = this.health.isHealthy();
    const body = {
      service: { namespace: check.namespace, name: check.name },
      localEndpoints: check.localEndpoints,
      serviceProxyHealthy: healthy,
    };
    sendJSON(res, check.localEndpoints > 0 && healthy ? 200 : 503, JSON.stringify(body, null, '\t'));
  }
}
