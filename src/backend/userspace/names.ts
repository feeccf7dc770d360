// The legacy userspace proxy's nat chains, as upstream named them (runbooks grep for them).
export const PORTALS_CONTAINER = 'KUBE-PORTALS-CONTAINER';
export const PORTALS_HOST = 'KUBE-PORTALS-HOST';
export const NODEPORT_CONTAINER = 'KUBE-NODEPORT-CONTAINER';
export const NODEPORT_HOST = 'KUBE-NODEPORT-HOST';
export const USERSPACE_CHAINS: readonly string[] = [PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST];

export function isUserspaceChain(chain: string): boolean {
  return USERSPACE_CHAINS.includes(chain);
}
