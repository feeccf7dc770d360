// The kernel settings kube-proxy makes on its node, as upstream: the conntrack table size and
// timeouts, tcp_be_liberal, and route_localnet for iptables-mode localhost NodePorts.
//
// All but one are per network namespace, so they are written in the proxy's own namespace
// (a test runs the proxy in a namespace of its own; a real node runs it in the host's).
// nf_conntrack_max is global to the kernel and read-only outside the initial namespace: it is
// raised only from there, and never lowered.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { log } from '../log.js';

/** The configuration's node settings, durations already in whole seconds (0: leave alone). */
export interface NodeSettings {
  conntrackMaxPerCore: number;
  conntrackMin: number;
  tcpEstablishedTimeoutSec: number;
  tcpCloseWaitTimeoutSec: number;
  tcpBeLiberal: boolean;
  udpTimeoutSec: number;
  udpStreamTimeoutSec: number;
  /** iptables mode with localhostNodePorts: NodePorts on 127.0.0.1 need route_localnet. */
  routeLocalnet: boolean;
}

export interface SysctlSetting {
  /** Name below /proc/sys, with slashes. */
  name: string;
  value: number;
  /** Only ever raised (the kernel's value is kept when already higher). */
  raiseOnly?: boolean;
  /** Global to the kernel: written only from the initial network namespace. */
  global?: boolean;
}

const NETFILTER = 'net/netfilter';
export const CONNTRACK_MAX = `${NETFILTER}/nf_conntrack_max`;

/** Upstream's table size: maxPerCore × cores, at least min; 0 maxPerCore leaves it alone. */
export function conntrackMax(maxPerCore: number, min: number, cores: number): number {
  if (maxPerCore === 0) return 0;
  return Math.max(maxPerCore * cores, min);
}

/** The sysctls the settings ask for, in the order they are written. */
export function desiredSysctls(n: NodeSettings, cores = cpus().length): SysctlSetting[] {
  const out: SysctlSetting[] = [];
  const max = conntrackMax(n.conntrackMaxPerCore, n.conntrackMin, cores);
  if (max > 0) out.push({ name: CONNTRACK_MAX, value: max, raiseOnly: true, global: true });
  const timeout = (name: string, seconds: number): void => {
    if (seconds > 0) out.push({ name: `${NETFILTER}/${name}`, value: seconds });
  };
  timeout('nf_conntrack_tcp_timeout_established', n.tcpEstablishedTimeoutSec);
  timeout('nf_conntrack_tcp_timeout_close_wait', n.tcpCloseWaitTimeoutSec);
  if (n.tcpBeLiberal) out.push({ name: `${NETFILTER}/nf_conntrack_tcp_be_liberal`, value: 1 });
  timeout('nf_conntrack_udp_timeout', n.udpTimeoutSec);
  timeout('nf_conntrack_udp_timeout_stream', n.udpStreamTimeoutSec);
  // iptables mode DNATs NodePorts on 127.0.0.1, which the kernel routes only with route_localnet.
  if (n.routeLocalnet) out.push({ name: 'net/ipv4/conf/all/route_localnet', value: 1 });
  return out;
}

export interface SysctlOptions {
  /** Root of the sysctl tree (tests point it at a directory of their own). */
  procSys?: string;
  /** Whether the process is in the kernel's initial network namespace (default: detected). */
  initialNetns?: boolean;
}

/** Whether this process shares the network namespace of PID 1 (the host's, on a node). */
export function inInitialNetns(): boolean {
  try {
    return statSync('/proc/self/ns/net').ino === statSync('/proc/1/ns/net').ino;
  } catch {
    return false;
  }
}

export type SysctlOutcome = 'set' | 'unchanged' | 'kept-higher' | 'skipped-global' | 'failed';

/** Writes each setting that differs, logging what it did; never throws. */
export function applySysctls(settings: SysctlSetting[], opts: SysctlOptions = {}): Map<string, SysctlOutcome> {
  const root = opts.procSys ?? '/proc/sys';
  const initial = opts.initialNetns ?? inInitialNetns();
  const outcomes = new Map<string, SysctlOutcome>();
  for (const s of settings) {
    const path = join(root, s.name);
    const key = s.name.replace(/\//g, '.');
    let current: number;
    try {
      current = Number(readFileSync(path, 'utf8').trim());
    } catch (e) {
      log.warn('cannot read sysctl', { sysctl: key, error: (e as Error).message });
      outcomes.set(s.name, 'failed');
      continue;
    }
    if (current === s.value) {
      log.info('sysctl already set', { sysctl: key, value: s.value });
      outcomes.set(s.name, 'unchanged');
      continue;
    }
    if (s.raiseOnly && current > s.value) {
      log.info('sysctl kept: already higher', { sysctl: key, value: current, wanted: s.value });
      outcomes.set(s.name, 'kept-higher');
      continue;
    }
    if (s.global && !initial) {
      log.info('sysctl not set: it is global to the kernel and this proxy runs in another network namespace', {
        sysctl: key,
        value: current,
        wanted: s.value,
      });
      outcomes.set(s.name, 'skipped-global');
      continue;
    }
    try {
      writeFileSync(path, `${s.value}\n`);
      log.info('set sysctl', { sysctl: key, from: current, to: s.value });
      outcomes.set(s.name, 'set');
    } catch (e) {
      log.warn('setting sysctl failed', { sysctl: key, value: s.value, error: (e as Error).message });
      outcomes.set(s.name, 'failed');
    }
  }
  return outcomes;
}
