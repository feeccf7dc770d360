// Start-up checks: what the proxy cannot work without, each reported with one clear message
// so that a node operator sees the cause at once instead of a failing sync loop.
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { TOOL_ENV } from './exec.js';

/** The proxy modes (config's Mode; repeated here because node sits below config). */
export type Mode = 'iptables' | 'nftables' | 'ipvs' | 'userspace';

/** The tools each mode runs (upstream's packages: nftables, iptables, ipset, ipvsadm, conntrack). */
export const TOOLS_BY_MODE: Record<Mode, string[]> = {
  nftables: ['nft', 'conntrack'],
  iptables: ['iptables', 'iptables-save', 'iptables-restore', 'conntrack'],
  ipvs: ['ipvsadm', 'ipset', 'iptables', 'iptables-save', 'iptables-restore', 'conntrack'],
  userspace: ['iptables', 'iptables-save', 'iptables-restore', 'conntrack'],
};

/** The kernel features each mode needs, and a file that exists only when the kernel has one. */
const KERNEL_SUPPORT: Record<Mode, Array<{ feature: string; path: string; module: string }>> = {
  // nf_tables has no marker file; the nft probe below answers for it.
  nftables: [{ feature: 'connection tracking', path: '/proc/sys/net/netfilter/nf_conntrack_max', module: 'nf_conntrack' }],
  iptables: [{ feature: 'connection tracking', path: '/proc/sys/net/netfilter/nf_conntrack_max', module: 'nf_conntrack' }],
  ipvs: [
    { feature: 'IPVS', path: '/proc/net/ip_vs', module: 'ip_vs' },
    { feature: 'connection tracking', path: '/proc/sys/net/netfilter/nf_conntrack_max', module: 'nf_conntrack' },
  ],
  userspace: [{ feature: 'connection tracking', path: '/proc/sys/net/netfilter/nf_conntrack_max', module: 'nf_conntrack' }],
};

export interface CheckEnvironment {
  uid: number;
  /** Whether an executable of this name is on PATH. */
  hasTool(name: string): boolean;
  /** Whether a kernel feature's marker file exists. */
  exists(path: string): boolean;
  /** Whether the kernel accepts nftables requests (`nft list flowtables` succeeds). */
  nftablesWorks(): Promise<boolean>;
}

/** Whether `name` is an executable file in one of PATH's directories. */
export function onPath(name: string, path = process.env.PATH ?? ''): boolean {
  return path.split(delimiter).some((dir) => {
    if (dir === '') return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export function hostEnvironment(): CheckEnvironment {
  return {
    uid: process.getuid?.() ?? 0,
    hasTool: (n) => onPath(n),
    exists: (p) => existsSync(p),
    // Listing flowtables needs no set elements: `nft list tables` takes seconds over a large ruleset.
    nftablesWorks: () => new Promise((resolve) => execFile('nft', ['list', 'flowtables'], { env: TOOL_ENV }, (err) => resolve(err === null))),
  };
}

/**
 * The problems that stop the proxy from programming `mode`, one message each; empty when it
 * can start.
 */
export async function startupProblems(mode: Mode, env: CheckEnvironment = hostEnvironment()): Promise<string[]> {
  const problems: string[] = [];
  if (env.uid !== 0) {
    problems.push(`kube-proxy-ts must run as root to program the kernel (running as uid ${env.uid}); use --dry-run to only print the rules`);
  }
  for (const tool of TOOLS_BY_MODE[mode]) {
    if (!env.hasTool(tool)) problems.push(`${tool} is not installed or not on PATH; ${mode} mode needs it (scripts/install-deps.sh installs it)`);
  }
  // Without root or nft the probe's failure would say nothing new.
  if (mode === 'nftables' && env.uid === 0 && env.hasTool('nft') && !(await env.nftablesWorks())) {
    problems.push('the kernel has no nf_tables support (`nft list flowtables` fails; modprobe nf_tables); nftables mode needs it');
  }
  for (const k of KERNEL_SUPPORT[mode]) {
    if (!env.exists(k.path)) problems.push(`the kernel has no ${k.feature} support (${k.path} is missing; modprobe ${k.module}); ${mode} mode needs it`);
  }
  return problems;
}
