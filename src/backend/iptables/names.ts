// Per-service chain names, hashed as upstream's iptables mode hashes them, so that runbooks
// and tools that look for KUBE-SVC-… / KUBE-SEP-… chains keep finding the same names.
import { nameWithHash, namesWithHash } from '../common/hash.js';

export type ServiceChainPrefix = 'KUBE-SVC-' | 'KUBE-SVL-' | 'KUBE-EXT-' | 'KUBE-FW-';

/** The beginnings of the names of the chains a service port owns (all in the nat table). */
export const SERVICE_PORT_CHAIN_PREFIXES: readonly string[] = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'];

/** Whether `chain` of `table` is one a service port owns. */
export function isServicePortChain(table: string, chain: string): boolean {
  return table === 'nat' && SERVICE_PORT_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** prefix + base32(sha256(servicePortName + protocol))[:16]; protocol is lower-cased. */
export function serviceChainName(prefix: ServiceChainPrefix, servicePortName: string, protocol: string): string {
  return nameWithHash(prefix, servicePortName + protocol.toLowerCase(), 16);
}

/** The four service chain names of a service port: one hash, as the names differ only in prefix. */
export function serviceChainNames(servicePortName: string, protocol: string): Record<'svc' | 'svl' | 'ext' | 'fw', string> {
  const [svc, svl, ext, fw] = namesWithHash(['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-'], servicePortName + protocol.toLowerCase(), 16);
  return { svc: svc!, svl: svl!, ext: ext!, fw: fw! };
}

/**
 * KUBE-SEP- + base32(sha256(servicePortName + protocol + endpoint))[:16], where endpoint is
 * `ip:port` (`[ip]:port` for IPv6), as upstream writes an endpoint.
 */
export function endpointChainName(servicePortName: string, protocol: string, endpoint: string): string {
  return nameWithHash('KUBE-SEP-', servicePortName + protocol.toLowerCase() + endpoint, 16);
}

/** The beginning of the marker chain a clean stop leaves in the filter table (see checkpoint.ts). */
export const CHECKPOINT_MARKER_PREFIX = 'KUBE-CKPT-';

/** The marker chain of the checkpoint with `token`: 26 characters, within iptables' 28. */
export const checkpointMarker = (token: string): string => `${CHECKPOINT_MARKER_PREFIX}${token}`;
