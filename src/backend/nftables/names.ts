// Chain and set names for the per-service chains of ClientIP-affinity services. They follow
// upstream's nftables naming so runbooks that grep for them keep working.
import { createHash } from 'node:crypto';
import type { ServicePortInfo } from '../../model/types.js';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Uint8Array): string {
  let bits = 0;
  let val = 0;
  let out = '';
  for (const b of buf) {
    val = ((val << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(val >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(val << (5 - bits)) & 31];
  return out;
}

/** `base32(sha256(base))[:8] + "-" + base`. */
export function hashedName(base: string): string {
  return base32(createHash('sha256').update(base).digest()).slice(0, 8) + '-' + base;
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
