// The kernel's own listing of virtual servers, /proc/net/ip_vs, parsed into open connections per
// real server. Reading a file costs no process (in a User-Mode Linux guest a process start costs
// 0.3-0.6 s); the file shows the reader's network namespace, so the proxy reads it only when it
// runs in the namespace it programs. Lines look like (addresses and ports in hex):
//   TCP  0A60000A:0050 rr
//     -> 0AF40105:1F90      Masq    1      0          0
//   TCP  [2001:0db8:0000:0000:0000:0000:0000:000a]:0050 rr persistent 10800 FFFFFFFF
//     -> [fd00:0000:0000:0000:0000:0000:0000:0005]:1F90      Masq    1      2          0
import type { IPFamily } from '../../model/types.js';
import { canonicalIP } from '../iptables/syntax.js';
import { hostPort } from './ipvsadm.js';

const OPTION: Record<string, string> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };

/** `0A60000A:0050` or `[2001:0db8:…]:0050` as `10.96.0.10:80` / `[2001:db8::a]:80`; undefined if malformed. */
function hexHostPort(text: string): string | undefined {
  const v6 = /^\[([0-9a-fA-F:]+)\]:([0-9A-Fa-f]{4})$/.exec(text);
  const v4 = /^([0-9A-Fa-f]{8}):([0-9A-Fa-f]{4})$/.exec(text);
  let address: string | undefined;
  let family: IPFamily;
  if (v6) {
    family = 'IPv6';
    address = canonicalIP(v6[1]!, family);
  } else if (v4) {
    family = 'IPv4';
    const n = parseInt(v4[1]!, 16);
    address = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  } else return undefined;
  return address === undefined ? undefined : hostPort(address, parseInt((v6 ?? v4)![2]!, 16));
}

/**
 * Open connections (ActiveConn + InActConn) per real server, keyed `<service ref> <real server>`
 * as the diff names them, e.g. `-t 10.96.0.10:80 10.244.1.5:8080`. Firewall-mark services and
 * lines it cannot read are skipped: their real servers are never ours to drain.
 */
export function parseProcIpVs(text: string): Map<string, number> {
  const out = new Map<string, number>();
  let service: string | undefined;
  for (const line of text.split('\n')) {
    const vs = /^(\S+)\s+(\S+)\s/.exec(line + ' ');
    if (vs && !line.startsWith(' ')) {
      const option = OPTION[vs[1]!];
      const at = option ? hexHostPort(vs[2]!) : undefined;
      service = option && at ? `${option} ${at}` : undefined;
      continue;
    }
    const rs = /^\s+->\s+(\S+)\s+\S+\s+-?\d+\s+(\d+)\s+(\d+)/.exec(line);
    const at = rs ? hexHostPort(rs[1]!) : undefined;
    if (rs && at && service) out.set(`${service} ${at}`, Number(rs[2]) + Number(rs[3]));
  }
  return out;
}
