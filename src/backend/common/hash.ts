// The hash behind upstream's chain names (iptables KUBE-SVC-…, nftables service-…): base32
// (RFC 4648 alphabet, no padding needed since callers take a prefix) of a SHA-256 digest.
import { createHash } from 'node:crypto';

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

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** base32(sha256(text)). */
export function sha256Base32(text: string): string {
  return base32(sha256(text));
}
