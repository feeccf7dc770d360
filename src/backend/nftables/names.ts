// Chain and set names for the per-service chains of ClientIP-affinity services. They follow
// upstream's nftables naming so runbooks that grep for them keep working.
import type { ServicePortInfo } from '../../model/types.js';
import { nameWithHash, sha256 } from '../common/hash.js';

/** `base32(sha256(base))[:8] + "-" + base`. */
export function hashedName(base: string): string {
  return nameWithHash('', base, 8) + '-' + base;
}

/** `ns/svc/proto/portname`, the base of every per-service chain name. */
export function servicePortBase(info: Pick<ServicePortInfo, 'namespace' | 'serviceName' | 'protocol' | 'portName'>): string {
  return `${info.namespace}/${info.serviceName}/${info.protocol.toLowerCase()}/${info.portName}`;
}

/**
 * `<service base>__<ip>/<port>`. nft identifiers cannot contain ':', so IPv6 colons become '.'
 * (the name stays unique: '.' never appears in an IPv6 address otherwise).
 */
export function endpointBase(serviceBase: string, ip: string, port: number): string {
  return `${serviceBase}__${ip.replace(/:/g, '.')}/${port}`;
}

/**
 * An endpoint's 32-bit tag in the affinity set: the first 32 bits of the SHA-256 whose base32
 * prefix names the endpoint's chain upstream. It names a service port and endpoint together, so
 * one set keyed by client and tag serves every service (upstream keeps a set per endpoint; with
 * thousands, nft re-reads every set's declaration at each command, docs/nftables-layout.md).
 */
export function affinityTag(endpointBaseName: string): number {
  return sha256(endpointBaseName).readUInt32BE(0);
}
