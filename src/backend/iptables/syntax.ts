// iptables rule text in the canonical form `iptables-save` prints back, so a rendered rule and
// the kernel's listing compare equal as strings, and `iptables-restore` input for a ruleset.
//
// iptables-save writes a rule's parts in a fixed order whatever order they were given in:
// source, destination, input interface, protocol, then the `-m` matches in the order given,
// then the target. Values are printed in their kernel form: addresses with a prefix length,
// marks as `--set-xmark`, statistic probabilities as the 31-bit fraction the kernel keeps.
import type { IPFamily } from '../../model/types.js';
import { bitLength, formatCIDR, formatIP, isCanonicalIPv4, parseCIDR, parseIP } from '../../net/ip.js';

export type IptTable = 'filter' | 'nat' | 'mangle';

/** rules: each rule's text after `-A <name> `, in the exact canonical form `iptables-save` prints it back. */
export interface IptChain {
  table: IptTable;
  name: string;
  rules: string[];
}

/** Base chains with their service items included, then the chains service ports own. */
export interface IptRuleset {
  family: IPFamily;
  chains: IptChain[];
}

/** The parts of one rule; each present part is already its canonical text (e.g. `! -s 10.0.0.0/8`). */
export interface RuleParts {
  src?: string;
  dst?: string;
  iface?: string;
  proto?: string;
  /** `-m` matches, in order, e.g. `-m comment --comment x`. */
  matches?: Array<string | undefined>;
  /** Target with its options, e.g. `KUBE-MARK-MASQ` or `DNAT --to-destination 10.1.0.1:80`. */
  jump?: string;
}

export function rule(p: RuleParts): string {
  const out: string[] = [];
  if (p.src) out.push(p.src);
  if (p.dst) out.push(p.dst);
  if (p.iface) out.push(p.iface);
  if (p.proto) out.push(`-p ${p.proto}`);
  for (const m of p.matches ?? []) if (m) out.push(m);
  if (p.jump) out.push(`-j ${p.jump}`);
  return out.join(' ');
}

// Characters iptables-save leaves unquoted; anything else makes it quote the whole string.
const BARE = /^[A-Za-z0-9_-]+$/;

/** A string argument as iptables-save prints it. */
export function quote(s: string): string {
  return BARE.test(s) ? s : `"${s.replace(/(["\\'])/g, '\\$1')}"`;
}

export function comment(text: string): string {
  return `-m comment --comment ${quote(text)}`;
}

/** Longest comment the kernel keeps (XT_MAX_COMMENT_LEN less the terminating NUL). */
export const MAX_COMMENT = 255;

const PARSE = { leadingZeros: true, v4Mapped: true } as const;
const TEXT = { dottedQuad: true } as const;

/** An address of the wanted family in inet_ntop form, or undefined. */
export function canonicalIP(s: string, family: IPFamily): string | undefined {
  if (isCanonicalIPv4(s)) return family === 'IPv4' ? s : undefined;
  const ip = parseIP(s.trim(), PARSE);
  return ip !== null && ip.family === family ? formatIP(ip, TEXT) : undefined;
}

/** A CIDR (or bare address) of the wanted family as iptables prints it: network/prefix. */
export function canonicalCIDR(s: string, family: IPFamily): string | undefined {
  const c = parseCIDR(s.trim(), { ...PARSE, bare: true });
  return c !== null && c.family === family ? formatCIDR(c, TEXT) : undefined;
}

/** A single address as a `-s`/`-d` value. */
export function hostCIDR(ip: string, family: IPFamily): string {
  return `${ip}/${bitLength(family)}`;
}

/** `ip:port`, `[ip]:port` for IPv6: upstream's endpoint text and the DNAT destination. */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * The probability of picking the first of n remaining endpoints, as upstream computes it
 * (1/n with ten decimals), printed as iptables-save prints the value the kernel stores: a
 * 31-bit fixed-point fraction, with eleven decimals (exact, ties to even, as printf).
 */
export function probability(n: number): string {
  const requested = Number((1 / n).toFixed(10));
  const scale = 0x80000000n;
  const stored = BigInt(Math.round(requested * 0x80000000));
  const digits = 10n ** 11n;
  let q = (stored * digits) / scale;
  const r2 = ((stored * digits) % scale) * 2n;
  if (r2 > scale || (r2 === scale && q % 2n === 1n)) q++;
  const whole = q / digits;
  return `${whole}.${(q % digits).toString().padStart(11, '0')}`;
}

export const TABLE_ORDER: IptTable[] = ['filter', 'nat', 'mangle'];

/**
 * iptables-restore --noflush input for a whole ruleset: per table, a `:NAME - [0:0]` line per
 * chain (which creates or flushes it), its rules, then for each stale chain a flush and `-X`,
 * after every rule that could have referred to it is rewritten.
 */
export function toRestoreInput(rs: IptRuleset, stale: Array<{ table: IptTable; name: string }> = []): string {
  return toRestorePieces(rs, stale, Infinity)[0] ?? '\n';
}

/**
 * The same in several inputs when it has more than `budget` rules: the first input of each table
 * declares its chains, the next ones append the rules in order, the last one deletes the stale
 * chains. Only for chains the kernel does not hold yet (between the inputs a chain holds the
 * rules of the inputs so far). iptables-nft takes time that grows with the square of one chain's
 * rules in one input: 44,000 rules of KUBE-SERVICES took 33.8 s as one, 3.2 s as nine of 5,000.
 */
export function toRestorePieces(rs: IptRuleset, stale: Array<{ table: IptTable; name: string }>, budget: number): string[] {
  const out: string[] = [];
  let piece: string[] = [];
  for (const table of TABLE_ORDER) {
    const chains = rs.chains.filter((c) => c.table === table);
    const live = new Set(chains.map((c) => c.name));
    const gone = [...new Set(stale.filter((c) => c.table === table && !live.has(c.name)).map((c) => c.name))];
    if (chains.length === 0 && gone.length === 0) continue;
    piece.push(`*${table}`);
    for (const c of chains) piece.push(`:${c.name} - [0:0]`);
    for (const name of gone) piece.push(`:${name} - [0:0]`);
    let rules = 0;
    for (const c of chains) {
      for (const r of c.rules) {
        if (rules === budget) {
          out.push([...piece, 'COMMIT', ''].join('\n'));
          piece = [`*${table}`];
          rules = 0;
        }
        piece.push(`-A ${c.name} ${r}`);
        rules++;
      }
    }
    for (const name of gone) piece.push(`-X ${name}`);
    piece.push('COMMIT');
  }
  if (piece.length > 0) out.push(piece.join('\n') + '\n');
  return out;
}
