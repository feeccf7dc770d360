/*
 * Real-kernel topology built only from network namespaces, for the e2e tests and the sandbox command.
 *
 * Every name is prefixed with the instance id `kptXXXX` (a prefix, `kpt` unless told otherwise, and
 * 4 random hex digits), so parallel runs never collide. Nothing is created in the root namespace: veth pairs are created with both
 * ends directly inside their namespaces.
 *
 *   <id>-ext    eth0 10.0.0.100/24  fd00:10::100/64   default via 10.0.0.1 / fd00:10::1 (node1)
 *   <id>-ext2   eth0 10.0.0.101/24  fd00:10::101/64   default via node1 too (second client, e.g.
 *               for loadBalancerSourceRanges tests)
 *        │ (veth; peers named ext, ext2)
 *   <id>-net    br0: plain L2 switch joining the nodes network; no addresses; ports n1, n2, ext, ext2
 *        │ (veth; peers named nN)
 *   <id>-nodeN  eth0 10.0.0.N/24    fd00:10::N/64     ("nodes network"; N = 1, 2, ...)
 *               cbr0 10.244.N.1/24  fd00:244:N::1/64  (bridge, pod gateway; pod CIDRs
 *               10.244.N.0/24 and fd00:244:N::/64)
 *               routes: 10.244.M.0/24 via 10.0.0.M and fd00:244:M::/64 via fd00:10::M for every other node M
 *               sysctls: net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1,
 *               net.bridge.bridge-nf-call-ip{,6}tables=1 when br_netfilter is loaded (see below).
 *               route_localnet is left at 0: the proxy sets it itself when it needs localhost NodePorts.
 *        │ (veth; node side vpK on cbr0 with hairpin on, pod side eth0)
 *   <id>-pod-NAME  eth0 <pod ip>/24 [<pod ip6>/64]; default via 10.244.N.1 [and fd00:244:N::1]
 *               runs a pod server (podserver-main.js) on TCP 80,8080 and UDP 53,5353 unless the
 *               pod spec lists its own ports; it answers `<pod name> <client ip>`.
 *
 * IPv6 duplicate address detection is off in every namespace so addresses are usable at once.
 * The names, addresses and `ip` lines of this plan are in layout.ts; this file creates and removes it.
 * exec/spawn/ns() take logical names (node1, node2, net, ext, ext2, or a pod name) or full names.
 *
 * br_netfilter: with it, frames bridged on cbr0 pass through netfilter, so conntrack can undo
 * the DNAT on a reply from an endpoint to a client pod on the same node, and hairpin traffic
 * (a pod reaching itself through a Service) is bridged back out of its own port (hence hairpin on).
 * Without the module (it is never loaded from here), same-node pod → Service → pod replies skip
 * conntrack and the client sees the endpoint's address instead of the Service IP, so those
 * connections fail unless the proxy masquerades them; `topology.brNetfilter` tells tests which case holds.
 */
import { spawn as spawnChild, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { removeNetnsState } from '../node/netns-state.js';
import {
  clientInfos,
  clientLines,
  LEAF_SYSCTLS,
  netLines,
  nodeInfo,
  nodeLines,
  nodePortLines,
  nodeSysctls,
  podLines,
  podVethLine,
  uplinkVethLines,
  validatePod,
  type ClientInfo,
  type NodeInfo,
  type PodInfo,
  type PodSpec,
} from './layout.js';
import { isAlive, makeProc, runCollect, signal, stopChild, track, untrack, withParentDeathSignal, type ExecOptions, type ExecResult, type Proc } from './processes.js';

// The layout's names stay importable from here, where tests and the sandbox command look for them.

const PODSERVER_MAIN = fileURLToPath(new URL('./podserver-main.js', import.meta.url));
const MAX_NODES = 20;

export interface TopologyOptions {
  /** Number of node namespaces, default 2. */
  nodes?: number;
  pods?: PodSpec[];
  /** Start of the instance id, default `kpt`: lets a caller tell its namespaces from others'. */
  prefix?: string;
  /**
   * Destroy the topology and exit on SIGINT/SIGTERM (default true). Callers that run their own
   * shutdown on those signals pass false; cleanup at process exit stays in place either way.
   */
  handleSignals?: boolean;
  /** Called with the instance id before any namespace exists (to record who owns them). */
  claim?: (id: string) => void;
  /** How long a pod server may take to start, default 15 s (more on a slow kernel). */
  podStartMs?: number;
}

function listNetns(): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((l) => l !== '');
}

/** Names of existing network namespaces that start with prefix (e.g. a topology id). */
export function listNamespaces(prefix: string): string[] {
  return listNetns().filter((n) => n.startsWith(prefix));
}

function brNetfilterLoaded(): boolean {
  // Reading the root namespace's /proc only tells whether the module is present; nothing is changed there.
  return existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables');
}

export class Topology {
  readonly id: string;
  readonly nodes: NodeInfo[];
  readonly ext: ClientInfo;
  readonly ext2: ClientInfo;
  readonly netNs: string;
  readonly pods = new Map<string, PodInfo>();
  podStartMs = 15000;
  readonly brNetfilter = brNetfilterLoaded();

  private readonly created = new Set<string>();
  /** Running processes and the namespace each was started in (null: root-namespace `ip`). */
  private readonly children = new Map<ChildProcess, string | null>();
  private vethCounter = 0;
  private destroying: Promise<void> | undefined;
  private destroyed = false;

  constructor(id: string, nodeCount: number) {
    this.id = id;
    this.netNs = `${id}-net`;
    this.nodes = [];
    for (let n = 1; n <= nodeCount; n++) this.nodes.push(nodeInfo(id, n));
    [this.ext, this.ext2] = clientInfos(id);
  }

  node(index: number): NodeInfo {
    const n = this.nodes[index - 1];
    if (!n) throw new Error(`topology ${this.id}: no node ${index}`);
    return n;
  }

  pod(name: string): PodInfo {
    const p = this.pods.get(name);
    if (!p) throw new Error(`topology ${this.id}: no pod ${JSON.stringify(name)}`);
    return p;
  }

  /**
   * Full namespace name for a logical one: node1.., net, ext, ext2, or a pod name.
   * A full name already created by this topology is returned unchanged.
   */
  ns(name: string): string {
    const node = /^node(\d+)$/.exec(name);
    if (node) return this.node(Number(node[1])).ns;
    if (name === 'net') return this.netNs;
    if (name === 'ext') return this.ext.ns;
    if (name === 'ext2') return this.ext2.ns;
    const pod = this.pods.get(name);
    if (pod) return pod.ns;
    if (this.created.has(name)) return name;
    throw new Error(`topology ${this.id}: unknown namespace ${JSON.stringify(name)}`);
  }

  /** Every namespace this topology created and has not deleted yet. */
  namespaces(): string[] {
    return [...this.created];
  }

  /** PIDs of processes started by this topology that are still running. */
  pids(): number[] {
    return [...this.children.keys()].filter(isAlive).map((c) => c.pid ?? -1);
  }

  private start(ns: string, cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
    if (this.destroying) throw new Error(`topology ${this.id} is destroyed`);
    const full = this.ns(ns);
    const child = spawnChild(...withParentDeathSignal(['ip', 'netns', 'exec', full, cmd, ...args]), opts);
    this.children.set(child, full);
    child.once('close', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** Runs a command inside a namespace and collects its output. */
  exec(ns: string, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    const child = this.start(ns, cmd, args, { stdio: 'pipe', env: opts.env ?? process.env });
    return runCollect(child, `[${ns}] ${cmd} ${args.join(' ')}`, opts);
  }

  /**
   * Starts a long-running process inside a namespace; destroy() kills it by PID. `ownGroup`: in
   * a process group of its own, so a terminal's Ctrl-C reaches only us, and we stop it in order
   * (the proxy then stops with its tools still running, instead of finding them killed).
   */
  spawn(ns: string, cmd: string, args: string[] = [], opts: { env?: NodeJS.ProcessEnv; cwd?: string; ownGroup?: boolean } = {}): Proc {
    const child = this.start(ns, cmd, args, { stdio: 'pipe', env: opts.env ?? process.env, cwd: opts.cwd, detached: opts.ownGroup ?? false });
    return makeProc(this.ns(ns), child, `[${ns}] ${cmd}`);
  }

  /** Runs `ip -batch` inside a namespace (or the root namespace's ip tool for ns === null, used only
   *  for `netns add/del` and creating veths whose ends live in other namespaces). */
  async ipBatch(ns: string | null, lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    const args = ns === null ? ['-batch', '-'] : ['-n', this.ns(ns), '-batch', '-'];
    const child = spawnChild('ip', args, { stdio: 'pipe' });
    this.children.set(child, null);
    child.once('close', () => this.children.delete(child));
    await runCollect(child, `ip ${ns ? `-n ${ns} ` : ''}-batch`, { input: lines.join('\n') + '\n' });
  }

  private async sysctl(ns: string, settings: Record<string, string | number>): Promise<void> {
    const args = ['-q', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)];
    await this.exec(ns, 'sysctl', ['-w', ...args]);
  }

  private validatePod(spec: PodSpec, taken: Set<string>, ips: Set<string>): PodInfo {
    return validatePod(this.id, this.nodes, spec, taken, ips, () => `vp${++this.vethCounter}`);
  }

  private usedPodAddresses(): Set<string> {
    const s = new Set<string>();
    for (const p of this.pods.values()) {
      s.add(p.ip);
      if (p.ip6) s.add(p.ip6);
    }
    return s;
  }

  private async createNamespaces(names: string[]): Promise<void> {
    for (const n of names) this.created.add(n);
    await this.ipBatch(
      null,
      names.map((n) => `netns add ${n}`),
    );
  }

  private async startPodServers(pods: PodInfo[]): Promise<void> {
    await Promise.all(
      pods.map(async (p) => {
        if (p.tcp.length + p.udp.length === 0) return;
        const args = [PODSERVER_MAIN, '--name', p.name];
        if (p.tcp.length) args.push('--tcp', p.tcp.join(','));
        if (p.udp.length) args.push('--udp', p.udp.join(','));
        p.server = this.spawn(p.ns, process.execPath, args);
        await p.server.waitFor(/^ready$/, { stream: 'stdout', timeoutMs: this.podStartMs });
      }),
    );
  }

  /** Builds everything; called once by createTopology. */
  async build(podSpecs: PodSpec[], handleSignals = true): Promise<void> {
    const taken = new Set<string>();
    const ips = new Set<string>();
    const pods = podSpecs.map((s) => this.validatePod(s, taken, ips));
    track(this, handleSignals);

    const leafNs = [this.netNs, this.ext.ns, this.ext2.ns, ...pods.map((p) => p.ns)];
    await this.createNamespaces([...this.nodes.map((n) => n.ns), ...leafNs]);
    // Sysctls first: new interfaces copy net.ipv6.conf.default.*, so DAD is off on them from the start.
    await Promise.all([...this.nodes.map((n) => this.sysctl(n.ns, nodeSysctls(this.brNetfilter))), ...leafNs.map((ns) => this.sysctl(ns, LEAF_SYSCTLS))]);
    const clients = [this.ext, this.ext2];
    await this.ipBatch(null, [...uplinkVethLines(this.nodes, clients, this.netNs), ...pods.map((p) => podVethLine(p, this.node(p.node)))]);
    await Promise.all([
      this.ipBatch(this.netNs, netLines(this.nodes, clients)),
      ...this.nodes.map((n) => this.ipBatch(n.ns, nodeLines(n, this.nodes, pods))),
      ...clients.map((c) => this.ipBatch(c.ns, clientLines(c, this.node(1)))),
      ...pods.map((p) => this.ipBatch(p.ns, podLines(p, this.node(p.node)))),
    ]);

    for (const p of pods) this.pods.set(p.name, p);
    await this.startPodServers(pods);
  }

  /** Adds a pod (namespace, veth on its node's cbr0, addresses, routes, pod server) at run time. */
  async addPod(spec: PodSpec): Promise<PodInfo> {
    if (this.destroying) throw new Error(`topology ${this.id} is destroyed`);
    const p = this.validatePod(spec, new Set(this.pods.keys()), this.usedPodAddresses());
    const node = this.node(p.node);
    await this.createNamespaces([p.ns]);
    await this.sysctl(p.ns, LEAF_SYSCTLS);
    await this.ipBatch(null, [podVethLine(p, node)]);
    await Promise.all([this.ipBatch(node.ns, nodePortLines(p)), this.ipBatch(p.ns, podLines(p, node))]);
    this.pods.set(p.name, p);
    await this.startPodServers([p]);
    return p;
  }

  /** Stops every process in the pod's namespace and deletes it (its veth goes with it). */
  async removePod(name: string): Promise<void> {
    const p = this.pod(name);
    await Promise.all([...this.children].filter(([, ns]) => ns === p.ns).map(([c]) => stopChild(c, 2000)));
    this.pods.delete(name);
    await this.ipBatch(null, [`netns del ${p.ns}`]);
    this.created.delete(p.ns);
  }

  /** Adds an address (e.g. a LoadBalancer or external IP) to a device; IPv6 skips DAD. */
  async addAddress(ns: string, dev: string, cidr: string): Promise<void> {
    await this.ipBatch(ns, [`addr add ${cidr} dev ${dev}${cidr.includes(':') ? ' nodad' : ''}`]);
  }

  async removeAddress(ns: string, dev: string, cidr: string): Promise<void> {
    await this.ipBatch(ns, [`addr del ${cidr} dev ${dev}`]);
  }

  /** Kills every process this topology started and deletes every namespace it created. Idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      await Promise.all([...this.children.keys()].map((c) => stopChild(c, 2000)));
      const names = [...this.created];
      for (const n of names) removeNetnsState(n);
      if (names.length > 0) {
        const child = spawnChild('ip', ['-force', '-batch', '-'], { stdio: 'pipe' });
        await runCollect(child, 'ip netns del', { input: names.map((n) => `netns del ${n}\n`).join(''), check: false });
      }
      this.created.clear();
      this.destroyed = true;
      untrack(this);
    })();
    return this.destroying;
  }

  /** Synchronous last-resort cleanup for process exit and signals. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const c of this.children.keys()) signal(c, 'SIGKILL');
    const names = [...this.created];
    for (const n of names) removeNetnsState(n);
    if (names.length > 0) {
      try {
        execFileSync('ip', ['-force', '-batch', '-'], { input: names.map((n) => `netns del ${n}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] });
      } catch {
        // Best effort while the process is going down; nothing more can be done here.
      }
    }
    this.created.clear();
    untrack(this);
  }
}

function newId(prefix: string): string {
  const existing = listNetns();
  for (;;) {
    const id = `${prefix}${randomBytes(2).toString('hex')}`;
    if (!existing.some((n) => n.startsWith(`${id}-`))) return id;
  }
}

/** Creates the namespaces, links, addresses, routes and pod servers described at the top of this file. */
export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const nodes = opts.nodes ?? 2;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) throw new Error(`nodes must be an integer in 1..${MAX_NODES}, got ${nodes}`);
  const prefix = opts.prefix ?? 'kpt';
  // Namespace names become file names and parts of longer names: keep the prefix short and plain.
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new Error(`prefix must be 1..8 lower-case letters or digits starting with a letter, got ${JSON.stringify(prefix)}`);
  const topo = new Topology(newId(prefix), nodes);
  opts.claim?.(topo.id);
  if (opts.podStartMs !== undefined) topo.podStartMs = opts.podStartMs;
  try {
    await topo.build(opts.pods ?? [], opts.handleSignals ?? true);
  } catch (err) {
    await topo.destroy();
    throw err;
  }
  return topo;
}
