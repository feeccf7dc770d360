// The two iptables flavours and their tool names. Pure: no process is run here.
import type { IPFamily } from '../../model/types.js';

/** `nft`: the iptables-nft tools (nf_tables kernel API); `legacy`: the x_tables ones. */
export type Flavour = 'nft' | 'legacy';

export const FLAVOURS: readonly Flavour[] = ['nft', 'legacy'];
export const FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];

export type ToolKind = 'restore' | 'save' | 'iptables';

/** e.g. ('IPv6', 'legacy', 'save') → `ip6tables-legacy-save`. */
export function toolFor(family: IPFamily, flavour: Flavour, kind: ToolKind): string {
  const base = `${family === 'IPv6' ? 'ip6tables' : 'iptables'}-${flavour}`;
  return kind === 'iptables' ? base : `${base}-${kind}`;
}

export function otherFlavour(flavour: Flavour): Flavour {
  return flavour === 'nft' ? 'legacy' : 'nft';
}
