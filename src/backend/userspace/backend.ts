// The userspace (legacy) mode: an in-process proxy listens on one port per service port and
// policy, and nat rules redirect service traffic to it. Its data plane is this process, so
// stopping removes the rules (traffic could not flow without it anyway).
import type { Backend, BackendConfig, CarriedTraffic, SyncResult, VerifyResult } from '../types.js';
import type { Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import type { ExecOptions } from '../../node/exec.js';
import { removeIptablesLeftovers } from '../common/leftovers.js';
import { ensureJumps, parseSave, restore, saveTables, type Flavour } from '../iptables/apply.js';
import { startUpFlavour } from '../iptables/startup.js';
import { renderContext } from '../iptables/render.js';
import { toRestoreInput, type IptChain, type RuleParts } from '../iptables/syntax.js';
import { isUserspaceChain } from './names.js';
import { planUserspace, type ListenerSpec, type UserspacePlan } from './plan.js';
import { redirectJumps, renderRedirects } from './render.js';

/** The in-process proxy as the backend drives it: the full desired set of listeners each time. */
export interface ListenerPool {
  /** Opens, updates and closes listeners; returns the port of each listener it serves. */
  update(listeners: ListenerSpec[]): Promise<Map<string, number>>;
  close(): Promise<void>;
  stats(): Omit<CarriedTraffic, 'purpose'>;
}

/** The pool's counters as a backend reports them. */
export function carried(pool: ListenerPool | undefined, purpose: CarriedTraffic['purpose']): CarriedTraffic | undefined {
  if (!pool) return undefined;
  const s = pool.stats();
  return { purpose, accepted: s.accepted, refused: s.refused, activeConnections: s.activeConnections, udpSessions: s.udpSessions, bytesIn: s.bytesIn, bytesOut: s.bytesOut };
}

export interface UserspaceBackendOptions extends ExecOptions {
  dryRun?: boolean;
  out?: (text: string) => void;
  /** Makes the proxy for this family (not called in a dry run: nothing is bound). */
  createPool: () => ListenerPool;
  /** NodePort addresses of this family; null means every local address. */
  nodePortIPs: string[] | null;
  /** The flavour to use; detected from the node's rules when absent. */
  flavour?: Flavour;
  /** Start-up cleanup of the other modes' leftovers, once the flavour is known. */
  removeLeftovers?: (flavour: Flavour) => Promise<void>;
}

export class UserspaceBackend implements Backend {
  readonly mode = 'userspace';
  readonly family;
  private pool: ListenerPool | undefined;
  private flavour: Flavour | undefined;
  private written: IptChain[] | undefined;
  /** Service key → its listeners' ports, as of the last sync. */
  private replyPorts = new Map<string, number[]>();
  private inSync = true;
  /** Traffic from this node's pods, as the iptables mode detects it (absent: not detectable). */
  private readonly fromLocalPods: RuleParts | undefined;

  constructor(
    cfg: BackendConfig,
    private readonly opts: UserspaceBackendOptions,
  ) {
    this.family = cfg.family;
    this.fromLocalPods = renderContext(cfg).ifLocal;
  }

  async sync(snapshot: Snapshot): Promise<SyncResult> {
    const plan = planUserspace(snapshot);
    if (this.opts.dryRun) {
      // Ports are chosen when the proxy listens; a dry run binds nothing and shows them as 0.
      const ports = new Map(plan.listeners.map((l) => [l.key, 0]));
      const chains = renderRedirects(plan, ports, this.opts.nodePortIPs, this.fromLocalPods);
      const note = '# proxy ports are chosen when the proxy listens: a dry run binds nothing and shows them as 0\n';
      (this.opts.out ?? ((t) => process.stdout.write(t)))(note + toRestoreInput({ family: this.family, chains }));
      return { operations: 0, full: true };
    }
    this.pool ??= this.opts.createPool();
    const ports = await this.pool.update(plan.listeners);
    this.replyPorts = replyPortsOf(plan, ports);
    const chains = renderRedirects(plan, ports, this.opts.nodePortIPs, this.fromLocalPods);
    const flavour = await this.ensureFlavour();
    const changed = this.written === undefined || !sameChains(this.written, chains) || !this.inSync;
    if (changed) {
      try {
        await restore(toRestoreInput({ family: this.family, chains }), this.family, flavour, this.opts);
      } catch (e) {
        this.inSync = false;
        throw e;
      }
      this.written = chains;
    }
    const jumps = await ensureJumps(redirectJumps(this.opts.nodePortIPs), this.family, flavour, this.opts);
    this.inSync = true;
    return { operations: (changed ? chains.reduce((n, c) => n + c.rules.length, 0) : 0) + jumps, full: changed };
  }

  kernelInSync(): boolean {
    return this.inSync;
  }

  carriedTraffic(): CarriedTraffic | undefined {
    return carried(this.pool, 'userspace');
  }

  conntrackReplyPorts(): ReadonlyMap<string, readonly number[]> {
    return this.replyPorts;
  }

  /** Compares our four chains and their jumps with the kernel's, and rewrites them when they differ. */
  async verify(): Promise<VerifyResult> {
    if (this.opts.dryRun || this.written === undefined || this.flavour === undefined) return { repaired: 0, differences: [] };
    const saved = parseSave(await saveTables(this.family, this.flavour, this.opts, ['nat'])).get('nat');
    const differences: string[] = [];
    for (const c of this.written) {
      const have = saved?.chains.get(c.name);
      if (have === undefined) differences.push(`chain ${c.name} is missing`);
      else if (have.length !== c.rules.length || have.some((r, i) => r !== c.rules[i])) differences.push(`chain ${c.name} differs`);
    }
    if (differences.length > 0) {
      this.inSync = false;
      await restore(toRestoreInput({ family: this.family, chains: this.written }), this.family, this.flavour, this.opts);
    }
    const jumps = await ensureJumps(redirectJumps(this.opts.nodePortIPs), this.family, this.flavour, this.opts);
    if (jumps > 0) differences.push(`${jumps} jump rule(s) from PREROUTING/OUTPUT fixed`);
    this.inSync = true;
    return { repaired: differences.length, differences };
  }

  /** Stopping: the redirect rules go first (nothing would answer them), then the sockets. */
  async stop(removeRules: boolean): Promise<void> {
    if (removeRules) await this.removeRules();
    await this.pool?.close();
    this.pool = undefined;
  }

  async cleanup(): Promise<void> {
    await this.stop(true);
  }

  describe(): string {
    return this.written ? toRestoreInput({ family: this.family, chains: this.written }) : '';
  }

  private async removeRules(): Promise<void> {
    if (this.opts.dryRun || this.flavour === undefined) return;
    const removed = await removeIptablesLeftovers([{ family: this.family, flavour: this.flavour }], this.opts, (_t, chain) => isUserspaceChain(chain));
    this.written = undefined;
    log.info('removed the userspace proxy redirect rules', { family: this.family, chains: removed });
  }

  private async ensureFlavour(): Promise<Flavour> {
    this.flavour ??= await startUpFlavour(this.family, this.opts.flavour, this.opts, this.opts.removeLeftovers);
    return this.flavour;
  }
}

function replyPortsOf(plan: UserspacePlan, ports: ReadonlyMap<string, number>): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of plan.listeners) {
    const port = ports.get(l.key);
    if (port === undefined) continue;
    const list = out.get(l.service);
    if (list) list.push(port);
    else out.set(l.service, [port]);
  }
  return out;
}

function sameChains(a: IptChain[], b: IptChain[]): boolean {
  return a.length === b.length && a.every((c, i) => c.name === b[i]!.name && c.rules.length === b[i]!.rules.length && c.rules.every((r, j) => r === b[i]!.rules[j]));
}
