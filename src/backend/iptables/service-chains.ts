// The chains a service port owns by the hundred thousand (one KUBE-SEP- per endpoint, the
// KUBE-SVC-/KUBE-SVL- that balance over them), kept as what their rules are made of and
// rendered to text when written, compared or shown. As rule strings, the 110,000 chains of
// 10,000 services × 10 endpoints held ~27 MiB for the life of the ruleset.
import type { IPFamily } from '../../model/types.js';
import { flat } from '../common/fragment.js';
import { MARK_MASQ } from './base.js';
import { comment, hostCIDR, probability, rule, type IptChain, type IptTable } from './syntax.js';

/** What every endpoint chain of one service port (and the chains balancing over them) shares. */
export interface EndpointShape {
  family: IPFamily;
  proto: string;
  /** The service port's name (`ns/svc:port`), for comments. */
  name: string;
  /** Per-endpoint comments are left out (upstream's large-cluster mode). */
  bare: boolean;
  /** ClientIP affinity timeout in seconds, when set. */
  affinity: number | undefined;
}

const MASK = { IPv4: '255.255.255.255', IPv6: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' } as const;

function recent(shape: EndpointShape, chain: string, how: string): string {
  return `-m recent ${how} --name ${chain} --mask ${MASK[shape.family]} --rsource`;
}

/** KUBE-SEP-…: marks hairpin traffic for masquerade, then DNATs to the endpoint. */
export class EndpointChain implements IptChain {
  /** `ip:port` / `[ip]:port` with the address canonical: the DNAT destination. */
  readonly text: string;

  constructor(
    readonly name: string,
    text: string,
    readonly shape: EndpointShape,
  ) {
    this.text = flat(text);
  }

  /** The endpoint's address, from its text (one string less for each of 100,000 endpoints). */
  get ip(): string {
    const t = this.text;
    return t.startsWith('[') ? t.slice(1, t.lastIndexOf(']')) : t.slice(0, t.lastIndexOf(':'));
  }

  get table(): IptTable {
    return 'nat';
  }

  get rules(): string[] {
    const s = this.shape;
    const epc = s.bare ? undefined : comment(s.name);
    const setRecent = s.affinity !== undefined ? recent(s, this.name, '--set') : undefined;
    return [
      // Hairpin: an endpoint reaching itself through the service must see a different source.
      rule({ src: `-s ${hostCIDR(this.ip, s.family)}`, matches: [epc], jump: MARK_MASQ }),
      rule({ proto: s.proto, matches: [epc, setRecent, `-m ${s.proto}`], jump: `DNAT --to-destination ${this.text}` }),
    ];
  }
}

/**
 * KUBE-SVC-… / KUBE-SVL-…: `head` (the masquerade rule, when any), then with ClientIP affinity a
 * rule per endpoint that sends a recent client back to it, then the random pick, which
 * upstream writes as a chain of probabilities 1/n, 1/(n-1) … over the endpoints in order.
 */
export class BalancingChain implements IptChain {
  constructor(
    readonly name: string,
    private readonly head: readonly string[],
    private readonly endpoints: readonly EndpointChain[],
    private readonly shape: EndpointShape,
  ) {}

  get table(): IptTable {
    return 'nat';
  }

  get rules(): string[] {
    const s = this.shape;
    const eps = this.endpoints;
    const epComment = (e: EndpointChain): string | undefined => (s.bare ? undefined : comment(`${s.name} -> ${e.text}`));
    const rules = [...this.head];
    if (s.affinity !== undefined) {
      for (const e of eps) rules.push(rule({ matches: [epComment(e), recent(s, e.name, `--rcheck --seconds ${s.affinity} --reap`)], jump: e.name }));
    }
    eps.forEach((e, i) => {
      const left = eps.length - i;
      const stat = left > 1 ? `-m statistic --mode random --probability ${probability(left)}` : undefined;
      rules.push(rule({ matches: [epComment(e), stat], jump: e.name }));
    });
    return rules;
  }
}
