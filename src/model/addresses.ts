// Addresses that must never become a Service's external IP: traffic to them is either the
// node's own (loopback, unspecified), never routed (link-local), or not unicast at all.
import { cidrContains, parseCIDR, parseIP } from '../net/ip.js';

const UNUSABLE: Array<[string, string]> = [
  ['0.0.0.0/8', 'unspecified'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
];
const RANGES = UNUSABLE.map(([cidr, why]) => ({ cidr: parseCIDR(cidr)!, why }));

/** Why `ip` cannot be an external IP, or null when it can. */
export function unusableExternalIP(ip: string): string | null {
  const parsed = parseIP(ip);
  if (parsed === null) return 'not an IP address';
  for (const r of RANGES) if (r.cidr.family === parsed.family && cidrContains(r.cidr, parsed)) return r.why;
  return null;
}
