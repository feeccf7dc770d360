// The lines `xtables-monitor -e` prints for committed nftables changes: rule and chain changes in
// iptables syntax, table changes, and a generation line with the committing process. It prints
// nothing for set elements, and unlike `nft monitor` does no work in proportion to the ruleset.
import type { MonitorEvent } from './watch.js';

// `NEWGEN: GENID=37 PID=27954 NAME=iptables-nft-re`
const GENERATION = /^NEWGEN: GENID=(\d+) PID=(\d+)/;
// ` EVENT: -4 -t nat -A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:80`
export const RULE_EVENT = /^\s*EVENT: -([46]) -t (\S+) -([A-Z]) (\S+)(.*)$/;
// ` EVENT: nft: DEL table: table nat ip flags 0 use 3 handle 1`
export const TABLE_EVENT = /^\s*EVENT: nft: (NEW|DEL) table: table (\S+) (\S+)/;
const VERBS: Record<string, [verb: string, kind: string]> = {
  A: ['add', 'rule'],
  I: ['insert', 'rule'],
  R: ['replace', 'rule'],
  D: ['delete', 'rule'],
  N: ['add', 'chain'],
  X: ['delete', 'chain'],
  F: ['flush', 'chain'],
  P: ['policy', 'chain'],
};

/** A change line of `xtables-monitor -e` as an event, or undefined (generation lines, nft-only objects). */
export function parseXtablesEvent(line: string): MonitorEvent | undefined {
  const r = RULE_EVENT.exec(line);
  if (r) {
    const [verb, kind] = VERBS[r[3]!] ?? ['change', 'chain'];
    return { verb, kind, family: r[1] === '6' ? 'ip6' : 'ip', table: r[2]!, name: r[4], rest: r[5]! };
  }
  const t = TABLE_EVENT.exec(line);
  if (t) return { verb: t[1] === 'DEL' ? 'delete' : 'add', kind: 'table', family: t[3]!, table: t[2]!, name: undefined, rest: '' };
  return undefined;
}

/** The generation number and committing process's PID of a generation line, or undefined. */
export function generationLine(line: string): { gen: number; pid: number } | undefined {
  const g = GENERATION.exec(line);
  return g ? { gen: Number(g[1]), pid: Number(g[2]) } : undefined;
}

