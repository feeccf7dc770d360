// Addresses as the renderer writes them: the text nft lists back (inet_ntop form, a
// full-length prefix as a plain address), so rendered state and the kernel's listing
// compare equal. Input comes from the model and the configuration; it is read as leniently
// as the configuration accepts it. Invalid input yields undefined so callers can skip it.
import {
  bitLength,
  cidrContains as contains,
  formatCIDR,
  formatIP,
  isCanonicalIPv4,
  parseCIDR,
  parseIP,
  type CIDROptions,
  type IPFamily,
} from '../../net/ip.js';

const READ: CIDROptions = { leadingZeros: true, v4Mapped: true, bare: true };
const NFT_TEXT = { dottedQuad: true };

function familyOk(family: IPFamily, v6: boolean): boolean {
  return (family === 'IPv6') === v6;
}

/** Canonical text of an IP of the wanted family, or undefined. */
export function canonicalIP(s: string, v6: boolean): string | undefined {
  if (isCanonicalIPv4(s)) return v6 ? undefined : s;
  const ip = parseIP(s.trim(), READ);
  return ip !== null && familyOk(ip.family, v6) ? formatIP(ip, NFT_TEXT) : undefined;
}

/**
 * Canonical CIDR text of the wanted family with host bits cleared; a full-length prefix is
 * written as a plain address, which is how nft lists it back.
 */
export function canonicalCIDR(s: string, v6: boolean): string | undefined {
  const c = parseCIDR(s.trim(), READ);
  if (c === null || !familyOk(c.family, v6)) return undefined;
  return c.prefix === bitLength(c.family) ? formatIP(c, NFT_TEXT) : formatCIDR(c, NFT_TEXT);
}

export function cidrContains(cidr: string, ip: string): boolean {
  const c = parseCIDR(cidr.trim(), READ);
  const p = parseIP(ip, READ);
  return c !== null && p !== null && contains(c, p);
}
