// Conntrack reconciler: UDP and SCTP have no connection end, so a conntrack entry keeps
// sending a client's flow wherever it first went. After each sync (and periodically) the
// table is read and every UDP/SCTP entry to a service IP or NodePort whose reply source is not
// a serving endpoint is deleted: an endpoint that went away, a Service scaled to zero and
// back, a Service deleted and recreated with the same IP (its old entries were never NATed).
import type { ChangeSet, IPFamily, Protocol, Snapshot } from '../model/types.js';
import { log } from '../log.js';
import { runConntrack, type ConntrackOptions } from './conntrack.js';

/** One conntrack entry: the original direction and the reply direction's source. */
export interface ConntrackFlow {
  protocol: 'udp' | 'sctp';
  origSrc: string;
  origDst: string;
  origSport: number;
  origDport: number;
  replySrc: string;
  replySport: number;
}

/** Parses `conntrack -L` lines (the first src/dst/sport/dport are the original tuple, the second the reply). */
export function parseConntrackList(text: string): ConntrackFlow[] {
  const flows: ConntrackFlow[] = [];
  for (const line of text.split('\n')) {
    const proto = /^\s*(udp|sctp)\s/.exec(line)?.[1] as 'udp' | 'sctp' | undefined;
    if (!proto) continue;
    const all = (k: string): string[] => [...line.matchAll(new RegExp(`\\b${k}=(\\S+)`, 'g'))].map((m) => m[1]!);
    const src = all('src');
    const dst = all('dst');
    const sport = all('sport').map(Number);
    const dport = all('dport').map(Number);
    if (src.length < 2 || dst.length < 1 || sport.length < 2 || dport.length < 1) continue;
    flows.push({
      protocol: proto,
      origSrc: src[0]!,
      origDst: dst[0]!,
      origSport: sport[0]!,
      origDport: dport[0]!,
      replySrc: src[1]!,
      replySport: sport[1]!,
    });
  }
  return flows;
}

/** Where clients send UDP/SCTP service traffic, and who may answer it. */
export interface Frontends {
  /** `proto ip port` → serving endpoints as `ip port`. */
  byAddress: Map<string, Set<string>>;
  /** `proto nodePort` → serving endpoints, for destinations among the node's IPs. */
  byNodePort: Map<string, Set<string>>;
}

const norm = (ip: string): string => ip.toLowerCase();

/**
 * Whether a sync with these changes can have left flows stale: only a change to a UDP or SCTP
 * service port can. A pass reads every service, so running one after each TCP-only change made
 * every change cost time in proportion to the cluster (20 ms at 30,000 services).
 */
export function mayLeaveStaleFlows(changes: ChangeSet): boolean {
  if (changes.full) return true;
  for (const keys of [changes.changed, changes.deleted]) for (const k of keys) if (!k.endsWith('/TCP')) return true;
  return false;
}

/** How a reply from this process's own listener (userspace mode) is written in a serving set. */
const proxyReply = (port: number): string => `proxy ${port}`;

/**
 * `proxyPorts`: per service key, the ports of this process's listeners that answer for it. A
 * redirected flow's reply comes from one of them (from whichever local address), never from an
 * endpoint, and is current as long as that listener is.
 */
export function frontendsOf(snapshot: Snapshot, proxyPorts?: ReadonlyMap<string, readonly number[]>): Frontends {
  const f: Frontends = { byAddress: new Map(), byNodePort: new Map() };
  for (const [key, s] of snapshot.services) {
    const proto: Protocol = s.info.protocol;
    if (proto === 'TCP') continue;
    const p = proto.toLowerCase();
    const serving = new Set(s.allReachableEndpoints.map((e) => `${norm(e.ip)} ${e.port}`));
    for (const port of proxyPorts?.get(key) ?? []) serving.add(proxyReply(port));
    const add = (key: string, map: Map<string, Set<string>>): void => {
      const set = map.get(key) ?? new Set<string>();
      for (const e of serving) set.add(e);
      map.set(key, set);
    };
    for (const ip of [s.info.clusterIP, ...s.info.externalIPs, ...s.info.loadBalancerIPs]) {
      if (ip) add(`${p} ${norm(ip)} ${s.info.port}`, f.byAddress);
    }
    if (s.info.nodePort) add(`${p} ${s.info.nodePort}`, f.byNodePort);
  }
  return f;
}

/** The flows whose reply does not come from a serving endpoint of the frontend they were sent to. */
export function staleFlows(flows: ConntrackFlow[], frontends: Frontends, nodeIPs: string[]): ConntrackFlow[] {
  const nodeSet = new Set(nodeIPs.map(norm));
  return flows.filter((fl) => {
    const reply = `${norm(fl.replySrc)} ${fl.replySport}`;
    const dst = norm(fl.origDst);
    let serving = frontends.byAddress.get(`${fl.protocol} ${dst} ${fl.origDport}`);
    if (!serving && nodeSet.has(dst)) serving = frontends.byNodePort.get(`${fl.protocol} ${fl.origDport}`);
    return serving !== undefined && !serving.has(reply) && !serving.has(proxyReply(fl.replySport));
  });
}

/** The `conntrack -D` arguments deleting one flow (its original tuple, exactly). */
export function deleteArgs(family: IPFamily, fl: ConntrackFlow): string[] {
  return [
    '-D',
    ...(family === 'IPv6' ? ['-f', 'ipv6'] : []),
    '-p', fl.protocol,
    '--orig-src', fl.origSrc,
    '--orig-dst', fl.origDst,
    '--orig-port-src', String(fl.origSport),
    '--orig-port-dst', String(fl.origDport),
  ];
}

/** What a pass needs from the node, per family. */
export interface NodeView {
  ips(family: IPFamily): string[];
  /** See frontendsOf. */
  proxyPorts(family: IPFamily): ReadonlyMap<string, readonly number[]> | undefined;
}

export class ConntrackReconciler {
  private running: Promise<number> | null = null;
  /** Entries deleted since start. */
  deleted = 0;

  /** `onPass` hears, per family table read, how long the pass took and what it deleted. */
  constructor(
    private readonly opts: ConntrackOptions = {},
    private readonly onPass?: (family: IPFamily, deleted: number, seconds: number) => void,
  ) {}

  /**
   * One pass over every family's table; a pass already running is awaited instead of
   * starting another. Resolves with the number of entries deleted; never throws.
   */
  reconcile(snapshots: Iterable<Snapshot>, node: NodeView): Promise<number> {
    if (this.running) return this.running;
    const snaps = [...snapshots];
    this.running = this.pass(snaps, node).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async pass(snaps: Snapshot[], node: NodeView): Promise<number> {
    let deleted = 0;
    for (const snap of snaps) {
      const frontends = frontendsOf(snap, node.proxyPorts(snap.family));
      if (frontends.byAddress.size === 0 && frontends.byNodePort.size === 0) continue;
      const started = performance.now();
      const before = deleted;
      const fam = snap.family === 'IPv6' ? ['-f', 'ipv6'] : [];
      for (const proto of ['udp', 'sctp']) {
        const res = await runConntrack(['-L', ...fam, '-p', proto], this.opts);
        if (res.code !== 0) {
          // An unloaded SCTP conntrack helper is normal; anything else is worth a line.
          if (proto === 'udp') log.warn('listing conntrack entries failed', { family: snap.family, error: res.stderr.trim() });
          continue;
        }
        for (const fl of staleFlows(parseConntrackList(res.stdout), frontends, node.ips(snap.family))) {
          const del = await runConntrack(deleteArgs(snap.family, fl), this.opts);
          if (del.code === 0) {
            deleted++;
            log.v(2, 'deleted stale conntrack entry', { ...fl });
          } else if (!/0 flow entries/.test(del.stderr)) {
            log.warn('deleting a conntrack entry failed', { ...fl, error: del.stderr.trim() });
          }
        }
      }
      this.onPass?.(snap.family, deleted - before, (performance.now() - started) / 1000);
    }
    this.deleted += deleted;
    if (deleted > 0) log.info('deleted stale UDP/SCTP conntrack entries', { entries: deleted });
    return deleted;
  }
}
