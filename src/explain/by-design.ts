// Differences between modes that exist by design, as upstream: each is named by the mode
// behaviour that causes it, never by a service, so an operator switching modes still sees it
// (in its own section) while anything else stays an unexpected difference.

export type ClientKind = 'local pod' | 'other-node pod' | 'node' | 'external';

/** What one mode did with one packet, in the terms compared. */
export interface Outcome {
  verdict: string;
  /** `ip:port` sorted, `+masq` when masqueraded. */
  endpoints: string[];
}

export interface ModeOutcome {
  mode: string;
  outcome: Outcome | { error: string };
}

/** What the classification looks at for one service target from one client. */
export interface DifferenceFacts {
  client: ClientKind;
  /** The target is the service's cluster IP (else an external IP, LB IP or NodePort). */
  clusterIP: boolean;
  externalPolicyLocal: boolean;
  /** The service's local endpoints, as outcomes name them (`ip:port`). */
  localEndpoints: string[];
  outcomes: ModeOutcome[];
}

export const BY_DESIGN = {
  ipvsNodeMasquerade:
    'ipvs masquerades the node\'s own connections to a service address: the address sits on kube-ipvs0, so the kernel picks it as the source',
  ipvsLocalExternal:
    'ipvs serves a Local-policy external address from its local endpoints for every client (one virtual server per address); the other modes send clients inside the cluster to any endpoint',
} as const;

const IPVS = 'ipvs';

function text(o: Outcome | { error: string }): string {
  return 'error' in o ? `error ${o.error}` : `${o.verdict} ${o.endpoints.join(',')}`;
}

/** The one outcome all the given modes share, or undefined when they disagree or one cannot be traced. */
function shared(os: ModeOutcome[]): Outcome | undefined {
  const first = os[0]?.outcome;
  if (!first || 'error' in first || os.some((o) => text(o.outcome) !== text(first))) return undefined;
  return first;
}

const unmasq = (o: Outcome): string => `${o.verdict} ${o.endpoints.map((e) => e.replace(/\+masq$/, '')).join(',')}`;

/**
 * The reason a difference is by design, or undefined when it is unexpected. Only the ipvs
 * mode differs by design; the ipvs modes must agree among themselves, and so must the others.
 */
export function byDesignReason(f: DifferenceFacts): string | undefined {
  const ipvs = shared(f.outcomes.filter((o) => o.mode === IPVS));
  const others = shared(f.outcomes.filter((o) => o.mode !== IPVS));
  if (!ipvs || !others) return undefined;
  // (b) Inside the cluster, ipvs gives a Local external address its local endpoints only
  // (unmasqueraded, as for an outside client; dropped when there is none).
  if (f.externalPolicyLocal && !f.clusterIP && f.client !== 'external') {
    const local = [...f.localEndpoints].sort();
    const expected = local.length > 0 ? `ACCEPT ${local.join(',')}` : 'DROP ';
    if (text(ipvs) === expected) return BY_DESIGN.ipvsLocalExternal;
  }
  // (a) The node's own connection: same verdict and endpoints, masqueraded in ipvs only.
  if (f.client === 'node' && ipvs.endpoints.length > 0 && unmasq(ipvs) === unmasq(others)) {
    if (ipvs.endpoints.every((e) => e.endsWith('+masq')) && !others.endpoints.some((e) => e.endsWith('+masq'))) return BY_DESIGN.ipvsNodeMasquerade;
  }
  return undefined;
}
