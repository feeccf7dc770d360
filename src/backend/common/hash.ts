// The hash behind upstream's chain names (iptables KUBE-SVC-…, nftables service-…): base32
// (RFC 4648 alphabet, no padding needed since callers take a prefix) of a SHA-256 digest.
import { hash } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** The character codes of the first `chars` characters of base32(buf). */
function base32(buf: Uint8Array, chars: number): number[] {
  const out: number[] = [];
  let bits = 0;
  let val = 0;
  for (const b of buf) {
    val = ((val << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out.push(BASE32.charCodeAt((val >>> (bits - 5)) & 31));
      bits -= 5;
    }
    if (out.length === chars) return out;
  }
  if (bits > 0 && out.length < chars) out.push(BASE32.charCodeAt((val << (5 - bits)) & 31));
  return out;
}

export function sha256(text: string): Buffer {
  // One-shot: half the time of a hash object per name (110,000 chain names at 10,000 services).
  return hash('sha256', text, 'buffer');
}

/**
 * prefix + base32(sha256(text))[:chars], built as one flat string: names are kept for the life
 * of the ruleset, and a string built by `+` or `slice` keeps its pieces or its whole source.
 */
export function nameWithHash(prefix: string, text: string, chars: number): string {
  return namesWithHash([prefix], text, chars)[0]!;
}

/** nameWithHash for several prefixes over one text, hashed once. */
export function namesWithHash(prefixes: readonly string[], text: string, chars: number): string[] {
  const hashed = base32(sha256(text), chars);
  return prefixes.map((prefix) => {
    const codes: number[] = [];
    for (let i = 0; i < prefix.length; i++) codes.push(prefix.charCodeAt(i));
    return String.fromCharCode(...codes, ...hashed);
  });
}

/**
 * A text as a number: 52 bits of SHA-1, so that equal texts give equal numbers and different ones
 * collide with odds of 1 in 2^52 (a number, not a text: 110,000 texts took 5 MiB more).
 */
export function textDigest(text: string): number {
  return parseInt(hash('sha1', text, 'hex').slice(0, 13), 16);
}
