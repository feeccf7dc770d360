// One descriptor per proxy mode: everything the rest of the proxy needs to know about a mode
// (its backend, its configuration sections, what it leaves behind, where its NodePorts
// listen, its failure metric, its traceable rules, how the sandbox runs and inspects it),
// so that no other module tests a mode by name.
import type { IPFamily, Snapshot } from '../model/types.js';
import { cidrContains, parseCIDR, parseIP, type ParseOptions } from '../net/ip.js';
import type { ExecOptions } from '../node/exec.js';
import { log } from '../log.js';
import { decorate } from './common/decorate.js';
import { removeLeftovers, removeLeftoversForIpvs, removeLeftoversForIptables, removeLeftoversForUserspace } from './common/leftovers.js';
import { startUp, type StartUp } from './iptables/startup.js';
import { IptablesBackend } from './iptables/backend.js';
import { checkpointedKernels } from './iptables/checkpoint.js';
import { render as renderIptables, toRestoreInput } from './iptables/render.js';
import { IpvsBackend, isIpvsModeChain, type IpvsConfig } from './ipvs/backend.js';
import { renderIpvs } from './ipvs/render.js';
import type { IpvsRuleset } from './ipvs/types.js';
import { deleteTables } from './nftables/apply.js';
import { NftablesBackend } from './nftables/backend.js';
import type { NftRuleset } from './nftables/layout.js';
import { render, renderContext } from './nftables/render.js';
import type { Backend, BackendConfig, SyncResult } from './types.js';
import { UserspaceBackend } from './userspace/backend.js';
import { withLocalhostNodePorts } from './userspace/localhost.js';
import { UserspaceProxy } from './userspace/proxy.js';

export const PROXY_MODE_NAMES = ['iptables', 'nftables', 'ipvs', 'userspace'] as const;
export type ProxyMode = (typeof PROXY_MODE_NAMES)[number];

export interface BackendOptions {
  /** Print what would be programmed instead of touching the kernel (no privileges needed). */
  dryRun: boolean;
  /** Where printed rulesets and snapshots go, each text complete with its newline (default: stdout). */
  out?: (text: string) => void;
  /** Command prefix for the kernel tools (tests run them in their own network namespace). */
  wrap?: string[];
  /** Path prefix for files a backend keeps across restarts (one per network namespace). */
  stateFilePrefix?: string;
}

/** A mode's rules in a form a packet tracer can follow, tagged by syntax. */
export type TraceableRules =
  | { syntax: 'nftables'; ruleset: NftRuleset }
  | { syntax: 'iptables'; text: string }
  | { syntax: 'ipvs'; ruleset: IpvsRuleset };

export interface ModeDescriptor {
  readonly name: ProxyMode;
  createBackend(cfg: BackendConfig, opts: BackendOptions): Backend;
  /** The KubeProxyConfiguration section holding syncPeriod / minSyncPeriod. */
  readonly syncSection: 'iptables' | 'ipvs' | 'nftables';
  /** The KubeProxyConfiguration section holding masqueradeBit / masqueradeAll. */
  readonly masqueradeSection: 'iptables' | 'nftables';
  /**
   * Begins the start-up work of backends made with `opts` (the flavour, the other modes'
   * leftovers removed, errors logged) while the proxy still waits for its first lists; resolves
   * when it is done. A failure is left to the backends, which wait for the same work.
   */
  prepare(opts: BackendOptions): Promise<void>;
  /** Removes everything this mode may have programmed (`--cleanup`). */
  cleanup(exec: ExecOptions): Promise<void>;
  /** The addresses NodePorts answer on for one family; null means every local address. */
  nodePortIPs(cfg: BackendConfig): string[] | null;
  /** Counter of failed syncs (full metric name), as upstream names it for the mode. */
  readonly syncFailureMetric?: { name: string; help: string };
  /** The rules the mode would program, in a traceable form; absent while no tracer can read them. */
  readonly traceableRules?: (snapshot: Snapshot, cfg: BackendConfig) => TraceableRules;
  readonly sandbox: {
    /** Kernel tools the sandbox needs besides ip and sysctl. */
    tools: string[];
    /** Shows the rules the mode programmed, run inside the proxy node's namespace. */
    dumpRules: string[];
  };
}

// Configured CIDRs are read as upstream reads them (leading zeros, IPv4-mapped IPv6).
const CONFIG_IP: ParseOptions = { leadingZeros: true, v4Mapped: true };
const PRIMARY = 'primary';

/**
 * iptables-style NodePort addresses: none given or a zero-length CIDR means every local
 * address; `primary` the first node IP; CIDRs the node IPs inside them.
 */
function localNodePortIPs(cfg: BackendConfig): string[] | null {
  if (cfg.nodePortAddresses.length === 0) return null;
  const cidrs = cfg.nodePortAddresses.filter((a) => a !== PRIMARY).map((a) => parseCIDR(a, CONFIG_IP));
  if (cidrs.some((c) => c !== null && c.prefix === 0)) return null;
  const primary = cfg.nodePortAddresses.includes(PRIMARY);
  const ips: string[] = [];
  cfg.nodeIPs.forEach((ip, i) => {
    const parsed = parseIP(ip, CONFIG_IP);
    if (parsed === null) return;
    if ((primary && i === 0) || cidrs.some((c) => c !== null && cidrContains(c, parsed))) ips.push(ip);
  });
  return [...new Set(ips)];
}

/** Awaits `remove` (shared, begun once) before the backend's first sync. */
function removingLeftoversFirst(backend: Backend, remove: () => Promise<void>): Backend {
  let done = false;
  return decorate(backend, {
    async sync(snapshot: Snapshot): Promise<SyncResult> {
      if (!done) {
        await remove();
        done = true;
      }
      return backend.sync(snapshot);
    },
  });
}

const execOf = (opts: BackendOptions): ExecOptions => (opts.wrap ? { wrap: opts.wrap } : {});

const removeIptablesChains = async (exec: ExecOptions): Promise<void> => {
  await removeLeftovers(exec, { ipvs: false });
};
const removeIpvs = async (exec: ExecOptions): Promise<void> => {
  await removeLeftovers(exec, { iptables: false });
};
const removeIptablesAndIpvs = async (exec: ExecOptions): Promise<void> => {
  await removeLeftovers(exec);
};

/**
 * A mode's start-up work, once per backend options object: every family's backend shares it,
 * and `prepare` begins it while the first lists load. A failed one is tried again by the next
 * caller.
 */
function oncePerOptions<T>(begin: (opts: BackendOptions) => Promise<T>): (opts: BackendOptions) => (() => Promise<T>) & { begin(): Promise<void> } {
  const started = new WeakMap<BackendOptions, Promise<T>>();
  return (opts) => {
    const get = (): Promise<T> => {
      let p = started.get(opts);
      if (!p) {
        p = begin(opts);
        started.set(opts, p);
        p.catch(() => started.delete(opts));
      }
      return p;
    };
    // Its failure reaches the backend that awaits it.
    return Object.assign(get, { begin: () => get().then(() => undefined, () => undefined) });
  };
}

/** Where a backend of `mode` and `family` keeps its restart checkpoint; none without state files. */
function checkpointFile(opts: BackendOptions, mode: 'nftables' | 'iptables', family: IPFamily): string | undefined {
  return opts.stateFilePrefix && `${opts.stateFilePrefix}.${mode}-${family === 'IPv6' ? 'ip6' : 'ip'}.checkpoint`;
}

// A family with a clean stop's checkpoint is not read at start-up: its checkpoint stands for it.
const beginIptables = (opts: BackendOptions): Promise<StartUp> => {
  const exec = execOf(opts);
  return startUp(exec, async (flavour) => {
    const fromCheckpoint = await checkpointedKernels(flavour, (family) => checkpointFile(opts, 'iptables', family), exec);
    const { unchanged } = await removeLeftoversForIptables(flavour, exec, new Set(fromCheckpoint.keys()));
    return new Map([...unchanged, ...fromCheckpoint]);
  });
};
const beginIpvs = (opts: BackendOptions): Promise<StartUp> => startUp(execOf(opts), async (flavour) => void (await removeLeftoversForIpvs(flavour, isIpvsModeChain, execOf(opts))));
const beginUserspace = (opts: BackendOptions): Promise<StartUp> => startUp(execOf(opts), async (flavour) => void (await removeLeftoversForUserspace(flavour, execOf(opts))));
const iptablesStartUp = oncePerOptions(beginIptables);
const ipvsStartUp = oncePerOptions(beginIpvs);
const userspaceStartUp = oncePerOptions(beginUserspace);
const nftablesStartUp = oncePerOptions((opts) => removeIptablesAndIpvs(execOf(opts)));

const nftables: ModeDescriptor = {
  name: 'nftables',
  createBackend(cfg, opts) {
    const exec = execOf(opts);
    const file = checkpointFile(opts, 'nftables', cfg.family);
    const backend = new NftablesBackend(cfg, { ...opts, ...exec, removeLeftovers: false, ...(file ? { checkpointFile: file } : {}) });
    if (opts.dryRun) return backend;
    const programmed = removingLeftoversFirst(backend, nftablesStartUp(opts));
    return cfg.userspaceProxy?.localhostNodePorts ? withLocalhostNodePorts(programmed, () => createUserspaceProxy(cfg, 'loopback')) : programmed;
  },
  prepare: (opts) => nftablesStartUp(opts).begin(),
  syncSection: 'nftables',
  masqueradeSection: 'nftables',
  cleanup: deleteTables,
  // Exactly the addresses the renderer puts in its NodePort set.
  nodePortIPs: (cfg) => renderContext(cfg).nodePortIPs,
  syncFailureMetric: { name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total', help: 'Cumulative proxy nftables sync failures' },
  traceableRules: (snapshot, cfg) => ({ syntax: 'nftables', ruleset: render(snapshot, cfg) }),
  sandbox: { tools: ['nft'], dumpRules: ['nft', 'list', 'table', 'ip', 'kube-proxy'] },
};

const iptables: ModeDescriptor = {
  name: 'iptables',
  createBackend(cfg, opts) {
    const exec = execOf(opts);
    const file = checkpointFile(opts, 'iptables', cfg.family);
    return new IptablesBackend(cfg, { ...opts, ...exec, ...(opts.dryRun ? {} : { startUp: iptablesStartUp(opts) }), ...(file ? { checkpointFile: file } : {}) });
  },
  prepare: (opts) => iptablesStartUp(opts).begin(),
  syncSection: 'iptables',
  masqueradeSection: 'iptables',
  cleanup: removeIptablesChains,
  nodePortIPs: localNodePortIPs,
  syncFailureMetric: {
    name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures',
  },
  traceableRules: (snapshot, cfg) => ({ syntax: 'iptables', text: toRestoreInput(renderIptables(snapshot, cfg)) }),
  sandbox: { tools: ['iptables-save'], dumpRules: ['iptables-save'] },
};

/** The IPVS backend's configuration: the family's, plus the `ipvs` section. */
function ipvsConfig(cfg: BackendConfig): IpvsConfig {
  const i = cfg.ipvs;
  if (!i) return cfg;
  return { ...cfg, scheduler: i.scheduler, excludeCIDRs: i.excludeCIDRs, strictARP: i.strictARP, timeouts: { tcpSec: i.tcpSec, tcpFinSec: i.tcpFinSec, udpSec: i.udpSec } };
}

const ipvs: ModeDescriptor = {
  name: 'ipvs',
  createBackend(cfg, opts) {
    const exec = execOf(opts);
    return new IpvsBackend(ipvsConfig(cfg), { ...opts, ...exec, ...(opts.dryRun ? {} : { startUp: ipvsStartUp(opts) }) });
  },
  prepare: (opts) => ipvsStartUp(opts).begin(),
  syncSection: 'ipvs',
  masqueradeSection: 'iptables',
  // Virtual servers, kube-ipvs0 and the ipsets. Its chains are kube-proxy chains, which the
  // iptables mode's cleanup removes (cleanupAll runs it first, so the sets are free by then).
  cleanup: removeIpvs,
  nodePortIPs: localNodePortIPs,
  // Upstream's IPVS mode counts its failed iptables restores under the iptables mode's name.
  syncFailureMetric: {
    name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures',
  },
  traceableRules: (snapshot, cfg) => ({ syntax: 'ipvs', ruleset: renderIpvs(snapshot, ipvsConfig(cfg)) }),
  sandbox: { tools: ['ipvsadm', 'ipset', 'iptables-save'], dumpRules: ['ipvsadm', '-Ln'] },
};

/** The in-process proxy for one family's backend, listening on every address of that family or on its loopback address. */
export function createUserspaceProxy(cfg: BackendConfig, on: 'any' | 'loopback' = 'any'): UserspaceProxy {
  const settings = cfg.userspaceProxy ?? { udpIdleTimeoutMs: 250, localhostNodePorts: false };
  const v4 = cfg.family === 'IPv4';
  return new UserspaceProxy({
    bindAddress: on === 'loopback' ? (v4 ? '127.0.0.1' : '::1') : v4 ? '0.0.0.0' : '::',
    ...(settings.portRange && on === 'any' ? { portRange: settings.portRange } : {}),
    udpIdleTimeoutMs: settings.udpIdleTimeoutMs,
    log: (msg) => log.info(msg, { family: cfg.family }),
  });
}

const userspace: ModeDescriptor = {
  name: 'userspace',
  createBackend(cfg, opts) {
    const exec = execOf(opts);
    return new UserspaceBackend(cfg, {
      ...exec,
      dryRun: opts.dryRun,
      ...(opts.out ? { out: opts.out } : {}),
      nodePortIPs: localNodePortIPs(cfg),
      createPool: () => createUserspaceProxy(cfg),
      ...(opts.dryRun ? {} : { startUp: userspaceStartUp(opts) }),
    });
  },
  prepare: (opts) => userspaceStartUp(opts).begin(),
  syncSection: 'iptables',
  masqueradeSection: 'iptables',
  cleanup: removeIptablesChains,
  nodePortIPs: localNodePortIPs,
  syncFailureMetric: {
    name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures',
  },
  sandbox: { tools: ['iptables-save'], dumpRules: ['iptables-save', '-t', 'nat'] },
};

export const MODES: Readonly<Record<ProxyMode, ModeDescriptor>> = { iptables, nftables, ipvs, userspace };

/** The descriptor of a mode name, or undefined for a name that is not a mode. */
export function modeDescriptor(name: string): ModeDescriptor | undefined {
  return (PROXY_MODE_NAMES as readonly string[]).includes(name) ? MODES[name as ProxyMode] : undefined;
}

/** `--cleanup`: every mode's cleanup (each distinct one once), whatever mode last ran. */
export async function cleanupAll(exec: ExecOptions = {}): Promise<void> {
  // Every mode's cleanup runs even when one fails: the others' leftovers must still go.
  const failed: string[] = [];
  for (const cleanup of new Set(Object.values(MODES).map((m) => m.cleanup))) {
    try {
      await cleanup(exec);
    } catch (e) {
      failed.push(e instanceof Error ? e.message : String(e));
    }
  }
  if (failed.length > 0) throw new Error(`cleanup incomplete: ${failed.join('; ')}`);
}

/** NodePort addresses over a node's families in one mode; null means every local address. */
export function nodePortIPsOf(mode: ModeDescriptor, configs: BackendConfig[]): string[] | null {
  const ips: string[] = [];
  for (const cfg of configs) {
    const own = mode.nodePortIPs(cfg);
    if (own === null) return null;
    ips.push(...own);
  }
  return [...new Set(ips)];
}
