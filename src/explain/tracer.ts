// What every mode's packet tracer shares: the packet, branch and result shapes, the order in
// which netfilter runs its hooks, and the enumeration of random and unknown choices, so the
// nftables, iptables and IPVS tracers answer in the same terms.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface TracePacket {
  sourceIP: string;
  destIP: string;
  protocol: Protocol;
  destPort: number;
  from: 'pod' | 'host' | 'external';
  /** Input interface for pod / external packets (needed by interface-based local detection). */
  inInterface?: string;
  /** Initial packet mark; 0 when absent. */
  mark?: number;
}

export interface TraceNode {
  localIPs: string[];
}

export type TraceVerdict = 'ACCEPT' | 'DROP' | 'REJECT';

export type NetfilterHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** What walkHooks asks of a tracer about the packet as the hooks so far left it. */
export interface HookWalker {
  /** Runs one hook's chains. */
  hook(h: NetfilterHook): TraceVerdict;
  /** Whether the destination (after any DNAT so far) is one of the node's addresses. */
  destinationLocal(): boolean;
  /** The host's packet is routed (before OUTPUT, and again after it): to lo when `local`. */
  routed?(local: boolean): void;
  /** The host's packet to a local address comes back in on lo. */
  loopedBack(): void;
}

/**
 * A packet's way through the hooks as netfilter runs them, each after the one before accepted:
 * from the host OUTPUT and POSTROUTING, and a packet to a local address loops back through
 * PREROUTING and INPUT; from elsewhere PREROUTING, then INPUT or FORWARD (and POSTROUTING).
 * Routing looks at the destination as the hooks before it left it.
 */
export function walkHooks(fromHost: boolean, w: HookWalker): { verdict: TraceVerdict; routed: TraceBranch['routed'] } {
  let routed: TraceBranch['routed'];
  let verdict: TraceVerdict;
  if (fromHost) {
    w.routed?.(w.destinationLocal());
    verdict = w.hook('output');
    if (verdict === 'ACCEPT') {
      const local = w.destinationLocal();
      routed = local ? 'local' : 'forward';
      w.routed?.(local);
      verdict = w.hook('postrouting');
      if (verdict === 'ACCEPT' && local) {
        w.loopedBack();
        verdict = w.hook('prerouting');
        if (verdict === 'ACCEPT') verdict = w.hook('input');
      }
    }
  } else {
    verdict = w.hook('prerouting');
    if (verdict === 'ACCEPT') {
      routed = w.destinationLocal() ? 'local' : 'forward';
      verdict = w.hook(routed === 'local' ? 'input' : 'forward');
      if (verdict === 'ACCEPT' && routed === 'forward') verdict = w.hook('postrouting');
    }
  }
  return { verdict, routed };
}

export interface AffinityPin {
  set: string;
  key: string;
  timeout?: string;
}

/** One way the packet can go. `conditions` are the random or unknown choices that lead here. */
export interface TraceBranch {
  conditions: string[];
  verdict: TraceVerdict;
  /** The DNAT target, when the packet was translated. */
  endpoint?: { ip: string; port: number };
  /** Where routing sent the packet: this node ('local') or on ('forward'); absent when stopped before. */
  routed?: 'local' | 'forward';
  masquerade: boolean;
  path: string[];
  pins: AffinityPin[];
}

export interface TraceEndpoint {
  ip: string;
  port: number;
  masquerade: boolean;
  /** Affinity sets in which a connection to this endpoint records the client. */
  pins: AffinityPin[];
}

export interface TraceResult {
  /** ACCEPT if any branch is accepted, else REJECT if any rejects, else DROP. */
  verdict: TraceVerdict;
  /** Every endpoint an accepted branch reaches. */
  endpoints: TraceEndpoint[];
  /** True when any accepted branch is masqueraded (each endpoint says whether it is). */
  masquerade: boolean;
  /** Every "chain: rule" matched on any branch, merged in order. */
  path: string[];
  branches: TraceBranch[];
}

/** The ruleset cannot be interpreted (unknown statement, missing chain or set, ...). */
export class TraceError extends Error {}

const MAX_BRANCHES = 100_000;

/** Replays one run with a fixed sequence of choices; records how many options each point had. */
export class Chooser {
  readonly counts: number[] = [];
  private pos = 0;
  constructor(private readonly choices: number[]) {}
  choose(n: number): number {
    const c = this.choices[this.pos] ?? 0;
    this.counts[this.pos] = n;
    this.pos++;
    return c;
  }
  taken(): number[] {
    return this.counts.map((_, i) => this.choices[i] ?? 0);
  }
}

/** Merges branch paths into one sequence that keeps every branch's order where it can. */
function mergePaths(paths: string[][]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let last = -1;
    p.forEach((entry, i) => {
      const at = out.indexOf(entry, last + 1);
      if (at >= 0) {
        last = at;
        return;
      }
      // Place a new entry before the next entry of this branch already merged, else at the end.
      let before = out.length;
      for (const later of p.slice(i + 1)) {
        const j = out.indexOf(later, last + 1);
        if (j >= 0) { before = j; break; }
      }
      out.splice(before, 0, entry);
      last = before;
    });
  }
  return out;
}

/**
 * Runs a trace once per combination of choices (depth first) and merges the branches into one
 * result. Every interpreter (one per mode) enumerates its random and unknown choices here.
 */
export function traceBranches(runOnce: (chooser: Chooser) => TraceBranch): TraceResult {
  const branches: TraceBranch[] = [];
  let choices: number[] = [];
  for (;;) {
    const chooser = new Chooser(choices);
    branches.push(runOnce(chooser));
    if (branches.length > MAX_BRANCHES) throw new TraceError(`more than ${MAX_BRANCHES} branches`);
    // Next choice sequence in depth-first order.
    const taken = chooser.taken();
    let i = taken.length - 1;
    while (i >= 0 && taken[i]! + 1 >= chooser.counts[i]!) i--;
    if (i < 0) break;
    choices = [...taken.slice(0, i), taken[i]! + 1];
  }
  const accepted = branches.filter((b) => b.verdict === 'ACCEPT');
  const verdict: TraceVerdict = accepted.length > 0 ? 'ACCEPT' : branches.some((b) => b.verdict === 'REJECT') ? 'REJECT' : 'DROP';
  const endpoints = new Map<string, TraceEndpoint>();
  for (const b of accepted) {
    if (!b.endpoint) continue;
    const k = `${b.endpoint.ip}|${b.endpoint.port}`;
    let ep = endpoints.get(k);
    if (!ep) endpoints.set(k, (ep = { ...b.endpoint, masquerade: false, pins: [] }));
    ep.masquerade ||= b.masquerade;
    for (const p of b.pins) {
      if (!ep.pins.some((q) => q.set === p.set && q.key === p.key)) ep.pins.push(p);
    }
  }
  return {
    verdict,
    endpoints: [...endpoints.values()],
    masquerade: accepted.some((b) => b.masquerade),
    path: mergePaths(branches.map((b) => b.path)),
    branches,
  };
}
