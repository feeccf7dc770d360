// Virtual servers as `ipvsadm --restore` input, and `ipvsadm -Sn` output parsed back into the
// same structure, so the kernel's state can be compared with a render.
//   -A -t 10.96.0.10:80 -s rr [-b mh-port] [-p 10800]
//   -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1
import type { Protocol } from '../../model/types.js';
import { canonicalIP } from '../iptables/syntax.js';
import { type RealServer, type Scheduler, type VirtualServer } from './types.js';

const SERVICE_OPTION: Record<Protocol, string> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };
const OPTION_PROTOCOL = new Map<string, Protocol>([
  ['-t', 'TCP'],
  ['--tcp-service', 'TCP'],
  ['-u', 'UDP'],
  ['--udp-service', 'UDP'],
  ['--sctp-service', 'SCTP'],
]);

export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function serviceRef(v: Pick<VirtualServer, 'protocol' | 'address' | 'port'>): string {
  return `${SERVICE_OPTION[v.protocol]} ${hostPort(v.address, v.port)}`;
}

/** Scheduler, its flags and persistence, as ipvsadm prints them: `-s rr [-b mh-port] [-p 10800]`. */
export function serviceOptions(v: Pick<VirtualServer, 'scheduler' | 'schedulerFlags' | 'persistenceTimeoutSeconds'>): string {
  const flags = v.schedulerFlags?.length ? ` -b ${v.schedulerFlags.join(',')}` : '';
  const persistent = v.persistenceTimeoutSeconds !== undefined ? ` -p ${v.persistenceTimeoutSeconds}` : '';
  return `-s ${v.scheduler}${flags}${persistent}`;
}

/** `ipvsadm --restore` lines that add every virtual server and its real servers (masquerading). */
export function toIpvsadmRestore(servers: VirtualServer[]): string {
  const out: string[] = [];
  for (const v of servers) {
    const ref = serviceRef(v);
    out.push(`-A ${ref} ${serviceOptions(v)}`);
    for (const r of v.realServers) out.push(`-a ${ref} -r ${hostPort(r.address, r.port)} -m -w ${r.weight}`);
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

/** A virtual server as parsed from the kernel, which may hold what we never write. */
export interface ParsedVirtualServer extends Omit<VirtualServer, 'scheduler' | 'realServers'> {
  /** Any scheduler name the kernel reports. */
  scheduler: Scheduler | string;
  realServers: Array<RealServer & { forwarding: 'masq' | 'route' | 'tunnel' }>;
}

export class IpvsadmParseError extends Error {}

function parseHostPort(text: string, line: string): { address: string; port: number } {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(text) ?? /^([0-9.]+):(\d+)$/.exec(text);
  const address = m ? (canonicalIP(m[1]!, m[1]!.includes(':') ? 'IPv6' : 'IPv4') ?? '') : '';
  const port = m ? Number(m[2]) : NaN;
  if (!address || !Number.isInteger(port) || port < 0 || port > 65535) throw new IpvsadmParseError(`bad address "${text}" in: ${line}`);
  return { address, port };
}

function vsKey(protocol: Protocol, address: string, port: number): string {
  return `${protocol} ${address} ${port}`;
}

/**
 * `ipvsadm -Sn` (or --restore input) back into virtual servers, in the order listed. Lines for
 * services we never create (firewall marks) are skipped; anything else malformed throws.
 */
export function parseIpvsadmSave(text: string): ParsedVirtualServer[] {
  const byKey = new Map<string, ParsedVirtualServer>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const words = line.split(/\s+/);
    const cmd = words[0];
    if (cmd !== '-A' && cmd !== '-a') throw new IpvsadmParseError(`unknown command in: ${line}`);
    const protocol = OPTION_PROTOCOL.get(words[1] ?? '');
    if (!protocol) {
      if (words[1] === '-f' || words[1] === '--fwmark-service') continue;
      throw new IpvsadmParseError(`no service in: ${line}`);
    }
    const { address, port } = parseHostPort(words[2] ?? '', line);
    const key = vsKey(protocol, address, port);
    const opts = new Map<string, string | undefined>();
    for (let i = 3; i < words.length; i++) {
      const w = words[i]!;
      const takesValue = ['-s', '-p', '-b', '-r', '-w', '-M', '-x', '-y', '--pe'].includes(w);
      opts.set(w, takesValue ? words[++i] : undefined);
    }
    if (cmd === '-A') {
      const scheduler = opts.get('-s') ?? 'wlc';
      const v: ParsedVirtualServer = { protocol, address, port, scheduler, realServers: [] };
      if (opts.has('-p')) v.persistenceTimeoutSeconds = Number(opts.get('-p') ?? 300);
      const flags = opts.get('-b');
      if (flags) v.schedulerFlags = flags.split(',');
      byKey.set(key, v);
    } else {
      const v = byKey.get(key);
      if (!v) throw new IpvsadmParseError(`real server of an unknown service in: ${line}`);
      const rs = parseHostPort(opts.get('-r') ?? '', line);
      // ipvsadm's default forwarding method is direct routing.
      const forwarding = opts.has('-m') ? 'masq' : opts.has('-i') ? 'tunnel' : 'route';
      v.realServers.push({ ...rs, weight: Number(opts.get('-w') ?? 1), forwarding });
    }
  }
  return [...byKey.values()];
}

