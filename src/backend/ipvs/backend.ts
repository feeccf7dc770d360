// The IPVS backend: renders a snapshot (render.ts) and writes only what differs from what the
// kernel holds: kube-ipvs0's addresses, the ipsets whose content changed, the ipvsadm commands
// of the diff (one endpoint change is one or two lines), and the iptables chains when their text
// changed. Removed real servers drain at weight 0 and are deleted once their connections are
// gone, or after a bound, checked at each sync and on a timer. Partial syncs and drain checks
// feed long-lived ipvsadm and ipset sessions (session.ts) instead of starting processes; when a
// session fails, the sync is done again in full with one-shot tools.
import { release } from 'node:os';
import type { Backend, SyncResult, VerifyResult } from '../types.js';
import type { IPFamily, Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import type { ExecOptions } from '../../node/exec.js';
import { flushStale } from '../../node/conntrack.js';
import { KernelCheck, NOTHING_TO_REPAIR, tally, tallyNamed, type Difference, type Finding } from '../common/verify.js';
import { startUpFlavour, type StartUp } from '../iptables/startup.js';
import { detectFlavour, ensureJumps, parseSave, restore, saveTables, type Flavour } from '../iptables/apply.js';
import { toRestoreInput, type IptChain } from '../iptables/syntax.js';
import { isKubeProxyChain, removeIptablesLeftovers, removeIpvsLeftovers } from '../common/leftovers.js';
import { connectionCounts, dummyAddresses, editDummy, readVirtualServers, restoreIpsets, restoreIpvs, savedIpsetEntries, setIpvsTimeouts, syncDummy, writeSysctls } from './apply.js';
import { CHAINS } from './chains.js';
import { diffVirtualServers } from './diff.js';
import { toIpsetRestore } from './ipsets.js';
import { hostPort, serviceRef, toIpvsadmRestore, type ParsedVirtualServer } from './ipvsadm.js';
import type { IpvsOptions } from './render.js';
import { ipsetSession, ipvsadmSession, SessionError } from './session.js';
import { IpvsState, type IpvsChange } from './state.js';
import { ipvsSysctls, ipvsTimeoutArgs } from './sysctls.js';
import type { IpvsRuleset, VirtualServer } from './types.js';

/** Whether a chain is one the IPVS mode writes (any other kube-proxy chain is another mode's). */
export const isIpvsModeChain = (table: string, name: string): boolean => CHAINS.some((c) => c.table === table && c.name === name);

export interface IpvsConfig extends IpvsOptions {
  strictARP?: boolean;
  /** ipvsadm --set values in seconds (0: the kernel's). */
  timeouts?: { tcpSec: number; tcpFinSec: number; udpSec: number };
}

export interface IpvsBackendOptions {
  dryRun?: boolean;
  out?: (text: string) => void;
  wrap?: string[];
  flavour?: Flavour;
  /** The start-up shared by every family: the node's flavour, the other modes' leftovers removed. */
  startUp?: () => Promise<StartUp>;
  /** How often draining real servers are checked between syncs (default 2 s). */
  drainCheckMs?: number;
  /** A draining real server is deleted after this long even with open connections (default 15 min). */
  drainBoundMs?: number;
  now?: () => number;
  /** Longest one tool may run (default: the shell's 180 s); a very large first sync needs more. */
  commandTimeoutMs?: number;
  /** Longest a partial sync's batch may take in a long-lived session (default 10 s). */
  sessionTimeoutMs?: number;
}

const serverKey = (d: { service: string; realServer: string }): string => `${d.service} ${d.realServer}`;

export class IpvsBackend implements Backend {
  readonly mode = 'ipvs';
  readonly family: IPFamily;
  /** Syncs the kernel rejected. */
  syncFailures = 0;
  /** The ipvsadm commands the last sync or drain check sent (tests, debugging). */
  lastCommands: string[] = [];
  flavour: Flavour | undefined;
  /** What the kernel holds since the last successful sync; undefined: the next sync writes everything. */
  private state: IpvsState | undefined;
  /** The kernel's virtual servers as we left them (draining real servers included), by service ref; undefined: read them. */
  private known: Map<string, ParsedVirtualServer> | undefined;
  private writtenChains = '';
  private excludeCIDRs: string[] = [];
  private startedUp = false;
  /** Draining real servers and when they started draining. */
  private readonly draining = new Map<string, { service: string; realServer: string; since: number }>();
  private timer: NodeJS.Timeout | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly check: KernelCheck;

  constructor(
    private readonly config: IpvsConfig,
    private readonly opts: IpvsBackendOptions = {},
  ) {
    this.family = config.family;
    this.check = new KernelCheck(this.mode, this.family);
    if (opts.flavour) this.flavour = opts.flavour;
  }

  private get exec(): ExecOptions {
    return { ...(this.opts.wrap ? { wrap: this.opts.wrap } : {}), ...(this.opts.commandTimeoutMs ? { timeoutMs: this.opts.commandTimeoutMs } : {}) };
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Runs kernel work one job at a time (syncs and drain checks share the kernel state). */
  private serial<T>(job: () => Promise<T>): Promise<T> {
    const next = this.queue.then(job);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async startUp(): Promise<void> {
    if (this.startedUp) return;
    this.flavour = (await startUpFlavour(this.family, this.flavour, this.exec, this.opts.startUp)).flavour;
    // Reading the virtual servers loads ip_vs, whose sysctls exist only from then on.
    this.known = byRef(await readVirtualServers(this.exec));
    const failed = await writeSysctls(ipvsSysctls({ strictARP: this.config.strictARP ?? false, kernelRelease: release() }), this.exec);
    for (const f of failed) log.warn('setting an IPVS sysctl failed', { family: this.family, error: f });
    const timeouts = this.config.timeouts ? ipvsTimeoutArgs(this.config.timeouts) : undefined;
    if (timeouts) await setIpvsTimeouts(timeouts, this.exec);
    this.startedUp = true;
  }

  sync(snapshot: Snapshot): Promise<SyncResult> {
    if (this.opts.dryRun) {
      this.state = new IpvsState(this.config).load(snapshot);
      (this.opts.out ?? ((t: string) => process.stdout.write(t)))(this.describe());
      return Promise.resolve({ operations: snapshot.services.size, full: true });
    }
    return this.serial(async () => {
      try {
        await this.startUp();
        let operations: number;
        if (this.state && this.known && this.writtenChains !== '') {
          // Partial: only the changed service ports are rendered and compared; a full sync compares every one.
          const c = snapshot.changes;
          try {
            operations = await this.applyChange(this.state.update(snapshot, c.full ? undefined : [...c.changed, ...c.deleted]));
          } catch (e) {
            if (!(e instanceof SessionError)) throw e;
            // What the session applied before failing is unknown: read the kernel and write it all.
            log.warn('IPVS partial sync failed in its long-lived session; syncing everything with one-shot tools', { family: this.family, error: e.message });
            this.forget();
            operations = await this.writeAll(new IpvsState(this.config).load(snapshot));
          }
        } else {
          operations = await this.writeAll(new IpvsState(this.config).load(snapshot));
          // Started now, so the first partial sync does not wait for them.
          ipvsadmSession(this.exec);
          ipsetSession(this.exec);
        }
        if (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0) await flushStale(this.family, snapshot.changes, this.exec);
        return { operations, full: snapshot.changes.full };
      } catch (e) {
        this.syncFailures++;
        this.forget();
        log.error('ipvs sync failed', { family: this.family, error: e instanceof Error ? e.message : String(e) });
        throw e;
      }
    });
  }

  /** After a failure nothing is assumed about the kernel: the next sync reads and rewrites it all. */
  private forget(): void {
    this.state = undefined;
    this.known = undefined;
    this.writtenChains = '';
  }

  /** Writes a whole state: every set restored, kube-ipvs0 and the virtual servers compared with the kernel's. */
  private async writeAll(state: IpvsState): Promise<number> {
    const rs = state.ruleset();
    let operations = 0;
    // Sets first: the chains refer to them.
    await restoreIpsets(toIpsetRestore(rs.ipsets), this.exec);
    operations += rs.ipsets.length;
    this.excludeCIDRs = rs.excludeCIDRs;
    operations += await this.applyVirtualServers(rs);
    operations += await syncDummy(rs.dummyAddresses, this.family, this.exec);
    operations += await this.writeChains(rs.iptables.chains, rs.jumps);
    this.state = state;
    return operations;
  }

  /** Writes what one update changed: entries, addresses, virtual servers, and the chains when their text changed. */
  private async applyChange(change: IpvsChange): Promise<number> {
    if (change.ipsetInput !== '') await ipsetSession(this.exec).run(change.ipsetInput, this.opts.sessionTimeoutMs);
    let operations = change.ipsetInput === '' ? 0 : change.ipsetInput.split('\n').length - 1;
    operations += await this.applyVirtualServerChanges(change.virtualServers);
    operations += await editDummy(change.dummyAdd, change.dummyDel, this.family, this.exec);
    if (change.chainsChanged) operations += await this.writeChains(this.state!.chains(), []);
    return operations;
  }

  /** Restores the chains when their text changed; the first time also removes other modes' chains and adds the jumps. */
  private async writeChains(list: IptChain[], jumps: IpvsRuleset['jumps']): Promise<number> {
    let operations = 0;
    const rs = { iptables: { family: this.family, chains: list }, jumps };
    const chains = toRestoreInput(rs.iptables);
    if (chains !== this.writtenChains) {
      const first = this.writtenChains === '';
      // One save of every table (a table not listed has no rules yet): each process counts.
      const saved = first ? parseSave(await saveTables(this.family, this.flavour!, this.exec)) : undefined;
      const stale: Array<{ table: IptChain['table']; name: string }> = [];
      for (const [table, t] of saved ?? []) {
        for (const name of t.chains.keys()) {
          if (!t.builtin.has(name) && isKubeProxyChain(table, name) && !isIpvsModeChain(table, name)) stale.push({ table: table as IptChain['table'], name });
        }
      }
      await restore(toRestoreInput(rs.iptables, stale), this.family, this.flavour!, this.exec);
      if (saved) await ensureJumps(rs.jumps, this.family, this.flavour!, this.exec, saved);
      this.writtenChains = chains;
      operations += rs.iptables.chains.length;
    }
    return operations;
  }

  /** The diff's commands, plus the deletion of draining real servers that are done. */
  private async applyVirtualServers(rs: IpvsRuleset): Promise<number> {
    const current = this.known ? [...this.known.values()] : await readVirtualServers(this.exec);
    const diff = diffVirtualServers(current, rs.virtualServers, this.family, rs.excludeCIDRs);
    const stillDraining = new Set(diff.draining.map(serverKey));
    for (const k of [...this.draining.keys()]) if (!stillDraining.has(k)) this.draining.delete(k);
    for (const d of diff.draining) if (!this.draining.has(serverKey(d))) this.draining.set(serverKey(d), { ...d, since: this.now() });
    const done = await this.drained();
    const commands = [...diff.commands, ...done.map((d) => `-d ${d.service} -r ${d.realServer}`)];
    this.lastCommands = commands;
    await restoreIpvs(commands, this.exec);
    for (const d of done) this.draining.delete(serverKey(d));
    this.known = withDraining(rs.virtualServers, [...this.draining.values()]);
    this.armTimer();
    return commands.length;
  }

  /** The diff of only the virtual servers one update touched; draining elsewhere goes on as before. */
  private async applyVirtualServerChanges(changes: IpvsChange['virtualServers']): Promise<number> {
    const known = this.known!;
    const refs = new Set(changes.map((c) => serviceRef((c.desired ?? c.before)!)));
    const current = [...refs].map((r) => known.get(r)).filter((v): v is ParsedVirtualServer => v !== undefined);
    const desired = changes.map((c) => c.desired).filter((v): v is VirtualServer => v !== undefined);
    const diff = diffVirtualServers(current, desired, this.family, this.excludeCIDRs);
    const stillDraining = new Set(diff.draining.map(serverKey));
    for (const [k, d] of [...this.draining]) if (refs.has(d.service) && !stillDraining.has(k)) this.draining.delete(k);
    for (const d of diff.draining) if (!this.draining.has(serverKey(d))) this.draining.set(serverKey(d), { ...d, since: this.now() });
    // TCP and SCTP real servers drain on the timer: their connection counts come from a listing of
    // every real server, which costs what the whole table costs, not what the change costs. UDP
    // ones go at once, as in drained().
    const udp = [...this.draining.values()].filter((d) => refs.has(d.service) && d.service.startsWith('-u '));
    const commands = [...diff.commands, ...udp.map((d) => `-d ${d.service} -r ${d.realServer}`)];
    this.lastCommands = commands;
    await this.feedIpvs(commands);
    for (const d of udp) this.draining.delete(serverKey(d));
    for (const r of refs) known.delete(r);
    const draining = [...this.draining.values()].filter((d) => refs.has(d.service));
    for (const [r, v] of withDraining(desired, draining)) known.set(r, v);
    this.armTimer();
    return commands.length;
  }

  /** ipvsadm commands through the long-lived session (a partial sync or a drain check). */
  private async feedIpvs(commands: readonly string[]): Promise<void> {
    if (commands.length > 0) await ipvsadmSession(this.exec).run(commands.join('\n') + '\n', this.opts.sessionTimeoutMs);
  }

  /** Drops deleted real servers from what we know of the kernel. */
  private forgetDeleted(known: Map<string, ParsedVirtualServer>, done: Array<{ service: string; realServer: string }>): void {
    for (const d of done) {
      const v = known.get(d.service);
      if (v) v.realServers = v.realServers.filter((r) => hostPort(r.address, r.port) !== d.realServer);
    }
  }

  /** Draining real servers without connections, or past the bound. */
  private async drained(): Promise<Array<{ service: string; realServer: string }>> {
    if (this.draining.size === 0) return [];
    const counts = await connectionCounts(this.exec);
    const bound = this.opts.drainBoundMs ?? 15 * 60_000;
    // UDP has no connection end to wait for: as upstream, its real servers go at once (the
    // kernel moves their flows on the next packet, expire_nodest_conn).
    return [...this.draining.values()].filter((d) => d.service.startsWith('-u ') || (counts.get(serverKey(d)) ?? 0) === 0 || this.now() - d.since >= bound);
  }

  private armTimer(): void {
    if (this.draining.size === 0 || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.serial(() => this.checkDraining()).catch((e: unknown) => log.warn('checking draining IPVS real servers failed', { family: this.family, error: String(e) }));
    }, this.opts.drainCheckMs ?? 2000);
    this.timer.unref();
  }

  /** Deletes the draining real servers that are done (between syncs). */
  async checkDraining(): Promise<number> {
    if (!this.state || this.known === undefined) return 0;
    const done = await this.drained();
    const commands = done.map((d) => `-d ${d.service} -r ${d.realServer}`);
    if (commands.length > 0) {
      this.lastCommands = commands;
      try {
        await this.feedIpvs(commands);
      } catch (e) {
        if (!(e instanceof SessionError)) throw e;
        // Which deletions ran is unknown: the next sync reads the kernel and writes it all.
        log.warn('deleting drained IPVS real servers failed in the long-lived session; the next sync is a full one', { family: this.family, error: e.message });
        this.forget();
        return 0;
      }
      for (const d of done) this.draining.delete(serverKey(d));
      this.forgetDeleted(this.known, done);
      log.v(2, 'deleted drained IPVS real servers', { family: this.family, count: commands.length });
    }
    this.armTimer();
    return commands.length;
  }

  /** Real servers still draining, as `<service> <real server>` (tests, debugging). */
  drainingServers(): string[] {
    return [...this.draining.keys()];
  }

  verify(stopping?: AbortSignal): Promise<VerifyResult> {
    if (this.opts.dryRun || !this.state || !this.flavour) return Promise.resolve(NOTHING_TO_REPAIR);
    return this.serial(() => {
      const state = this.state;
      return state ? this.check.run(() => this.findDifferences(state), stopping) : Promise.resolve(NOTHING_TO_REPAIR);
    });
  }

  kernelInSync(): boolean {
    return this.check.inSync();
  }

  private async findDifferences(state: IpvsState): Promise<Finding> {
    const rs = state.ruleset();
    const differences: Difference[] = [];
    const diff = diffVirtualServers(await readVirtualServers(this.exec), rs.virtualServers, this.family, rs.excludeCIDRs);
    tally(differences, 'ipvsadm command needed', diff.commands.length);
    const sets = await savedIpsetEntries(this.exec);
    tallyNamed(differences, 'changed ipset', rs.ipsets.filter((s) => (sets.get(s.name) ?? ['missing']).sort().join(' ') !== [...s.entries].sort().join(' ')).map((s) => s.name));
    const addrs = (await dummyAddresses(this.family, this.exec)) ?? ['missing'];
    tally(differences, 'wrong address on kube-ipvs0', addrs.sort().join(' ') === [...rs.dummyAddresses].sort().join(' ') ? 0 : 1);
    const saved = parseSave(await saveTables(this.family, this.flavour!, this.exec, ['nat', 'filter']));
    tallyNamed(
      differences,
      'changed chain',
      rs.iptables.chains.filter((c) => (saved.get(c.table)?.chains.get(c.name) ?? ['missing']).join('\n') !== c.rules.join('\n')).map((c) => `${c.table}/${c.name}`),
    );
    const wrongJumps = rs.jumps.filter((j) => (saved.get(j.table)?.chains.get(j.chain) ?? []).filter((r) => r === j.rule).length !== 1).length;
    tally(differences, 'missing or doubled jump from a built-in chain', wrongJumps);
    if (differences.length === 0) return { differences };
    return {
      differences,
      apply: async () => {
        this.forget();
        await this.writeAll(state);
      },
    };
  }

  /** Removes our chains, virtual servers, ipsets and kube-ipvs0. */
  async cleanup(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.draining.clear();
    this.forget();
    if (this.opts.dryRun) return;
    this.flavour ??= (await detectFlavour(this.exec)).flavour;
    await removeIptablesLeftovers([{ family: this.family, flavour: this.flavour }], this.exec, isIpvsModeChain);
    await removeIpvsLeftovers(this.exec);
  }

  /** What was last rendered: ipvsadm, ipset and iptables-restore input. */
  describe(): string {
    const rs = this.state?.ruleset();
    if (!rs) return '';
    return `# ipvsadm --restore\n${toIpvsadmRestore(rs.virtualServers)}# ipset restore\n${toIpsetRestore(rs.ipsets)}# iptables-restore --noflush\n${toRestoreInput(rs.iptables)}`;
  }
}

/** The kernel's virtual servers after a sync: the desired ones, draining real servers kept at weight 0. */
function withDraining(desired: IpvsRuleset['virtualServers'], draining: Array<{ service: string; realServer: string }>): Map<string, ParsedVirtualServer> {
  const out = byRef(desired.map((v) => ({ ...v, realServers: v.realServers.map((r) => ({ ...r, forwarding: 'masq' as const })) })));
  for (const d of draining) {
    const v = out.get(d.service);
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(d.realServer);
    if (v && m) v.realServers.push({ address: m[1]!, port: Number(m[2]), weight: 0, forwarding: 'masq' });
  }
  return out;
}

function byRef(list: ParsedVirtualServer[]): Map<string, ParsedVirtualServer> {
  return new Map(list.map((v) => [serviceRef(v), v]));
}
