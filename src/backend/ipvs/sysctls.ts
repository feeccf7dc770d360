// The kernel settings the IPVS mode needs, as upstream sets them, and the IPVS connection
// timeouts as an `ipvsadm --set` command: pure data for the apply layer to write.
import type { SysctlSetting } from '../../node/sysctl.js';

/** "6.1.0-13-amd64" → [6, 1]; undefined when unreadable. */
function majorMinor(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release.trim());
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

function atLeast(v: [number, number], major: number, minor: number): boolean {
  return v[0] > major || (v[0] === major && v[1] >= minor);
}

/**
 * vs/conntrack lets iptables see IPVS connections (masquerade, filters); expired destinations
 * drop their connections and persistence templates so a removed endpoint gets no new traffic;
 * ip_forward routes to endpoints on other nodes. conn_reuse_mode 0 works around slow
 * reconnects between kernels 4.1 and 5.9 (later kernels fixed it; earlier lack the knob).
 * strictARP keeps the node from answering ARP for addresses on kube-ipvs0 (for LB speakers).
 */
export function ipvsSysctls(opts: { strictARP: boolean; kernelRelease: string }): SysctlSetting[] {
  const out: SysctlSetting[] = [{ name: 'net/ipv4/vs/conntrack', value: 1 }];
  const v = majorMinor(opts.kernelRelease);
  if (v && atLeast(v, 4, 1) && !atLeast(v, 5, 9)) out.push({ name: 'net/ipv4/vs/conn_reuse_mode', value: 0 });
  out.push({ name: 'net/ipv4/vs/expire_nodest_conn', value: 1 });
  out.push({ name: 'net/ipv4/vs/expire_quiescent_template', value: 1 });
  out.push({ name: 'net/ipv4/ip_forward', value: 1 });
  if (opts.strictARP) {
    out.push({ name: 'net/ipv4/conf/all/arp_ignore', value: 1 });
    out.push({ name: 'net/ipv4/conf/all/arp_announce', value: 2 });
  }
  return out;
}

/**
 * `ipvsadm --set TCP TCPFIN UDP` arguments (seconds; 0 keeps the kernel's value), or
 * undefined when every timeout is 0 and the kernel's values stay.
 */
export function ipvsTimeoutArgs(t: { tcpSec: number; tcpFinSec: number; udpSec: number }): string[] | undefined {
  const vals = [t.tcpSec, t.tcpFinSec, t.udpSec].map((s) => (Number.isFinite(s) && s > 0 ? Math.floor(s) : 0));
  return vals.some((s) => s > 0) ? ['--set', ...vals.map(String)] : undefined;
}
